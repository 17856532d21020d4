"""A campaign switches provider between launches without touching its contacts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import col, select

from campaigns.outcomes import CampaignStatus
from campaigns.spec import parse_campaign
from dialer import db
from dialer.embedded import BackgroundServer, loopback_socket, run_until
from dialer.importer import import_contacts
from dialer.models import Attempt, Contact, utcnow
from dialer.operations import change_status, create_campaign, progress, set_provider
from dialer.receiver import create_app
from dialer.settings import Settings
from dialer.simulators import simulator_app
from tests.e2e import campaign_status, campaign_text, write_contacts


@pytest.mark.timeout(120)
def test_pause_switch_and_resume_on_another_provider(
    tmp_path: Path, sqlite_url: str, credentials: dict[str, dict[str, str]]
) -> None:
    sockets = {name: loopback_socket() for name in ("vonage", "cm", "receiver")}
    urls = {name: f"http://127.0.0.1:{sock.getsockname()[1]}" for name, sock in sockets.items()}
    settings = Settings(
        database_url=sqlite_url,
        public_url=urls["receiver"],
        tick_seconds=0.25,
        vonage={**credentials["vonage"], "base_url": urls["vonage"], "rate_limit": 5},
        cm={**credentials["cm"], "base_url": urls["cm"], "rate_limit": 5},
    )
    with db.session_scope(sqlite_url) as session:
        campaign = create_campaign(session, parse_campaign(campaign_text("vonage", 1)))
        import_contacts(session, campaign=campaign, path=write_contacts(tmp_path, 30), now=utcnow())
        change_status(session, name="e2e", action="start", now=utcnow())

    def done_contacts() -> int:
        with db.session_scope(sqlite_url) as session:
            return progress(session, "e2e").done

    with (
        BackgroundServer(simulator_app("vonage", settings, time_scale=0.05), sock=sockets["vonage"]),
        BackgroundServer(simulator_app("cm", settings, time_scale=0.05), sock=sockets["cm"]),
        BackgroundServer(create_app(settings), sock=sockets["receiver"]),
    ):
        run_until(settings, lambda: done_contacts() >= 8)
        with db.session_scope(sqlite_url) as session:
            change_status(session, name="e2e", action="pause", now=utcnow())
        # Let the calls in progress finish on Vonage, as they would after a real pause.
        run_until(settings, lambda: progress_live(sqlite_url) == 0)
        with db.session_scope(sqlite_url) as session:
            set_provider(session, name="e2e", provider="cm")
            change_status(session, name="e2e", action="resume", now=utcnow())
        run_until(settings, lambda: campaign_status(sqlite_url) != CampaignStatus.RUNNING)

    with db.session_scope(sqlite_url) as session:
        contacts = session.exec(select(Contact)).all()
        attempts = session.exec(select(Attempt).order_by(col(Attempt.contact_id), col(Attempt.number))).all()
    assert campaign_status(sqlite_url) == CampaignStatus.COMPLETED
    assert len(contacts) == 30 and all(c.state == "done" for c in contacts)
    providers = Counter(a.provider for a in attempts)
    assert providers["vonage"] >= 8 and providers["cm"] >= 1
    for contact in contacts:  # numbering runs on across the switch, one live attempt at a time
        numbers = [a.number for a in attempts if a.contact_id == contact.id]
        assert numbers == list(range(1, contact.attempts + 1))


def progress_live(url: str) -> int:
    with db.session_scope(url) as session:
        return progress(session, "e2e").live_calls
