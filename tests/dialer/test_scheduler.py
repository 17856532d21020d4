"""The pump and the sweeper: due work found again from the tables, within budgets and windows."""

from __future__ import annotations

from datetime import timedelta
from importlib import resources
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from campaigns.outcomes import AttemptStatus
from campaigns.spec import CallOptions, parse_campaign
from dialer import db
from dialer.importer import import_contacts
from dialer.models import Attempt, Campaign, Contact, DncEntry, ZoneGroup
from dialer.operations import change_status, create_campaign, set_provider
from dialer.providers import get_provider
from dialer.providers.base import CallEvent
from dialer.recorder import apply_event
from dialer.runtime import Runtime, spec_of
from dialer.scheduler import claim_due, pump, result_wait, sweep
from dialer.settings import Settings
from tests.dialer.factories import (
    NOW,
    FakeVonage,
    campaign_with_contacts,
    hold_every_permit,
    moving_clock,
    queued_attempts,
    runtime,
)
from tests.e2e import campaign_text

PHONES = [f"+121255501{i:02d}" for i in range(10)]


def _attempts(url: str) -> list[Attempt]:
    with db.session_scope(url) as session:
        return list(session.exec(select(Attempt).order_by(col(Attempt.id))).all())


def test_the_pump_queues_no_more_than_the_provider_budget(settings: Settings) -> None:
    settings = settings.model_copy(update={"vonage": settings.vonage.model_copy(update={"rate_limit": 2.0})})
    campaign_with_contacts(settings.database_url, PHONES)
    enqueued: list[tuple[int, float]] = []
    rt = runtime(settings, FakeVonage(), enqueued)
    assert pump(rt) == 4  # two seconds ahead at 2 calls/s (less the 1% margin, rounded up)
    assert pump(rt) == 0  # nothing more while those four wait
    assert [a.id for a in _attempts(settings.database_url)] == [attempt_id for attempt_id, _ in enqueued]


def test_contacts_outside_their_window_wait_for_it(settings: Settings) -> None:
    campaign_with_contacts(settings.database_url, ["+12125550106"])  # New York
    with db.session_scope(settings.database_url) as session:
        campaign = session.exec(select(Campaign)).one()
        campaign.spec = campaign.spec | {"window": {"start": "09:00", "end": "17:00", "days": ["mon"]}}
        session.add(campaign)
    rt = runtime(settings, FakeVonage(), [])
    for moment in (
        NOW.replace(hour=23),
        NOW.replace(day=24, hour=15),
        NOW.replace(day=30, hour=13, minute=59),
    ):
        rt.clock = lambda moment=moment: moment  # Monday 18:00, Tuesday 10:00, next Monday 08:59 in New York
        assert pump(rt) == 0
    rt.clock = lambda: NOW.replace(day=30, hour=14)  # next Monday, 09:00 in New York
    assert pump(rt) == 1


def test_a_number_added_to_the_dnc_list_after_import_is_not_called(settings: Settings) -> None:
    campaign_with_contacts(settings.database_url, ["+12125550106", "+12125550107"])
    with db.session_scope(settings.database_url) as session:
        session.add(DncEntry(phone="+12125550106"))
    assert pump(runtime(settings, FakeVonage(), [])) == 1
    with db.session_scope(settings.database_url) as session:
        results = session.execute(sa.select(Contact.phone, Contact.result).order_by(Contact.id)).all()
    assert results == [("+12125550106", "dnc"), ("+12125550107", None)]


def test_queued_attempts_whose_messages_were_lost_are_enqueued_again(settings: Settings) -> None:
    campaign = campaign_with_contacts(settings.database_url, PHONES[:3])
    attempts = queued_attempts(settings.database_url, campaign, 3)
    enqueued: list[tuple[int, float]] = []
    rt = runtime(settings, FakeVonage(), enqueued)
    assert sweep(rt)["requeued"] == 0  # still fresh: their messages may be on their way
    rt.clock = lambda: NOW + timedelta(seconds=settings.requeue_after + 1)
    assert sweep(rt)["requeued"] == 3
    assert sorted(attempt_id for attempt_id, _ in enqueued) == [a.id for a in attempts]


def test_a_worker_killed_while_sending_leaves_unknown_not_a_redial(settings: Settings) -> None:
    campaign = campaign_with_contacts(settings.database_url, PHONES[:1])
    queued_attempts(settings.database_url, campaign, 1)
    with db.session_scope(settings.database_url) as session:
        session.execute(sa.update(Attempt).values(status="dispatching"))
    enqueued: list[tuple[int, float]] = []
    rt = runtime(settings, FakeVonage(), enqueued)
    rt.clock = lambda: NOW + timedelta(minutes=5)
    assert sweep(rt)["unconfirmed"] == 1
    assert _attempts(settings.database_url)[0].status == "unconfirmed" and enqueued == []


def _overdue_call(settings: Settings) -> tuple[FakeVonage, Runtime]:
    """A call ringing past ``settle_after`` with no webhook; the provider says it ended busy."""
    campaign = campaign_with_contacts(settings.database_url, PHONES[:1])
    queued_attempts(settings.database_url, campaign, 1)
    with db.session_scope(settings.database_url) as session:
        session.execute(
            sa.update(Attempt).values(status="ringing", provider_call_id="call-9", dispatched_at=NOW)
        )
    provider = FakeVonage(httpx.Response(200, json={"uuid": "call-9", "status": "busy"}))
    rt = runtime(settings, provider, [])
    rt.clock = lambda: NOW + timedelta(seconds=settings.settle_after + 1)
    return provider, rt


def test_an_attempt_whose_webhooks_never_came_is_settled_from_the_provider(settings: Settings) -> None:
    provider, rt = _overdue_call(settings)
    assert sweep(rt)["looked_up"] == 1
    assert provider.requests[0].url.path == "/v1/calls/call-9"
    assert _attempts(settings.database_url)[0].status == "busy"


def test_a_status_look_up_passes_the_provider_gate_like_a_call(settings: Settings) -> None:
    provider, rt = _overdue_call(settings)
    now = moving_clock(rt)
    first = hold_every_permit(rt, "vonage", now)  # a second's worth of requests, none answered yet
    assert sweep(rt)["looked_up"] == 1 and len(provider.requests) == 1
    # The look-up waited until the first of them had surely arrived a second before.
    assert now[0] >= first + rt.provider_gate("vonage").transit + 1.0 - 1e-6


def _silent_call(settings: Settings, provider: str = "vonage", retry_on: str = "") -> Runtime:
    """An attempt sent at NOW of which nothing was heard since (its callbacks lost)."""
    text = campaign_text(provider, 60)
    if retry_on:
        text = text.replace('retry_on = ["busy", "no_answer", "failed"]', f"retry_on = {retry_on}")
    campaign = campaign_with_contacts(settings.database_url, PHONES[:1], provider=provider, text=text)
    with db.session_scope(settings.database_url) as session:
        spec = spec_of(session.get_one(Campaign, campaign.id))
        claim_due(session, campaign=session.get_one(Campaign, campaign.id), spec=spec, limit=1, now=NOW)
        session.execute(
            sa.update(Attempt).values(status="dialing", provider_call_id="call-9", dispatched_at=NOW)
        )
    return runtime(settings, FakeVonage(*[httpx.Response(404)] * 10), [])


def _contact(url: str) -> tuple[str, str | None]:
    with db.session_scope(url) as session:
        contact = session.exec(select(Contact)).one()
        return contact.state, contact.result


def test_an_attempt_with_no_result_ends_unknown_and_is_not_called_again(settings: Settings) -> None:
    """CM.com has no status look-up: past the ring, the longest call (10 min unless the campaign
    says) and its callback delay (2 min), the attempt is unknown, and the contact done as such."""
    rt = _silent_call(settings, "cm")
    rt.clock = lambda: NOW + timedelta(minutes=12, seconds=59)
    assert sweep(rt)["waiting"] == 1
    rt.clock = lambda: NOW + timedelta(minutes=13, seconds=1)
    assert sweep(rt)["given_up"] == 1
    attempt = _attempts(settings.database_url)[0]
    assert attempt.status == "unknown"
    assert attempt.reason == (
        "no result from CM.com within 13 min of sending the call; CM.com's Voice CDR API"
        " (https://docs.cmtelecom.com/voice-cdr/v1) lists the account's calls"
    )
    assert _contact(settings.database_url) == ("done", "unknown")
    assert sweep(rt)["given_up"] == 0  # once


def test_unknown_is_retried_only_where_the_campaign_asks(settings: Settings) -> None:
    rt = _silent_call(settings, "vonage", retry_on='["busy", "unknown"]')
    rt.clock = lambda: NOW + timedelta(hours=1)
    assert sweep(rt)["given_up"] == 1  # its look-up (404) did not tell
    attempt = _attempts(settings.database_url)[0]
    assert (attempt.status, attempt.reason) == (
        "unknown",
        "no result from Vonage within 13 min of sending the call, and its status look-up did not tell",
    )
    assert _contact(settings.database_url) == ("pending", None)


@pytest.mark.parametrize("retry_on", ["", '["unknown"]'])
def test_a_result_that_comes_after_unknown_replaces_it(settings: Settings, retry_on: str) -> None:
    """The callee answered; the callback came late (a receiver down for a while): the attempt
    and its contact take the real result, and a retry waiting for it is called off."""
    rt = _silent_call(settings, "cm", retry_on=retry_on)
    rt.clock = lambda: NOW + timedelta(minutes=14)
    sweep(rt)
    late = CallEvent(status=AttemptStatus.COMPLETED, duration=31)
    attempt = _attempts(settings.database_url)[0]
    with db.session_scope(settings.database_url) as session:
        apply_event(session, attempt=attempt, event=late, now=NOW + timedelta(minutes=15))
        apply_event(session, attempt=attempt, event=late, now=NOW + timedelta(minutes=16))  # repeated
    attempt = _attempts(settings.database_url)[0]
    assert (attempt.status, attempt.duration) == ("completed", 31)
    assert attempt.ended_at == NOW + timedelta(minutes=15)
    assert _contact(settings.database_url) == ("done", "reached")


def test_a_late_result_leaves_a_contact_called_again_alone(settings: Settings) -> None:
    rt = _silent_call(settings, "cm", retry_on='["unknown"]')
    rt.clock = lambda: NOW + timedelta(minutes=14)
    sweep(rt)
    first = _attempts(settings.database_url)[0]
    with db.session_scope(settings.database_url) as session:
        campaign = session.exec(select(Campaign)).one()
        assert claim_due(
            session, campaign=campaign, spec=spec_of(campaign), limit=1, now=NOW + timedelta(hours=1)
        )
    with db.session_scope(settings.database_url) as session:
        late = CallEvent(status=AttemptStatus.BUSY)
        apply_event(session, attempt=first, event=late, now=NOW + timedelta(hours=1, minutes=1))
    assert [a.status for a in _attempts(settings.database_url)] == ["busy", "queued"]
    assert _contact(settings.database_url) == ("calling", None)


def test_how_long_a_result_is_waited_for(settings: Settings) -> None:
    """The ring (60 s), the call's longest life and the provider's callback delay; or the setting."""
    base = parse_campaign(campaign_text("vonage", 60))
    cm, routee = get_provider("cm"), get_provider("routee")
    assert result_wait(base, cm, settings) == timedelta(minutes=13)
    assert result_wait(base, routee, settings) == timedelta(minutes=16)  # Routee retries for longer
    capped = base.model_copy(update={"call": CallOptions(max_duration=timedelta(minutes=2))})
    assert result_wait(capped, cm, settings) == timedelta(minutes=5)
    survey = (resources.files("dialer") / "examples" / "survey.toml").read_text()
    assert result_wait(parse_campaign(survey), cm, settings) == timedelta(minutes=13)  # its 10m
    uncapped = parse_campaign(survey.replace('max_duration = "10m"\n', ""))  # records 60 s, transfers
    assert result_wait(uncapped, cm, settings) == timedelta(hours=1, minutes=14)
    assert result_wait(base, cm, settings.model_copy(update={"give_up_after": 30.0})) == timedelta(seconds=30)


def test_a_finished_campaign_is_marked_completed(settings: Settings) -> None:
    campaign_with_contacts(settings.database_url, PHONES[:1])
    with db.session_scope(settings.database_url) as session:
        session.execute(sa.update(Contact).values(state="done", result="reached"))
    pump(runtime(settings, FakeVonage(), []))
    with db.session_scope(settings.database_url) as session:
        assert session.exec(select(Campaign.status)).one() == "completed"


def test_switching_provider_keeps_the_contacts(settings: Settings) -> None:
    campaign_with_contacts(settings.database_url, PHONES[:3])
    with db.session_scope(settings.database_url) as session:
        session.execute(sa.update(Campaign).values(status="paused"))
    with db.session_scope(settings.database_url) as session:
        set_provider(session, name="e2e", provider="vonage")
        assert session.scalar(sa.select(sa.func.count()).select_from(Contact)) == 3


def test_the_provider_account_cap_counts_calls_in_progress_of_every_campaign(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"vonage": settings.vonage.model_copy(update={"max_concurrent": 3, "rate_limit": 100.0})}
    )
    url = settings.database_url
    campaign_with_contacts(url, PHONES)
    rt = runtime(settings, FakeVonage(), [])
    assert pump(rt) == 3  # the account's cap, though the rate and the campaign's own cap allow more
    with db.session_scope(url) as session:  # two calls are answered, one ends
        session.execute(sa.update(Attempt).where(col(Attempt.id) <= 2).values(status="answered"))
        session.execute(sa.update(Attempt).where(col(Attempt.id) == 3).values(status="completed"))
    assert pump(rt) == 1  # only the ended call's place is free
    assert pump(rt) == 0


def _overdue_routee_call(settings: Settings, tracking: httpx.Response) -> tuple[list[httpx.Request], Runtime]:
    campaign = campaign_with_contacts(settings.database_url, PHONES[:1], provider="routee")
    queued_attempts(settings.database_url, campaign, 1)
    with db.session_scope(settings.database_url) as session:
        session.execute(
            sa.update(Attempt).values(status="ringing", provider_call_id="conv-7", dispatched_at=NOW)
        )
    seen: list[httpx.Request] = []

    def routee(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer", "expires_in": 3600})
        return tracking

    rt = runtime(settings, routee, [])
    rt.clock = lambda: NOW + timedelta(seconds=settings.settle_after + 1)
    return seen, rt


def test_routee_is_looked_up_on_the_conversations_tracking_page(settings: Settings) -> None:
    page = {
        "content": [
            {
                "messageId": "m-1",
                "conversationTrackingId": "conv-7",
                "to": "+12125550100",
                "status": {"status": "Completed", "date": "2026-11-27T10:00:00Z"},
                "duration": 31,
                "price": 0.0078,
                "answeredBy": "HUMAN",
                "collectedTones": "",
            }
        ],
        "totalPages": 1,
        "totalElements": 1,
        "last": True,
        "first": True,
        "numberOfElements": 1,
        "size": 20,
        "number": 0,
    }
    seen, rt = _overdue_routee_call(settings, httpx.Response(200, json=page))
    assert sweep(rt)["looked_up"] == 1
    assert seen[-1].url.path == "/voice/tracking/conversation/conv-7"
    attempt = _attempts(settings.database_url)[0]
    assert (attempt.status, attempt.duration, attempt.price, attempt.answered_by) == (
        "completed",
        31,
        "0.0078",
        "human",
    )


def test_an_unexpected_look_up_answer_is_logged_and_the_sweep_goes_on(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    _, rt = _overdue_routee_call(settings, httpx.Response(200, json={"trackingId": "conv-7", "status": "?"}))
    counts = sweep(rt)
    assert counts["looked_up"] == 0 and counts["waiting"] == 1
    assert _attempts(settings.database_url)[0].status == "ringing"  # left for a later look-up
    assert "answered a status look-up with something unexpected" in caplog.text


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    return sqlite_url if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


def test_contacts_whose_window_is_closed_do_not_hold_back_those_whose_window_is_open(
    settings: Settings, url: str, tmp_path: Path
) -> None:
    """20,000 Japanese numbers at night, ahead of 2,000 British ones in the afternoon: the first
    British contacts are claimed on the first tick."""
    path = tmp_path / "contacts.csv"
    with path.open("w") as out:
        out.write("phone,first_name\n")
        out.writelines(f"+81901{n:07d},Taro\n" for n in range(20_000))
        out.writelines(f"+447911{n:06d},Ann\n" for n in range(2_000))
    text = campaign_text("vonage").replace('start = "00:00"\nend = "24:00"', 'start = "09:00"\nend = "20:00"')
    with db.session_scope(url) as session:
        campaign = create_campaign(session, parse_campaign(text))
        report = import_contacts(session, campaign=campaign, path=path, now=NOW - timedelta(hours=1))
        change_status(session, name="e2e", action="start", now=NOW)
    assert report.accepted == 22_000
    account = settings.vonage.model_copy(update={"rate_limit": 1.0})
    rt = runtime(settings.model_copy(update={"database_url": url, "vonage": account}), FakeVonage(), [])
    rt.clock = lambda: NOW  # 15:00 in London, midnight in Tokyo
    assert pump(rt) == 2  # two seconds ahead at one call a second, on the first tick
    with db.session_scope(url) as session:
        called = session.exec(select(Contact).where(col(Contact.state) == "calling")).all()
        groups = session.exec(select(ZoneGroup)).all()
    assert [contact.phone[:3] for contact in called] == ["+44", "+44"]
    assert sorted(group.zones for group in groups) == [
        "Asia/Tokyo",
        "Europe/Guernsey Europe/Isle_of_Man Europe/Jersey Europe/London",
    ]
