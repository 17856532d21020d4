"""The embedded mode end to end: SQLite, in-process workers, receiver and simulator on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaigns.outcomes import CampaignStatus
from campaigns.spec import parse_campaign
from dialer import db
from dialer.embedded import BackgroundServer, loopback_socket, run_until
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
