"""`dialer run NAME`: one campaign in one process, Ctrl-C pauses it, running it again resumes it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from rich.console import Console
from sqlmodel import col, select

from campaigns.outcomes import AttemptStatus
from campaigns.spec import Window
from dialer import db
from dialer.cli import main
from dialer.embedded import BackgroundServer, loopback_socket
from dialer.models import Attempt, Campaign, Contact
from dialer.runner import unreachable
from dialer.settings import Settings, get_settings
from dialer.simulators import simulator_app
from tests.e2e import campaign_status, check_campaign, write_campaign, write_contacts

CONTACTS = 40
RATE = 8


@pytest.fixture(params=["sqlite_url", pytest.param("postgres_url", marks=pytest.mark.services)])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(request.param))


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def prepared(url: str, tmp_path: Path, contacts: int = CONTACTS) -> dict[str, str]:
    env = {"DIALER_DATABASE_URL": url}
    assert run(env, "campaign", "create", str(write_campaign(tmp_path)))[0] == 0
    assert run(env, "import", str(write_contacts(tmp_path, contacts)), "--campaign", "e2e")[0] == 0
    return env


@pytest.mark.timeout(180)
def test_a_campaign_runs_to_its_end_against_the_simulator(url: str, tmp_path: Path) -> None:
    env = prepared(url, tmp_path, contacts=20)
    code, output = run(env, "run", "e2e", "--simulate", "--time-scale", "0.05")
    assert code == 0, output
    assert "simulating vonage on http://127.0.0.1:" in output
    assert output.rstrip().endswith("campaign e2e is completed")
    with db.session_scope(url) as session:
        states = session.execute(sa.select(Contact.state, sa.func.count()).group_by(Contact.state)).all()
    assert dict(states) == {"done": 20}  # type: ignore[arg-type]
    with db.session_scope(url) as session:  # each call says it went to a simulator (plan skips it)
        assert set(session.scalars(sa.select(Attempt.simulated))) == {True}
    assert run(env, "run", "e2e", "--simulate") == (
        1,
        "Error: campaign 'e2e' is completed: nothing left to call"
        " (`dialer export e2e --out results.csv` writes its results)\n",
    )


def test_a_real_provider_that_cannot_reach_the_receiver_is_refused_before_any_call(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = prepared(sqlite_url, tmp_path) | {"DIALER_PUBLIC_URL": "http://192.168.1.20:8000"}
    get_settings.cache_clear()  # read once per process, as a new command would
    code, output = run(env, "run", "e2e", "--port", "0")
    assert code == 1
    assert output.startswith(
        "Error: DIALER_PUBLIC_URL is http://192.168.1.20:8000, which vonage at https://api.nexmo.com"
        " cannot reach, so no call's outcome would arrive"
    )
    assert campaign_status(sqlite_url) == "draft"


@pytest.mark.parametrize(
    ("public_url", "provider_url", "refused"),
    [
        ("http://127.0.0.1:8000", "https://api.nexmo.com", True),
        ("http://localhost:8000", "https://api.nexmo.com", True),
        ("http://10.0.0.5/hooks", "https://api.cm.com", True),
        ("http://receiver:8000", "https://api.cm.com", True),  # a container's name
        ("https://dialer.example.com", "https://api.nexmo.com", False),
        ("http://127.0.0.1:8000", "http://127.0.0.1:9000", False),  # a simulator on this machine
    ],
)
def test_which_callback_urls_a_provider_cannot_reach(
    public_url: str, provider_url: str, refused: bool
) -> None:
    assert unreachable(public_url, provider_url) is refused


@pytest.mark.timeout(300)
def test_ctrl_c_pauses_with_no_call_after_it_returns_and_a_second_run_places_none_twice(
    url: str, tmp_path: Path, credentials: dict[str, dict[str, str]]
) -> None:
    """The provider is a simulator this test runs (so its log outlives both runs); `dialer run`
    is a separate process, interrupted with SIGINT as a terminal's Ctrl-C would (on SQLite), or
    SIGTERM as systemd and docker stop it (on PostgreSQL). While it runs, another run is refused."""
    interrupt = signal.SIGTERM if url.startswith("postgresql") else signal.SIGINT
    prepared(url, tmp_path)
    with BackgroundServer(
        simulator_app("vonage", Settings(vonage=credentials["vonage"]), rate_limit=RATE, time_scale=0.05)
    ) as simulator:
        env = {
            **os.environ,
            "DIALER_DATABASE_URL": url,
            "DIALER_PUBLIC_URL": "http://127.0.0.1:{port}",
            "DIALER_TICK_SECONDS": "0.25",
            "DIALER_SWEEP_SECONDS": "2",
            "DIALER_VONAGE__BASE_URL": simulator.url,
            "DIALER_VONAGE__RATE_LIMIT": str(RATE),
            **{f"DIALER_VONAGE__{key.upper()}": value for key, value in credentials["vonage"].items()},
        }

        def dialer_run() -> subprocess.Popen[str]:
            with loopback_socket() as free:  # a free port, released for the command to take
                port = free.getsockname()[1]
            env["DIALER_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
            return subprocess.Popen(
                [sys.executable, "-m", "dialer", "run", "e2e", "--port", str(port)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

        def placed() -> int:
            return int(httpx.get(f"{simulator.url}/_simulator/count", timeout=5).json()["placements"])

        first = dialer_run()
        deadline = time.monotonic() + 60
        while placed() < 12:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0]
            time.sleep(0.05)
        refused, _ = dialer_run().communicate(timeout=60)  # one dialer per campaign
        assert refused.startswith(
            "Error: campaign 'e2e': vonage's account is being dialled by dialer run on "
        )
        assert f"(pid {first.pid}) since " in refused
        first.send_signal(interrupt)
        output, _ = first.communicate(timeout=120)
        returned = time.time()
        assert first.returncode == 0, output
        assert re.search(
            r"campaign e2e is paused: `dialer run e2e --port \d+` resumes it", output
        )  # as given
        assert campaign_status(url) == "paused"
        with db.session_scope(url) as session:
            open_attempts = session.scalar(
                sa.select(sa.func.count())
                .select_from(Attempt)
                .where(col(Attempt.status).in_([AttemptStatus.QUEUED, AttemptStatus.DISPATCHING]))
            )
            attempts_then = session.scalar(sa.select(sa.func.count()).select_from(Attempt))
        assert open_attempts == 0
        log = httpx.get(f"{simulator.url}/_simulator/log", timeout=5).json()
        assert 12 <= len(log["placements"]) < CONTACTS * 3
        assert max(p["at"] for p in log["placements"]) < returned
        time.sleep(1.0)
        assert placed() == len(log["placements"]) == attempts_then  # nothing placed since

        second = dialer_run()
        output, _ = second.communicate(timeout=240)
        assert second.returncode == 0, output
        assert output.rstrip().endswith("campaign e2e is completed")
        export = tmp_path / "results.csv"
        assert run({"DIALER_DATABASE_URL": url}, "export", "e2e", "--out", str(export))[0] == 0
        # Each attempt placed exactly once across both runs, retries as the policy says (the
        # pause between the runs counts as queueing), every contact finished.
        check_campaign(url, simulator_url=simulator.url, export=export, queueing=120)
        with db.session_scope(url) as session:  # calls to a provider's address: real, as far as it knows
            assert set(session.scalars(sa.select(Attempt.simulated))) == {False}
    with db.session_scope(url) as session:
        assert session.exec(select(Contact).where(col(Contact.state) != "done")).first() is None


def test_a_campaign_only_simulated_so_far_asks_before_its_first_real_call(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = prepared(sqlite_url, tmp_path) | {"DIALER_PUBLIC_URL": "https://dialer.example.com"}
    with db.session_scope(sqlite_url) as session:
        session.exec(select(Campaign).where(col(Campaign.name) == "e2e")).one().simulated = True
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["run", "e2e", "--port", "0"], env=env, input="n\n")
    get_settings.cache_clear()
    assert result.exit_code == 1
    assert (
        "campaign e2e has only been simulated so far: place real calls through vonage? [y/N]" in result.output
    )
    assert result.output.rstrip().endswith("Error: campaign 'e2e': not started (it stays as it was)")
    assert campaign_status(sqlite_url) == "draft"


@pytest.mark.timeout(120)
def test_a_message_is_left_on_a_machine_once(sqlite_url: str, tmp_path: Path) -> None:
    """on_machine = "leave_message": the machine gets the message after its beep, the attempt says
    so, and the callee is not called again (retry_on with machine is refused at create)."""
    env = {"DIALER_DATABASE_URL": sqlite_url}
    path = write_campaign(tmp_path)
    path.write_text(path.read_text() + '\n[call]\non_machine = "leave_message"\n')
    assert run(env, "campaign", "create", str(path))[0] == 0
    assert run(env, "import", str(write_contacts(tmp_path, 10)), "--campaign", "e2e")[0] == 0
    code, output = run(env, "run", "e2e", "--simulate", "--time-scale", "0.05")
    assert code == 0, output
    with db.session_scope(sqlite_url) as session:
        left = session.execute(
            sa.select(Contact.phone, Attempt.status, Attempt.message_left).join(
                Contact, col(Contact.id) == col(Attempt.contact_id)
            )
        ).all()
    assert [(phone[-1], status) for phone, status, message_left in left if message_left] == [("5", "machine")]
    assert sum(phone.endswith("5") for phone, _, _ in left) == 1
    for rows in ([], ["--attempts"]):  # the export says where a message was left
        out = tmp_path / f"results{len(rows)}.csv"
        assert run(env, "export", "e2e", "--out", str(out), *rows)[0] == 0
        exported = pd.read_csv(out, dtype=str)
        assert exported.loc[exported["message_left"] == "true", "phone"].str[-1].tolist() == ["5"]
        assert set(exported["message_left"]) == {"true", "false"}


@pytest.mark.timeout(120)
def test_a_simulation_says_who_waits_for_a_window_and_may_ignore_it(sqlite_url: str, tmp_path: Path) -> None:
    """A window closed now: the live table counts the contacts it holds and says when it opens;
    --ignore-window (a simulation only) calls them at once."""
    from dialer.cli import progress_table
    from dialer.operations import change_status, progress

    env = {"DIALER_DATABASE_URL": sqlite_url}
    path = write_campaign(tmp_path)
    now = datetime.now(UTC)
    closed_day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(now.weekday() + 3) % 7]
    text = path.read_text().replace(
        'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]', f'days = ["{closed_day}"]'
    )
    path.write_text(text.replace('start = "00:00"', 'start = "00:00"\ntimezone = "UTC"'))
    assert run(env, "campaign", "create", str(path))[0] == 0
    assert run(env, "import", str(write_contacts(tmp_path, 10)), "--campaign", "e2e")[0] == 0
    with db.session_scope(sqlite_url) as session:
        change_status(session, name="e2e", action="start", now=now)
        report = progress(session, "e2e")
        always = progress(session, "e2e", window=Window.always())
        change_status(session, name="e2e", action="pause", now=now)
    opens = (now + timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert (report.waiting_for_window, report.window_opens) == (10, opens)
    assert always.waiting_for_window == 0
    shown = Console(width=200, record=True)
    shown.print(progress_table(report))
    rows = [" ".join(line.replace("│", " ").split()) for line in shown.export_text().splitlines()]
    assert f"waiting for their window 10; the first window opens {opens:%Y-%m-%d %H:%M} UTC" in rows

    code, output = run(env, "run", "e2e", "--ignore-window")
    assert (code, output.strip()) == (
        1,
        "Error: --ignore-window is for a simulation only: real calls keep the campaign's window",
    )
    code, output = run(env, "run", "e2e", "--simulate", "--ignore-window", "--time-scale", "0.05")
    assert code == 0, output
    assert "the calling window is ignored" in output
    assert output.rstrip().endswith("campaign e2e is completed")
