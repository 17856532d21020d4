"""The rate limit holds across a network: the workers reach the provider (and, in another run,
Redis and PostgreSQL) through tests/netdelay.py, 20 to 100 ms each way, jittered per packet, so
requests sent in one order may arrive in another; in a third, each worker and beat run on a host
of their own (a network namespace, tests/netns.py). The simulator's own log is the witness."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests import netns
from tests.conftest import unavailable
from tests.e2e import campaign_status, write_campaign, write_contacts
from tests.workers.deployment import deployment
from tests.workers.test_faults import check_exactly_once

pytestmark = pytest.mark.services

DELAY_MS = (20.0, 100.0)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("delayed", "contacts", "hosts"),
    # Every Redis and PostgreSQL round trip of the workers costs 40 to 200 ms there: fewer contacts.
    [
        (frozenset({"provider"}), 300, False),
        (frozenset({"redis", "postgres"}), 40, False),
        (frozenset({"provider"}), 300, True),
    ],
    ids=["provider", "redis-postgres", "provider-from-hosts-of-their-own"],
)
def test_no_second_at_the_provider_holds_more_than_the_limit_across_a_jittered_network(
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
    credentials: dict[str, dict[str, str]],
    delayed: frozenset[str],
    contacts: int,
    hosts: bool,
) -> None:
    if hosts and (reason := netns.unavailable()):
        unavailable(reason)
    # A request may take up to 100 ms (and the proxy's own few) to reach the provider: the gate
    # must hold each permit that long at least (README: DIALER_PACING_TRANSIT). The tests run two
    # at a time on two cores: a loaded box adds its own delay (once 21 requests in a second at 0.15).
    settings = {"DIALER_PACING_TRANSIT": "0.3"}
    # A request lost with its connection may have been received: its call is not placed again
    # but ends unknown once no result has come (13 minutes by default; here within the test).
    settings |= {"DIALER_SETTLE_AFTER": "20", "DIALER_GIVE_UP_AFTER": "40"}
    with deployment(
        tmp_path,
        provider="vonage",
        postgres_url=postgres_url,
        redis_url=redis_url,
        credentials=credentials,
        settings=settings,
        delay=DELAY_MS,
        delayed=delayed,
        hosts=hosts,
    ) as system:
        if hosts:  # each worker is on a network of its own, not this process's
            ours = os.readlink("/proc/self/ns/net")
            pids = [system.running[name].pid for name in ("w1", "w2", "beat")]
            spaces = {os.readlink(f"/proc/{pid}/ns/net") for pid in pids}
            assert len(spaces) == 3 and ours not in spaces
        system.dialer("campaign", "create", str(write_campaign(tmp_path)))
        system.dialer("import", str(write_contacts(tmp_path, contacts)), "--campaign", "e2e")
        system.dialer("campaign", "start", "e2e")
        deadline = time.monotonic() + 240
        while campaign_status(postgres_url) == "running":
            assert not system.dead(), system.dead()
            assert time.monotonic() < deadline, system.dialer("status", "e2e")
            time.sleep(1)
        figures = check_exactly_once(postgres_url, system.sim_url)
    assert figures["contacts"] == contacts
