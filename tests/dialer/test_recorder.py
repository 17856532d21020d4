"""Webhooks: authenticated, stored once, never moving an attempt backwards."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from dialer import db
from dialer.errors import WebhookAuthError
from dialer.models import Attempt, Contact, DtmfAnswer, WebhookEvent
from dialer.providers import vonage
from dialer.providers.base import Webhook
from dialer.recorder import record_webhook
from dialer.settings import Settings
from dialer.simulators.vonage import sign_webhook
from tests.dialer.factories import NOW, campaign_with_contacts, queued_attempts


def _hook(settings: Settings, kind: str, payload: dict[str, object]) -> Webhook:
    body = json.dumps(payload).encode()
    assert settings.vonage.signature_secret is not None
    token = sign_webhook(
        body, secret=settings.vonage.signature_secret.get_secret_value(), api_key=settings.vonage.api_key
    )
    return Webhook(
        kind=kind, method="POST", headers={"authorization": f"Bearer {token}"}, query={}, body=body
    )


def _send(settings: Settings, attempt: Attempt, kind: str, **payload: object) -> object:
    with db.session_scope(settings.database_url) as session:
        return record_webhook(
            session,
            provider=vonage.PROVIDER,
            settings=settings.vonage,
            token=attempt.callback_token,
            webhook=_hook(settings, kind, {"uuid": "call-1", **payload}),
            now=NOW,
            public_url=settings.public_url,
        )


@pytest.fixture
def attempt(settings: Settings) -> Attempt:
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"])
    return queued_attempts(settings.database_url, campaign, 1)[0]


def _stored(settings: Settings, attempt: Attempt) -> tuple[Attempt, Contact]:
    with db.session_scope(settings.database_url) as session:
        row = session.get(Attempt, attempt.id)
        contact = session.get(Contact, attempt.contact_id)
        assert row is not None and contact is not None
        return row, contact


def test_a_late_event_never_moves_a_completed_attempt_back(settings: Settings, attempt: Attempt) -> None:
    for status in ("ringing", "answered", "completed", "ringing", "busy"):
        _send(settings, attempt, "event", status=status)
    row, contact = _stored(settings, attempt)
    assert row.status == "completed"
    assert (contact.state, contact.result, contact.attempts) == ("done", "reached", 1)


def test_a_redelivered_callback_is_stored_once(settings: Settings, attempt: Attempt) -> None:
    for _ in range(3):
        _send(settings, attempt, "event", status="busy", timestamp="2026-11-23T15:00:00Z")
    with db.session_scope(settings.database_url) as session:
        assert len(session.exec(select(WebhookEvent)).all()) == 1
    row, contact = _stored(settings, attempt)
    assert row.status == "busy"
    assert contact.state == "pending" and (contact.next_attempt_at - NOW).total_seconds() == 60


def test_a_wrong_key_is_asked_again_then_the_answer_stored(settings: Settings, attempt: Attempt) -> None:
    reply = _send(settings, attempt, "input", dtmf={"digits": "7", "timed_out": False})
    assert isinstance(reply, list) and reply[-1]["action"] == "input"
    reply = _send(settings, attempt, "input", dtmf={"digits": "2", "timed_out": False})
    assert isinstance(reply, list) and reply == [
        {"action": "talk", "text": "Thank you. Goodbye.", "language": "en-US"}
    ]
    _send(settings, attempt, "event", status="completed")
    with db.session_scope(settings.database_url) as session:
        answer = session.exec(select(DtmfAnswer)).one()
    assert (answer.digits, answer.choice, answer.valid) == ("2", "cancel", True)
    assert _stored(settings, attempt)[1].result == "dtmf_answered"


def test_an_answer_arriving_after_completed_still_counts(settings: Settings, attempt: Attempt) -> None:
    _send(settings, attempt, "event", status="completed")
    _send(settings, attempt, "input", dtmf={"digits": "1", "timed_out": False})
    assert _stored(settings, attempt)[1].result == "dtmf_answered"


def test_an_unknown_token_is_refused_before_anything_is_stored(settings: Settings, attempt: Attempt) -> None:
    forged = attempt.model_copy(update={"callback_token": "guessed"})
    with pytest.raises(WebhookAuthError):
        _send(settings, forged, "event", status="completed")
    with db.session_scope(settings.database_url) as session:
        assert session.exec(select(WebhookEvent)).all() == []


def test_a_machines_beep_is_answered_with_the_message_and_the_call_ends_as_machine(
    settings: Settings, attempt: Attempt
) -> None:
    _send(settings, attempt, "event", status="answered")
    assert _send(settings, attempt, "event", status="machine") is None  # detected: nothing yet
    reply = _send(settings, attempt, "event", status="machine", sub_state="beep_start")
    assert reply == [{"action": "talk", "text": "Hello Ada, this is a reminder.", "language": "en-US"}]
    _send(settings, attempt, "event", status="completed", duration="21")
    row, contact = _stored(settings, attempt)
    assert (row.status, row.answered_by) == ("machine", "machine")
    assert contact.attempts == 1 and contact.state in ("pending", "done")
