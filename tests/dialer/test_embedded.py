"""The embedded mode end to end: SQLite, in-process workers, receiver and simulator on loopback."""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from campaigns.outcomes import CampaignStatus
from campaigns.spec import parse_campaign
from dialer import db
from dialer.embedded import BackgroundServer, Outage, loopback_socket, run_until
from dialer.errors import DatabaseGone
from dialer.export import contact_results, write_table
from dialer.importer import import_contacts
from dialer.models import utcnow
from dialer.operations import change_status, create_campaign, get_campaign
from dialer.receiver import create_app
from dialer.settings import Settings
from dialer.simulators import simulator_app
from tests.e2e import campaign_status, campaign_text, check_campaign, write_contacts

CONTACTS = 60
RATE = 10


@pytest.mark.timeout(120)
def test_a_campaign_runs_in_one_process(
    tmp_path: Path, sqlite_url: str, credentials: dict[str, dict[str, str]]
) -> None:
    sim_socket, web_socket = loopback_socket(), loopback_socket()
    sim_url, web_url = (f"http://127.0.0.1:{s.getsockname()[1]}" for s in (sim_socket, web_socket))
    settings = Settings(
        database_url=sqlite_url,
        public_url=web_url,
        tick_seconds=0.25,
        vonage={**credentials["vonage"], "base_url": sim_url, "rate_limit": RATE},
    )
    with db.session_scope(sqlite_url) as session:
        campaign = create_campaign(session, parse_campaign(campaign_text("vonage", 2)))
        import_contacts(session, campaign=campaign, path=write_contacts(tmp_path, CONTACTS), now=utcnow())
        change_status(session, name="e2e", action="start", now=utcnow())
    with (
        BackgroundServer(
            simulator_app("vonage", settings, rate_limit=RATE, time_scale=0.05), sock=sim_socket
        ),
        BackgroundServer(create_app(settings), sock=web_socket),
    ):
        run_until(settings, lambda: campaign_status(sqlite_url) != CampaignStatus.RUNNING)
        export = tmp_path / "results.csv"
        with db.session_scope(sqlite_url) as session:
            write_table(contact_results(session, get_campaign(session, "e2e")), export)
        check_campaign(sqlite_url, simulator_url=sim_url, export=export, queueing=3 * CONTACTS / RATE + 15)


def test_a_database_locked_for_a_while_is_waited_for_and_one_gone_too_long_is_given_up(
    tmp_path: Path,
) -> None:
    """SQLite locked by another writer past the busy timeout: the step is tried again with a growing
    wait until it goes through; locked past the outage limit, DatabaseGone says for how long."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    tries = []

    def step() -> int:
        tries.append(time.monotonic())
        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO t VALUES (1)"))
        return len(tries)

    threading.Timer(0.6, lambda: holder.execute("COMMIT")).start()
    assert Outage(5.0, first_wait=0.05).retrying(step) >= 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert gaps == sorted(gaps)  # each wait longer than the one before
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(
        DatabaseGone,
        match=r"not answered for \d+ s \(DIALER_DB_OUTAGE_LIMIT is 0.3\): database is locked",
    ):
        Outage(0.3, first_wait=0.05).retrying(step)
    holder.execute("COMMIT")
    engine.dispose()
