"""The finish estimate: pace, windows and retries played forward, with ``now`` given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner
from freezegun import freeze_time

from campaigns.spec import RetryPolicy, Window
from dialer import db
from dialer.cli import main
from dialer.models import Attempt, Contact
from dialer.plan import DEFAULT_CALL_SECONDS, Work, expected_attempts, finish, plan
from dialer.settings import Settings
from dialer.zones import assign_groups
from tests.dialer.factories import NOW as FACTORY_NOW
from tests.dialer.factories import campaign_with_contacts

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)  # a Friday: noon in London, 21:00 in Tokyo
WEEKDAYS = Window(start="09:00", end="17:00", days=("mon", "tue", "wed", "thu", "fri"))
ONCE = RetryPolicy(max_attempts=1)


def test_an_open_zone_is_called_at_the_pace() -> None:
    work = [Work(due=NOW, zones=("Europe/London",), made=0, count=3600)]
    end = finish(work, window=WEEKDAYS, policy=ONCE, share=0.5, calls_per_second=1, call_seconds=45, now=NOW)
    assert end == NOW + timedelta(hours=1, seconds=45)


def test_a_closed_zone_waits_for_its_window_and_does_not_hold_up_an_open_one() -> None:
    work = [
        Work(due=NOW, zones=("Asia/Tokyo",), made=0, count=20_000),
        Work(due=NOW, zones=("Europe/London",), made=0, count=2_000),
    ]
    end = finish(work, window=WEEKDAYS, policy=ONCE, share=0.5, calls_per_second=1, call_seconds=45, now=NOW)
    # Tokyo opens on Monday at 09:00 local (00:00 UTC) and closes at 17:00 (08:00 UTC): 28,800
    # calls' worth of its day, so its 20,000 are done that morning.
    monday = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
    assert end == monday + timedelta(seconds=20_000 + 45)


def test_a_window_too_short_for_the_work_carries_it_to_the_next_day() -> None:
    work = [Work(due=NOW, zones=("Europe/London",), made=0, count=10 * 3600)]
    end = finish(work, window=WEEKDAYS, policy=ONCE, share=0.5, calls_per_second=1, call_seconds=45, now=NOW)
    # Ten hours of calls: Friday's last five (12:00-17:00), then Monday's first five (09:00-14:00).
    assert end == datetime(2026, 11, 30, 14, 0, tzinfo=UTC) + timedelta(seconds=45)


def test_retries_come_back_after_the_policys_delay_in_the_share_seen() -> None:
    policy = RetryPolicy(max_attempts=3, delay=timedelta(minutes=30), retry_on=("busy",))
    work = [Work(due=NOW, zones=("Europe/London",), made=0, count=100)]
    end = finish(
        work, window=WEEKDAYS, policy=policy, share=0.5, calls_per_second=1, call_seconds=45, now=NOW
    )
    # 100 calls; 50 back 45 s + 30 min after the first pass began; 25 more 45 s + 30 min after that.
    third = NOW + 2 * timedelta(seconds=45 + 1800)
    assert end == third + timedelta(seconds=25 + 45)
    assert expected_attempts(0.5, 0, policy) == 1.75
    assert expected_attempts(0.5, 2, policy) == 1.0
    assert expected_attempts(0.5, 3, policy) == 0.0


def test_zones_never_open_together_are_left_out_and_too_slow_a_pace_is_said() -> None:
    apart = [Work(due=NOW, zones=("Asia/Tokyo", "America/New_York"), made=0, count=10)]
    assert (
        finish(apart, window=WEEKDAYS, policy=ONCE, share=0.5, calls_per_second=1, call_seconds=45, now=NOW)
        == NOW
    )
    slow = [Work(due=NOW, zones=("Europe/London",), made=0, count=1_000_000)]
    assert (
        finish(slow, window=WEEKDAYS, policy=ONCE, share=0.5, calls_per_second=0.1, call_seconds=45, now=NOW)
        is None
    )


CAMPAIGN = """
name = "plan"
provider = "vonage"
caller_id = "+14155550100"
[message]
text = "Hello"
[retry]
max_attempts = 2
retry_on = ["busy", "no_answer"]
delay = "1h"
[window]
start = "09:00"
end = "17:00"
days = ["mon", "tue", "wed", "thu", "fri"]
[pacing]
max_concurrent = 10
"""


def test_plan_and_status_say_when_each_zone_opens_and_when_the_campaign_ends(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = {"DIALER_DATABASE_URL": sqlite_url}
    (tmp_path / "plan.toml").write_text(CAMPAIGN)
    rows = [f"+44207946{n:04d}" for n in range(20)] + [f"+81312345{n:03d}" for n in range(10)]
    (tmp_path / "c.csv").write_text("phone\n" + "\n".join(rows) + "\n")
    runner = CliRunner()
    assert runner.invoke(main, ["campaign", "create", str(tmp_path / "plan.toml")], env=env).exit_code == 0
    assert (
        runner.invoke(main, ["import", str(tmp_path / "c.csv"), "--campaign", "plan"], env=env).exit_code == 0
    )
    with db.session_scope(sqlite_url) as session:  # imported an hour before NOW, due since
        session.execute(sa.update(Contact).values(next_attempt_at=NOW - timedelta(hours=1)))
    with freeze_time(NOW):
        result = runner.invoke(main, ["campaign", "plan", "plan"], env=env)
        status = runner.invoke(main, ["status", "plan"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:3] == [
        "plan (vonage): 30 contacts left, about 40 calls with retries",
        "pace: 0.222 calls/s (the vonage account allows 3/s, no campaign cap; 10 calls at once of 45 s allow"
        " 0.222/s)",
        "retries: up to 2 attempts on busy, no_answer, 1 h after the previous one; 35% of calls retried,"
        " 45 s per call (defaults until 30 attempts have ended)",
    ]
    assert any("Europe/London" in line and "20" in line and "open now" in line for line in lines)
    assert any(
        "Asia/Tokyo" in line and "10" in line and "Mon 2026-11-30 00:00 (in 2 d 12 h)" in line
        for line in lines
    )
    # Tokyo's ten on Monday at 00:00 UTC take 45 s at 10/45 calls/s; 3.5 come back an hour and
    # 45 s later and take 15.75 s more; the last call lasts 45 s.
    assert lines[-1] == "estimated finish: Mon 2026-11-30 01:01 UTC (in 2 d 13 h)", result.output
    assert status.exit_code == 0 and "estimated finish" in status.output
    assert "Mon 2026-11-30 01:01 UTC (in 2 d 13 h)" in status.output


def test_the_plan_takes_call_length_and_retry_share_from_the_attempts_that_ended(sqlite_url: str) -> None:
    phones = [f"+1212555{n:04d}" for n in range(40)]
    campaign = campaign_with_contacts(sqlite_url, phones)
    with db.session_scope(sqlite_url) as session:
        contacts = session.scalars(sa.select(Contact).order_by(Contact.id)).all()
        for index, contact in enumerate(contacts):
            status = "busy" if index % 4 == 0 else "completed"  # a quarter retried
            session.add(
                Attempt(
                    campaign_id=campaign.id or 0,
                    contact_id=contact.id or 0,
                    number=1,
                    provider="vonage",
                    status=status,
                    callback_token=f"token-{index}",
                    dispatched_at=FACTORY_NOW,
                    ended_at=FACTORY_NOW + timedelta(seconds=20 if status == "busy" else 60),
                )
            )
            contact.state, contact.attempts = ("pending", 1) if status == "busy" else ("done", 1)
        session.flush()
        assign_groups(session, campaign_id=campaign.id or 0)  # as an import does (the factory does not)
        contacts[0].state = "calling"  # on its second call: still a contact left, in its zone
    with db.session_scope(sqlite_url) as session:
        found = plan(session, "e2e", settings=Settings(database_url=sqlite_url), now=FACTORY_NOW)
    assert found.observed == 40 and found.retry_share == 0.25
    assert found.call_seconds == (10 * 20 + 30 * 60) / 40
    assert found.contacts_left == 10
    assert [(zone.zones, zone.contacts) for zone in found.zones] == [(("America/New_York",), 10)]
    # Calls to a simulator (a tenth of their time, outcomes as scripted) teach nothing.
    with db.session_scope(sqlite_url) as session:
        session.execute(sa.update(Attempt).values(simulated=True))
    with db.session_scope(sqlite_url) as session:
        found = plan(session, "e2e", settings=Settings(database_url=sqlite_url), now=FACTORY_NOW)
    assert found.observed == 0 and found.call_seconds == DEFAULT_CALL_SECONDS
