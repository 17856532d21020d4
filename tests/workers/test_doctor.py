"""`dialer doctor` and `campaign start`'s warning, against the system as deployed and broken on purpose."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dialer.cli import main
from dialer.settings import get_settings
from tests.e2e import write_campaign, write_contacts
from tests.workers.deployment import deployment, free_port

pytestmark = pytest.mark.services


def doctor(env: dict[str, str | None]) -> tuple[int, dict[str, tuple[str, str]]]:
    """Exit code, and each check's state and detail by name."""
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["doctor"], env=env)
    lines = {}
    for line in result.output.splitlines():
        state, name, detail = line[:4].strip(), line[6:16].strip(), line[18:]
        lines[name] = (state, detail)
    return result.exit_code, lines


@pytest.mark.timeout(180)
def test_doctor_passes_on_a_running_deployment_and_names_each_part_that_fails(
    tmp_path: Path, postgres_url: str, redis_url: str, credentials: dict[str, dict[str, str]]
) -> None:
    with deployment(
        tmp_path,
        provider="vonage",
        postgres_url=postgres_url,
        redis_url=redis_url,
        credentials={"vonage": credentials["vonage"]},  # the only provider configured
        workers=1,
    ) as system:
        env: dict[str, str | None] = dict(system.env)
        deadline = time.monotonic() + 30
        while (found := doctor(env))[0] != 0:  # beat sends its first pump within a tick or two
            assert time.monotonic() < deadline, found
            time.sleep(0.5)
        _, lines = found
        assert list(lines) == [
            "mode",
            "database",
            "redis",
            "clock",
            "workers",
            "beat",
            "public URL",
            "receiver",
            "vonage",
        ]
        assert all(state == "ok" for state, _ in lines.values()), lines
        assert lines["workers"][1].startswith("1 answer: w1@")
        assert lines["vonage"][1] == f"credentials accepted: GET {system.sim_url}/v1/calls"

        # Another application's key: the simulator refuses its tokens, as Vonage would.
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        stranger = tmp_path / "stranger.pem"
        stranger.write_bytes(
            other.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        code, lines = doctor(env | {"DIALER_VONAGE__PRIVATE_KEY": str(stranger)})
        assert code == 1
        assert lines["vonage"][0] == "FAIL" and lines["vonage"][1].startswith(
            "credentials refused: Vonage answered 401"
        )

        # A database never migrated, a Redis that is not there.
        code, lines = doctor(env | {"DIALER_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}"})
        assert code == 1 and lines["database"][0] == "FAIL"
        assert lines["database"][1].endswith("no such file yet: run `dialer db upgrade`")
        assert not (tmp_path / "new.db").exists()
        code, lines = doctor(env | {"DIALER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
        assert code == 1 and lines["redis"][0] == "FAIL" and "clock" not in lines

        # A callback URL no provider could use.
        code, lines = doctor(env | {"DIALER_PUBLIC_URL": "http://127.0.0.1:8000/webhooks?x=1"})
        assert code == 1 and lines["public URL"][0] == "FAIL" and "no query" in lines["public URL"][1]

        # Without beat, a started campaign is not taken: `campaign start` says so, and what to run.
        system.dialer("campaign", "create", str(write_campaign(tmp_path)))
        system.dialer("import", str(write_contacts(tmp_path, 5)), "--campaign", "e2e")
        system.kill("beat")
        time.sleep(4)  # the last pump mark grows older than two ticks and two seconds
        output = system.dialer("campaign", "start", "e2e", "--wait", "2")
        assert output.splitlines() == [
            "campaign e2e is running",
            "warning: 1 worker(s) answer but no scheduler has sent them work in 2 s, so nothing is being"
            " called. Start each of these as its own process:",
            "  celery -A workers beat",
            "or pause it (`dialer campaign pause e2e`) and run it in one process: `dialer run e2e`",
        ]
        code, lines = doctor(env)
        assert code == 1 and lines["beat"][0] == "FAIL" and lines["workers"][0] == "ok"
        assert "start exactly one `celery -A workers beat`" in lines["beat"][1]
