"""A campaign's schedule: nothing called before its start; past its end, the contacts not reached
expire and the campaign completes. The pump, the dispatcher, the recorder and `plan` honour both."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from freezegun import freeze_time
from sqlmodel import col, select

from campaigns.fields import SpecError
from campaigns.outcomes import AttemptStatus
from campaigns.spec import parse_campaign
from dialer import db
from dialer.cli import main
from dialer.dispatch import place_call
from dialer.models import Attempt, Campaign, Contact
from dialer.plan import plan
from dialer.providers.base import CallEvent
from dialer.recorder import apply_event
from dialer.scheduler import pump
from dialer.settings import Settings
from tests.dialer.factories import NOW, FakeVonage, campaign_with_contacts, runtime
from tests.e2e import campaign_text

PHONES = [f"+121255501{i:02d}" for i in range(4)]
START, END = NOW + timedelta(hours=2), NOW + timedelta(hours=5)
SCHEDULED = campaign_text("vonage", 60) + (
    f'\n[schedule]\nstart = "{START.isoformat()}"\nend = {END.isoformat().replace("+00:00", "Z")}\n'
)


def _contacts(url: str) -> list[tuple[str, str | None]]:
    with db.session_scope(url) as session:
        return [(c.state, c.result) for c in session.exec(select(Contact).order_by(col(Contact.id)))]


@pytest.mark.parametrize(
    ("schedule", "field", "message"),
    [
        ("start = 2026-12-07T09:00:00", "schedule.start", "with its offset from UTC"),
        ('start = "2026-12-07T09:00:00+01:00"\nend = "2026-12-07T08:00:00Z"', "schedule.end", "is not after"),
    ],
)
def test_a_schedule_is_two_moments_in_order(schedule: str, field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_campaign(campaign_text() + f"\n[schedule]\n{schedule}\n")
    assert caught.value.field == field and message in caught.value.message


def test_nothing_is_called_before_the_start_and_the_contacts_left_at_the_end_expire(
    settings: Settings,
) -> None:
    url = settings.database_url
    campaign_with_contacts(url, PHONES, text=SCHEDULED)
    enqueued: list[tuple[int, float]] = []
    provider = FakeVonage()
    rt = runtime(settings, provider, enqueued)
    assert pump(rt) == 0  # two hours before the start
    rt.clock = lambda: START
    assert pump(rt) == 4
    with db.session_scope(url) as session:
        first, second, third, fourth = session.exec(select(Attempt).order_by(col(Attempt.id))).all()
        apply_event(session, attempt=first, event=CallEvent(status=AttemptStatus.COMPLETED), now=START)
        apply_event(session, attempt=second, event=CallEvent(status=AttemptStatus.BUSY), now=START)
    rt.clock = lambda: END
    place_call(rt, third.id or 0)  # queued, and the end has come: not placed
    assert provider.requests == []
    with db.session_scope(url) as session:
        apply_event(session, attempt=fourth, event=CallEvent(status=AttemptStatus.RINGING), now=END)
    assert pump(rt) == 0
    # Reached before the end; busy, retried after it: expired; never placed: expired; on a call: not yet.
    assert _contacts(url) == [
        ("done", "reached"),
        ("done", "expired"),
        ("done", "expired"),
        ("calling", None),
    ]
    with db.session_scope(url) as session:
        apply_event(session, attempt=fourth, event=CallEvent(status=AttemptStatus.NO_ANSWER), now=END)
    assert _contacts(url)[3] == ("done", "expired")  # its retry would come after the end
    pump(rt)
    with db.session_scope(url) as session:
        assert session.exec(select(Campaign)).one().status == "completed"
        statuses = session.scalars(sa.select(Attempt.status).order_by(Attempt.id)).all()
    assert statuses == ["completed", "busy", "no_answer"]  # the third was taken back, never sent


def test_plan_and_status_count_from_the_start_and_say_what_the_end_leaves(settings: Settings) -> None:
    url = settings.database_url
    campaign_with_contacts(url, [f"+1212555{n:04d}" for n in range(5000)], text=SCHEDULED)
    with db.session_scope(url) as session:
        found = plan(session, "e2e", settings=settings, now=NOW)
    assert found.starts == START and found.ends == END
    # 5,000 contacts at 10 calls/s, and two rounds of retries a minute later (played in steps of a
    # quarter of an hour): every one is called within the three hours.
    assert found.finish is not None and START < found.finish < START + timedelta(hours=1)
    assert found.expiring == 0
    slow = settings.model_copy(update={"vonage": settings.vonage.model_copy(update={"rate_limit": 0.1})})
    with db.session_scope(url) as session:
        found = plan(session, "e2e", settings=slow, now=NOW)
    # One call every 10 s for three hours: 1,080 first calls; the other 3,920 contacts expire, and so
    # do the 35% of those called whose retry (the default share) would come after the first calls.
    assert found.finish == END and found.expiring == pytest.approx(3_920 + 1_080 * 0.35)
    env = {"DIALER_DATABASE_URL": url}
    with freeze_time(NOW):
        result = CliRunner().invoke(main, ["campaign", "plan", "e2e"], env=env)
        status = CliRunner().invoke(main, ["status", "e2e"], env=env)
    assert f"starts: {START:%a %Y-%m-%d %H:%M} UTC (in 2 h): nothing is called before" in result.output
    assert f"ends: {END:%a %Y-%m-%d %H:%M} UTC: every contact should be called by then" in result.output
    rows = [" ".join(line.replace("│", " ").split()) for line in status.output.splitlines()]
    assert f"starts {START:%a %Y-%m-%d %H:%M} UTC: nothing is called before" in rows
    assert f"ends {END:%a %Y-%m-%d %H:%M} UTC: contacts not reached expire" in rows


def test_a_cap_on_calls_per_number_holds_across_campaigns(settings: Settings) -> None:
    """At most 2 calls to a number in 7 days, whichever campaign places them: the second campaign's
    contacts wait until the first call leaves the span, and plan counts the wait."""
    url = settings.database_url
    settings = settings.model_copy(update={"number_cap": 2, "number_cap_days": 7.0})
    campaign_with_contacts(url, PHONES[:2], name="one")
    campaign_with_contacts(url, PHONES[:2], name="two")
    campaign_with_contacts(url, PHONES[:2], name="three")
    rt = runtime(settings, FakeVonage(), [])
    assert pump(rt) == 4  # one's and two's; three's numbers have had their two calls
    with db.session_scope(url) as session:
        waiting = session.execute(
            sa.select(Campaign.name, Contact.state, Contact.next_attempt_at)
            .join(Campaign, col(Campaign.id) == col(Contact.campaign_id))
            .where(col(Campaign.name) == "three")
        ).all()
        attempts = session.scalars(sa.select(Attempt.phone)).all()
    assert waiting == [("three", "pending", NOW + timedelta(days=7))] * 2
    assert sorted(attempts) == sorted(PHONES[:2] * 2)
    with db.session_scope(url) as session:
        found = plan(session, "three", settings=settings, now=NOW)
    assert found.finish is not None and found.finish >= NOW + timedelta(days=7)
    rt.clock = lambda: NOW + timedelta(days=7, seconds=1)
    assert pump(rt) == 2
