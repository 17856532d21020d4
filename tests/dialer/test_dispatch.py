"""Placing calls: exactly once, whatever the broker redelivers or the provider answers."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import select

from dialer import db, lease
from dialer.dispatch import _claim, place_call, release
from dialer.models import Attempt, Campaign, Contact
from dialer.operations import change_status, route_around
from dialer.scheduler import pump
from dialer.settings import Settings
from tests.dialer.factories import (
    NOW,
    FakeVonage,
    campaign_with_contacts,
    queued_attempts,
    runtime,
)
from tests.e2e import campaign_text


def _attempt(url: str, attempt_id: int) -> Attempt:
    with db.session_scope(url) as session:
        attempt = session.get(Attempt, attempt_id)
        assert attempt is not None
        return attempt


def test_the_same_task_delivered_twice_places_one_call(settings: Settings) -> None:
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"])
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)
    provider, enqueued = FakeVonage(), []
    rt = runtime(settings, provider, enqueued)
    place_call(rt, attempt.id or 0)
    place_call(rt, attempt.id or 0)
    assert len(provider.requests) == 1
    stored = _attempt(settings.database_url, attempt.id or 0)
    assert (stored.status, stored.provider_call_id) == ("dialing", "call-1")


def test_two_workers_racing_for_one_attempt_place_one_call(settings: Settings) -> None:
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"])
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)
    provider = FakeVonage()
    rt = runtime(settings, provider, [])
    workers = [threading.Thread(target=place_call, args=(rt, attempt.id)) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(provider.requests) == 1


def test_a_429_keeps_the_attempt_and_tries_again_after_retry_after(settings: Settings) -> None:
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"])
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)
    provider = FakeVonage(httpx.Response(429, headers={"Retry-After": "2"}, json={"title": "Throttled"}))
    enqueued: list[tuple[int, float]] = []
    rt = runtime(settings, provider, enqueued)
    refused: list[str] = []
    rt.on_rate_limited = refused.append
    place_call(rt, attempt.id or 0)
    assert _attempt(settings.database_url, attempt.id or 0).status == "queued"
    assert enqueued == [(attempt.id, 2.0)]
    assert refused == ["vonage"]  # counted for the metrics
    slot = rt.limiter.reserve([rt.provider_bucket("vonage")], max_wait=1)
    assert not slot.granted  # every worker now waits for the provider


def test_a_4xx_ends_the_attempt_as_rejected_with_the_reason(settings: Settings) -> None:
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"])
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)
    provider = FakeVonage(httpx.Response(400, json={"title": "Bad Request", "detail": "bad number"}))
    place_call(runtime(settings, provider, []), attempt.id or 0)
    stored = _attempt(settings.database_url, attempt.id or 0)
    assert stored.status == "rejected" and "bad number" in (stored.reason or "")
    with db.session_scope(settings.database_url) as session:
        contact = session.get(Contact, stored.contact_id)
        assert contact is not None and (contact.state, contact.result) == ("done", "exhausted")


@pytest.mark.parametrize("status", [401, 404])
def test_wrong_credentials_or_url_pause_every_campaign_on_the_account_and_keep_the_contact(
    settings: Settings, status: int
) -> None:
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"])
    other = campaign_with_contacts(settings.database_url, ["+12125550107"], name="other")
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)
    provider = FakeVonage(httpx.Response(status, json={"title": "Nope", "detail": "not here"}))
    place_call(runtime(settings, provider, []), attempt.id or 0)
    with db.session_scope(settings.database_url) as session:
        assert session.get(Attempt, attempt.id) is None  # taken back, as a pause takes back queued work
        contact = session.get(Contact, attempt.contact_id)
        assert contact is not None and (contact.state, contact.attempts) == ("pending", 0)
        for name in (campaign.id, other.id):
            paused = session.get(Campaign, name)
            assert paused is not None and paused.status == "paused"
            assert paused.reason is not None and f"answered {status}" in paused.reason


def test_a_timeout_after_sending_is_never_redialed(settings: Settings) -> None:
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"])
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)

    def times_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    enqueued: list[tuple[int, float]] = []
    rt = runtime(settings, times_out, enqueued)
    place_call(rt, attempt.id or 0)
    place_call(rt, attempt.id or 0)
    assert _attempt(settings.database_url, attempt.id or 0).status == "unconfirmed"
    assert enqueued == []


def test_queued_work_of_a_paused_campaign_places_nothing(settings: Settings) -> None:
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106", "+12125550107"])
    attempts = queued_attempts(settings.database_url, campaign, 2)
    with db.session_scope(settings.database_url) as session:
        change_status(session, name="e2e", action="pause", now=NOW)
    provider = FakeVonage()
    for attempt in attempts:
        place_call(runtime(settings, provider, []), attempt.id or 0)
    assert provider.requests == []
    with db.session_scope(settings.database_url) as session:
        contacts = session.exec(select(Contact).order_by(Contact.id)).all()  # type: ignore[arg-type]
        assert [(c.state, c.attempts) for c in contacts] == [("pending", 0), ("pending", 0)]


def test_a_webhook_that_beats_the_worker_keeps_its_status(settings: Settings) -> None:
    """The provider's first callback can be recorded before the worker has read the provider's
    answer: recording the call id must not move the attempt back to dialing."""
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"])
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)
    provider = FakeVonage()

    def answer_after_the_webhook(request: httpx.Request) -> httpx.Response:
        with db.session_scope(settings.database_url) as session:
            early = session.get(Attempt, attempt.id)
            assert early is not None and early.status == "dispatching"
            early.status, early.provider_call_id = "ringing", "call-1"
        return provider(request)

    place_call(runtime(settings, answer_after_the_webhook, []), attempt.id or 0)
    stored = _attempt(settings.database_url, attempt.id or 0)
    assert (stored.status, stored.provider_call_id) == ("ringing", "call-1")


def test_a_call_id_the_provider_gave_twice_fails_the_second_call_saying_why(settings: Settings) -> None:
    same = httpx.Response(201, json={"uuid": "call-same", "status": "started"})
    vonage_api, enqueued = FakeVonage(same, same), []
    rt = runtime(settings, vonage_api, enqueued)
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106", "+12125550107"])
    first, second = queued_attempts(settings.database_url, campaign, 2)
    place_call(rt, first.id or 0)
    place_call(rt, second.id or 0)  # no IntegrityError reaches the worker
    with db.session_scope(settings.database_url) as session:
        kept, refused = session.get(Attempt, first.id), session.get(Attempt, second.id)
    assert kept is not None and (kept.status, kept.provider_call_id) == ("dialing", "call-same")
    assert refused is not None and refused.status == "failed" and refused.provider_call_id is None
    assert refused.reason == (
        "Vonage answered with call id 'call-same', which another attempt has already:"
        " this call's outcome cannot be told apart from that one's"
    )


def test_a_worker_holding_a_withdrawn_attempt_leaves_the_next_one_given_its_id_alone(
    settings: Settings,
) -> None:
    """A campaign moved to another route withdraws its queued attempts while a worker may hold one
    it read; SQLite gives the withdrawn id to the next attempt, another contact's."""
    url = settings.database_url
    campaign = campaign_with_contacts(url, ["+12125550106", "+12125550107"])
    (held,) = queued_attempts(url, campaign, 1)
    with db.session_scope(url) as session:
        assert release(session, attempt=held, retry_at=NOW + timedelta(hours=1), now=NOW)
    (fresh,) = queued_attempts(url, campaign, 1)
    assert (fresh.id, fresh.contact_id) == (held.id, held.contact_id + 1)  # the id, given again
    with db.statement_connection(url) as connection:
        assert not _claim(connection, attempt=held, caller_id="+14155550100", now=NOW)
    with db.session_scope(url) as session:
        assert not release(session, attempt=held, retry_at=None, now=NOW)
    provider = FakeVonage()
    place_call(runtime(settings, provider, []), fresh.id or 0)
    assert [json.loads(r.content)["to"][0]["number"] for r in provider.requests] == ["12125550107"]


def test_a_dialer_run_that_finds_an_account_refused_moves_only_its_own_campaign(settings: Settings) -> None:
    """A `dialer run` (above all a simulated one, whose other routes point nowhere) serves one
    campaign: what it finds must not pause or move the campaigns the workers dial."""
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"])
    campaign_with_contacts(settings.database_url, ["+12125550107"], name="other")
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)
    provider = FakeVonage(httpx.Response(401, json={"title": "Nope", "detail": "not here"}))
    rt = runtime(settings, provider, [])
    rt.only = frozenset({campaign.id or 0})
    place_call(rt, attempt.id or 0)
    with db.session_scope(settings.database_url) as session:
        statuses = {c.name: c.status for c in session.exec(select(Campaign))}
    assert statuses == {"e2e": "paused", "other": "running"}


def test_a_campaign_does_not_move_onto_an_account_another_dialer_paces(settings: Settings) -> None:
    """Two processes pacing one account would each allow its whole limit: a route a `dialer run`
    dials is skipped, and with no other route left the campaign pauses, saying so."""
    url = settings.database_url
    text = campaign_text("vonage").replace(
        'provider = "vonage"', 'provider = "vonage"\nfallback = ["routee"]'
    )
    campaign = campaign_with_contacts(url, ["+12125550106"], text=text)
    elsewhere = campaign_with_contacts(url, ["+12125550107"], name="elsewhere", provider="routee")
    with db.session_scope(url) as session:
        lease.take(session, campaign=elsewhere, holder="dialer run on elsewhere (pid 1)", now=NOW)
    (attempt,) = queued_attempts(url, campaign, 1)
    place_call(
        runtime(settings, FakeVonage(httpx.Response(401, json={"title": "Nope"})), []), attempt.id or 0
    )
    with db.session_scope(url) as session:
        moved = session.get(Campaign, campaign.id)
        assert moved is not None and (moved.status, moved.provider) == ("paused", "vonage")
        assert moved.reason is not None
        assert moved.reason.endswith("; not routee (dialled by dialer run on elsewhere (pid 1))")


@pytest.mark.parametrize(
    ("first_cause", "back_on"),
    [("failures", "vonage"), ("refused", None)],
)
def test_only_a_first_route_left_after_failures_is_tried_again(
    settings: Settings, first_cause: str, back_on: str | None
) -> None:
    """vonage -> routee (failures, or refused credentials) -> cm (failures): the campaign goes
    back to vonage in time if vonage only failed; never to a refused route, nor to routee."""
    url = settings.database_url
    text = campaign_text("vonage").replace('"vonage"', '"vonage"\nfallback = ["routee", "cm"]', 1)
    campaign = campaign_with_contacts(url, ["+12125550106"], text=text)
    later = timedelta(minutes=5)
    with db.session_scope(url) as session:
        for provider, cause in (("vonage", first_cause), ("routee", "failures")):
            back = later if cause == "failures" else None
            route_around(session, provider=provider, reason="down", cause=cause, now=NOW, back_after=back)
    with db.session_scope(url) as session:
        moved = session.get(Campaign, campaign.id)
        assert moved is not None and (moved.provider, moved.route_cause) == ("cm", "failures")
        assert moved.route_back_at == (NOW + later if back_on else None)
    rt = runtime(settings, FakeVonage(), [])
    rt.clock = lambda: NOW + later + timedelta(seconds=1)
    pump(rt)
    with db.session_scope(url) as session:
        now_on = session.get(Campaign, campaign.id)
        assert now_on is not None and now_on.provider == (back_on or "cm")
        assert now_on.route_cause == (None if back_on else "failures")


def test_a_return_to_the_first_route_waits_while_another_dialer_paces_it(settings: Settings) -> None:
    url = settings.database_url
    text = campaign_text("vonage").replace('"vonage"', '"vonage"\nfallback = ["routee"]', 1)
    campaign = campaign_with_contacts(url, ["+12125550106"], text=text)
    later = timedelta(minutes=6)
    with db.session_scope(url) as session:
        route_around(
            session,
            provider="vonage",
            reason="down",
            cause="failures",
            now=NOW,
            back_after=timedelta(minutes=5),
        )
    elsewhere = campaign_with_contacts(url, ["+12125550107"], name="elsewhere")
    with db.session_scope(url) as session:
        # a run that is live when the return comes due
        lease.take(session, campaign=elsewhere, holder="dialer run on elsewhere (pid 1)", now=NOW + later)
    rt = runtime(settings, FakeVonage(), [])
    rt.clock = lambda: NOW + later
    pump(rt)
    with db.session_scope(url) as session:
        waiting = session.get(Campaign, campaign.id)
        assert waiting is not None and waiting.provider == "routee"
        retry = timedelta(seconds=settings.route_retry)
        assert waiting.route_back_at == NOW + later + retry


def test_the_workers_leave_a_campaign_only_simulated_until_the_operator_starts_it(settings: Settings) -> None:
    """A killed `dialer run --simulate` leaves its campaign running: beat must not place its first
    real calls; `campaign resume` for the workers is the operator asking for them."""
    url = settings.database_url
    campaign = campaign_with_contacts(url, ["+12125550106"])
    with db.session_scope(url) as session:
        session.execute(sa.update(Campaign).where(Campaign.id == campaign.id).values(simulated=True))
    assert pump(runtime(settings, FakeVonage(), [])) == 0
    with db.session_scope(url) as session:
        lease.meant_for_workers(session, campaign=campaign, now=NOW)
    assert pump(runtime(settings, FakeVonage(), [])) == 1


def test_a_worker_without_the_account_of_an_attempt_takes_it_back_and_moves_its_campaign(
    settings: Settings,
) -> None:
    url = settings.database_url
    text = campaign_text("vonage").replace('"vonage"', '"vonage.backup"\nfallback = ["vonage"]', 1)
    campaign = campaign_with_contacts(url, ["+12125550106"], text=text)
    (attempt,) = queued_attempts(url, campaign, 1)
    provider = FakeVonage()
    place_call(runtime(settings, provider, []), attempt.id or 0)
    assert provider.requests == []
    with db.session_scope(url) as session:
        moved = session.get(Campaign, campaign.id)
        assert moved is not None and moved.provider == "vonage"
        assert moved.reason is not None and "no vonage account 'backup' is set" in moved.reason
        assert session.get(Attempt, attempt.id) is None  # taken back, to be placed on vonage
