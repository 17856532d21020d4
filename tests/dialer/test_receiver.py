"""The receiver as deployed (its ASGI app over HTTP): how each provider's callbacks are taken."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlmodel import select

from dialer import db
from dialer.embedded import BackgroundServer
from dialer.models import Attempt, WebhookEvent
from dialer.receiver import create_app
from dialer.settings import Settings
from dialer.simulators.vonage import sign_webhook
from tests.dialer.factories import campaign_with_contacts, queued_attempts

EVENT = {"uuid": "call-1", "status": "answered", "from": "14155550100", "to": "12125550106"}


@contextmanager
def receiver(settings: Settings) -> Iterator[httpx.Client]:
    """``dialer serve``'s app on a loopback port, and a client for it."""
    with BackgroundServer(create_app(settings)) as server, httpx.Client(base_url=server.url) as client:
        yield client


def _attempt(settings: Settings) -> Attempt:
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"])
    return queued_attempts(settings.database_url, campaign, 1)[0]


def _stored(settings: Settings) -> list[WebhookEvent]:
    with db.session_scope(settings.database_url) as session:
        return list(session.exec(select(WebhookEvent)).all())


def test_an_unsigned_vonage_callback_is_recorded_on_its_token(settings: Settings) -> None:
    attempt = _attempt(settings)
    with receiver(settings) as client:
        answer = client.post(f"/webhooks/vonage/{attempt.callback_token}/event", json=EVENT)
        forged = client.post("/webhooks/vonage/not-a-token/event", json=EVENT)
    assert (answer.status_code, forged.status_code) == (204, 401)
    assert [event.attempt_id for event in _stored(settings)] == [attempt.id]


def test_with_signatures_required_an_unsigned_one_gets_a_503_and_a_signed_one_is_recorded(
    settings: Settings,
) -> None:
    attempt = _attempt(settings)
    required = settings.model_copy(
        update={"vonage": settings.vonage.model_copy(update={"require_signature": True})}
    )
    assert required.vonage.signature_secret is not None and required.vonage.api_key
    body = json.dumps(EVENT).encode()
    token = sign_webhook(
        body, secret=required.vonage.signature_secret.get_secret_value(), api_key=required.vonage.api_key
    )
    url = f"/webhooks/vonage/{attempt.callback_token}/event"
    with receiver(required) as client:
        unsigned = client.post(url, content=body, headers={"Content-Type": "application/json"})
        assert unsigned.status_code == 503  # Vonage sends it again
        assert _stored(settings) == []
        signed = client.post(url, content=body, headers={"Authorization": f"Bearer {token}"})
    assert signed.status_code == 204
    assert len(_stored(settings)) == 1


def test_a_cm_callback_with_an_alphanumeric_sip_code_is_taken(settings: Settings) -> None:
    campaign = campaign_with_contacts(settings.database_url, ["+12125550106"], provider="cm", name="cm")
    (attempt,) = queued_attempts(settings.database_url, campaign, 1)
    body = {
        "type": "dtmf-finished",
        "call-id": "c-1",
        "result": {"code": 11, "description": "failed", "sip-disconnect-code": "BYE"},
    }
    with receiver(settings) as client:
        answer = client.post(f"/webhooks/cm/{attempt.callback_token}/callback", json=body)
    assert answer.status_code == 204
    with db.session_scope(settings.database_url) as session:
        stored = session.get(Attempt, attempt.id)
    assert stored is not None and (stored.status, stored.reason) == ("failed", "failed (SIP BYE)")
