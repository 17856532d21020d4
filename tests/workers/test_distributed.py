"""The whole system as deployed: Celery workers and beat as processes, Redis, PostgreSQL, the
receiver and the simulator on loopback, for each of the five providers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dialer.providers import PROVIDERS
from tests.e2e import campaign_status, check_campaign, write_campaign, write_contacts
from tests.workers.deployment import RATE, deployment

pytestmark = pytest.mark.services

CONTACTS = 200


@pytest.mark.timeout(240)
@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_campaign_runs_on_celery_workers_redis_and_postgresql(
    tmp_path: Path, postgres_url: str, redis_url: str, credentials: dict[str, dict[str, str]], provider: str
) -> None:
    with deployment(
        tmp_path, provider=provider, postgres_url=postgres_url, redis_url=redis_url, credentials=credentials
    ) as system:
        system.dialer("campaign", "create", str(write_campaign(tmp_path, provider=provider)))
        assert "imported 200" in system.dialer(
            "import", str(write_contacts(tmp_path, CONTACTS)), "--campaign", "e2e"
        )
        assert system.dialer("campaign", "start", "e2e") == "campaign e2e is running\n"  # workers took it
        deadline = time.monotonic() + 150
        while campaign_status(postgres_url) == "running":
            assert not system.dead(), system.dead()
            assert time.monotonic() < deadline, system.dialer("status", "e2e")
            time.sleep(1)
        export = tmp_path / "results.csv"
        system.dialer("export", "e2e", "--out", str(export))
        check_campaign(
            postgres_url,
            provider=provider,
            simulator_url=system.sim_url,
            export=export,
            queueing=3 * CONTACTS / RATE + 15,
        )
