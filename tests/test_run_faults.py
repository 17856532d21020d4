"""`dialer run` left alone: killed in the middle of a campaign, or with a database that drops its
connections, refuses new ones for a while, or goes away for good. Real processes, real signals,
real PostgreSQL; the provider's simulator runs in this test, so its log outlives every run, and
says from the provider's side who was called after answering."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from dialer import db, lease
from dialer.cli import main
from dialer.embedded import BackgroundServer, loopback_socket
from dialer.models import Campaign, utcnow
from dialer.settings import Settings, environment
from dialer.simulators import simulator_app, simulator_urls
from tests.conftest import POSTGRES_URL
from tests.e2e import campaign_status, write_campaign, write_contacts

pytestmark = pytest.mark.services

CONTACTS = 40
RATE = 8
RUN_NAME = "dialer_run"
"""The application name of the run's connections, so that only they are cut."""


@contextmanager
def provider(
    provider: str, url: str, credentials: dict[str, dict[str, str]], **settings: str
) -> Iterator[Any]:
    """The provider's simulator, and a `dialer run e2e` maker pointed at it (with ``settings``)."""
    app = simulator_app(
        provider, Settings(**{provider: credentials[provider]}), rate_limit=RATE, time_scale=0.05
    )
    with BackgroundServer(app) as simulator:
        account = credentials[provider] | simulator_urls(provider, simulator.url) | {"rate_limit": RATE}
        env = os.environ | environment({provider: account}) | settings
        env |= {"DIALER_DATABASE_URL": f"{url}?application_name={RUN_NAME}"}
        env |= {"DIALER_TICK_SECONDS": "0.25", "DIALER_SWEEP_SECONDS": "1", "DIALER_SETTLE_AFTER": "2"}

        with loopback_socket() as free:  # a free port, released for the commands to take
            port = free.getsockname()[1]

        def dialer_run(elsewhere: int | None = None) -> subprocess.Popen[str]:
            """`dialer run e2e`, its receiver on the same port each time, as under a service manager
            (or on port ``elsewhere``, for a second run beside the first)."""
            at = elsewhere or port
            return subprocess.Popen(
                [sys.executable, "-m", "dialer", "run", "e2e", "--port", str(at)],
                env=env | {"DIALER_PUBLIC_URL": f"http://127.0.0.1:{at}"},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

        simulator.run = dialer_run  # type: ignore[attr-defined]
        yield simulator


def prepare(url: str, tmp_path: Path, provider: str) -> None:
    env = {"DIALER_DATABASE_URL": url}
    invoke = CliRunner().invoke
    assert (
        invoke(
            main, ["campaign", "create", str(write_campaign(tmp_path, provider=provider))], env=env
        ).exit_code
        == 0
    )
    contacts = str(write_contacts(tmp_path, CONTACTS))
    assert invoke(main, ["import", contacts, "--campaign", "e2e"], env=env).exit_code == 0


def sim_log(simulator: Any) -> dict[str, Any]:
    return dict(httpx.get(f"{simulator.url}/_simulator/log", timeout=5).json())


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.05)


def called_after_answering(log: dict[str, Any]) -> list[str]:
    """The numbers the provider was asked to call again after someone (or a machine) answered."""
    answered: set[str] = set()
    again = []
    for placement in sorted(log["placements"], key=lambda p: p["at"]):
        if placement["to"] in answered:
            again.append(placement["to"])
        if placement["behaviour"] in ("answered", "machine"):
            answered.add(placement["to"])
    return again


def outcomes(url: str) -> dict[str, int]:
    with db.session_scope(url) as session:
        rows = session.execute(sa.text("SELECT status, count(*) FROM attempt GROUP BY status")).all()
    return {status: count for status, count in rows}


@pytest.mark.timeout(240)
def test_a_run_killed_mid_campaign_calls_nobody_who_answered_again(
    postgres_url: str, tmp_path: Path, credentials: dict[str, dict[str, str]]
) -> None:
    """CM.com has no status look-up: the calls whose callbacks were lost while no receiver ran
    end `unknown` (in seconds at this time scale; 13 minutes in real time), and are not retried."""
    prepare(postgres_url, tmp_path, "cm")
    with provider("cm", postgres_url, credentials, DIALER_GIVE_UP_AFTER="6") as simulator:
        first = simulator.run()
        wait_for(lambda: len(sim_log(simulator)["placements"]) >= 15 or first.poll() is not None, 60, "calls")
        first.send_signal(signal.SIGKILL)
        first.communicate()  # and its pipe closed
        # The calls it left go on at the provider, and their callbacks find nobody to take them.
        wait_for(lambda: sim_log(simulator)["calls_in_progress"] == 0, 60, "the calls in progress to end")
        assert sim_log(simulator)["callbacks_failed"] > 0
        status = CliRunner().invoke(main, ["status", "e2e"], env={"DIALER_DATABASE_URL": postgres_url})
        assert "marked running, but no process has run it since" in " ".join(status.output.split())

        second = simulator.run()  # at once: the lease of a process of this host that died has lapsed
        output, _ = second.communicate(timeout=180)
        assert second.returncode == 0, output
        assert output.rstrip().endswith("campaign e2e is completed")
        log = sim_log(simulator)
    assert called_after_answering(log) == []
    unknown = outcomes(postgres_url).get("unknown", 0)
    assert unknown > 0
    export = tmp_path / "results.csv"
    result = CliRunner().invoke(
        main, ["export", "e2e", "--out", str(export)], env={"DIALER_DATABASE_URL": postgres_url}
    )
    assert result.exit_code == 0, result.output
    with export.open(encoding="utf-8-sig", newline="") as file:
        results = [row["result"] for row in csv.DictReader(file)]
    assert results.count("unknown") == unknown  # none retried


@contextmanager
def admin() -> Iterator[sa.Connection]:
    engine = sa.create_engine(db.get_engine(POSTGRES_URL).url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def cut(connection: sa.Connection) -> int:
    """Terminate every connection of the run; how many there were."""
    return len(
        connection.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": RUN_NAME},
        ).all()
    )


def allow(connection: sa.Connection, url: str, allowed: bool) -> None:
    name = sa.make_url(url).database
    connection.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))


@pytest.mark.timeout(240)
def test_a_run_rides_out_a_database_that_drops_and_refuses_connections(
    postgres_url: str, tmp_path: Path, credentials: dict[str, dict[str, str]]
) -> None:
    prepare(postgres_url, tmp_path, "vonage")
    terminated = 0
    stop = threading.Event()
    with provider("vonage", postgres_url, credentials) as simulator, admin() as connection:
        run = simulator.run()
        wait_for(lambda: len(sim_log(simulator)["placements"]) >= 5, 60, "the first calls")

        def cutting() -> None:
            nonlocal terminated
            while not stop.wait(0.5):  # every connection of the run, every half second
                terminated += cut(connection)

        cutter = threading.Thread(target=cutting)
        cutter.start()
        try:
            time.sleep(3)
            allow(connection, postgres_url, False)  # and no new one for 4 s
            time.sleep(4)
            allow(connection, postgres_url, True)
        finally:
            stop.set()
            cutter.join()
            allow(connection, postgres_url, True)
        output, _ = run.communicate(timeout=180)
        log = sim_log(simulator)
    assert run.returncode == 0, output
    assert output.rstrip().endswith("campaign e2e is completed")
    assert terminated > 10
    assert called_after_answering(log) == []
    call_ids = [p["call_id"] for p in log["placements"]]
    assert len(call_ids) == len(set(call_ids))


@pytest.mark.timeout(240)
def test_a_run_stops_calling_and_leaves_when_the_database_is_gone_too_long(
    postgres_url: str, tmp_path: Path, credentials: dict[str, dict[str, str]]
) -> None:
    prepare(postgres_url, tmp_path, "vonage")
    with (
        provider("vonage", postgres_url, credentials, DIALER_DB_OUTAGE_LIMIT="3") as simulator,
        admin() as connection,
    ):
        first = simulator.run()
        wait_for(lambda: len(sim_log(simulator)["placements"]) >= 10, 60, "the first calls")
        allow(connection, postgres_url, False)
        cut(connection)
        gone = time.time()
        try:
            output, _ = first.communicate(timeout=60)
        finally:
            allow(connection, postgres_url, True)
        assert first.returncode == 1, output
        assert "Error: the database has not answered for " in output
        assert (
            "No call has been placed since it stopped answering; the campaign stays marked running" in output
        )
        assert "`dialer run e2e --port " in output
        log = sim_log(simulator)
        assert max(p["at"] for p in log["placements"]) < gone + 0.5  # at most a request on its way
        assert campaign_status(postgres_url) == "running"

        second = simulator.run()
        output, _ = second.communicate(timeout=180)
        assert second.returncode == 0, output
        assert output.rstrip().endswith("campaign e2e is completed")
        log = sim_log(simulator)
    assert called_after_answering(log) == []
    assert "unconfirmed" not in outcomes(postgres_url)


def lease_lapsed(url: str) -> bool:
    with db.session_scope(url) as session:
        seen = session.execute(sa.select(Campaign.runner_seen)).scalar_one()  # type: ignore[call-overload]
    return seen is not None and seen < utcnow() - timedelta(seconds=lease.LEASE_SECONDS)


@pytest.mark.timeout(240)
def test_a_run_stalled_past_its_lease_places_no_call_once_another_took_over(
    postgres_url: str, tmp_path: Path, credentials: dict[str, dict[str, str]]
) -> None:
    """A run stopped (SIGSTOP) until its lease lapses, a second run taking the campaign over, and
    the first woken while the second dials: the first leaves, naming the second, and the
    provider never sees the account's limit passed (both dialing would have doubled it)."""
    prepare(postgres_url, tmp_path, "vonage")
    with provider("vonage", postgres_url, credentials) as simulator:
        first = simulator.run()
        wait_for(lambda: len(sim_log(simulator)["placements"]) >= 8, 60, "the first calls")
        first.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: lease_lapsed(postgres_url), 30, "the stopped run's lease to lapse")
            with loopback_socket() as free:
                second = simulator.run(free.getsockname()[1])
            placed = len(sim_log(simulator)["placements"])
            wait_for(
                lambda: len(sim_log(simulator)["placements"]) >= placed + 3, 60, "the second run's calls"
            )
        finally:
            first.send_signal(signal.SIGCONT)
        output, _ = first.communicate(timeout=60)
        assert first.returncode == 1, output
        assert "this run stopped: its lease went 15 s unrenewed" in " ".join(output.split())
        assert f"dialer run on {socket.gethostname()} (pid {second.pid}) took it over at " in output
        output, _ = second.communicate(timeout=180)
        assert second.returncode == 0, output
        assert output.rstrip().endswith("campaign e2e is completed")
        log = sim_log(simulator)
    assert log["busiest_second"] <= RATE, log["busiest_second"]
    assert called_after_answering(log) == []
    call_ids = [p["call_id"] for p in log["placements"]]
    assert len(call_ids) == len(set(call_ids))
