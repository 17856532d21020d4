"""Fractel FoneStorm: a voice call from a FoneNumber to TTS text (SSML allowed) or a WAV file.

Auth: ``POST /v2/auth`` with ``username``, ``password`` and ``expires`` answers a JWT (in
``authorization.token``, or ``auth.token`` in the 2.4 spec), sent as the ``token`` header.
Callbacks are configured per FoneNumber, not per call: ``POST /v2/calls/send_notify`` registers
our URL once per caller ID, with HTTP Basic credentials that authenticate Fractel's callbacks, and
each callback names its call by ``uid``. Fractel has no DTMF collection: campaigns with a question
are refused at ``campaign create``.

Choices where the public documents are silent (kept here, easy to correct):
- The send-call path is ``/v2/calls`` and ``fonenumber`` is the caller ID's digits.
- ``BEGIN`` means the call is being placed (``dialing``); ``END`` carries the disposition.
- Numbers are dialled as the documents say: US and Canada ``1`` + 10 digits, others ``011`` +
  country code + number.
"""

from __future__ import annotations

import base64
import hmac
import json
from typing import Any

import httpx

from campaigns.outcomes import AttemptStatus
from dialer.errors import ConfigurationError, WebhookAuthError, WebhookPayloadError
from dialer.providers.base import (
    CallEvent,
    CallOrder,
    Capabilities,
    Provider,
    Token,
    Webhook,
    call_id_at,
    json_detail,
)
from dialer.settings import FractelSettings

TOKEN_LIFETIME = 3600

#: ``disposition`` of an END callback in the common vocabulary (``FAILED:###`` counts as FAILED).
DISPOSITIONS: dict[str, AttemptStatus] = {
    "ANSWERED": AttemptStatus.COMPLETED,
    "NO_ANSWER": AttemptStatus.NO_ANSWER,
    "REJECTED": AttemptStatus.REJECTED,
    "BUSY": AttemptStatus.BUSY,
    "CANCEL": AttemptStatus.CANCELLED,
    "INVALID": AttemptStatus.REJECTED,
    "FAILED": AttemptStatus.FAILED,
}


def dial_string(e164: str) -> str:
    """How Fractel wants a number dialled: 1 + 10 digits in North America, else 011 + the rest."""
    digits = e164.removeprefix("+")
    return digits if digits.startswith("1") else f"011{digits}"


def sign_in(settings: FractelSettings) -> httpx.Request:
    if settings.password is None or not settings.username:
        raise ConfigurationError("DIALER_FRACTEL__USERNAME and DIALER_FRACTEL__PASSWORD are not set")
    body = {
        "username": settings.username,
        "password": settings.password.get_secret_value(),
        "expires": TOKEN_LIFETIME,
    }
    return httpx.Request("POST", f"{settings.base_url}/v2/auth", json=body)


def parse_sign_in(response: httpx.Response) -> Token:
    body = response.json()
    holder = body.get("authorization") or body.get("auth") or {}
    return Token(value=str(holder["token"]), lifetime=TOKEN_LIFETIME)


def setup(settings: FractelSettings, callback_url: str, token: str | None, caller_id: str) -> httpx.Request:
    """Register our callback URL for the FoneNumber the campaign calls from."""
    if settings.webhook_password is None:
        raise ConfigurationError("DIALER_FRACTEL__WEBHOOK_PASSWORD is not set")
    body = {
        "fonenumber": caller_id.removeprefix("+"),
        "url": f"{callback_url}/event",
        "method": "JSON",
        "url_username": settings.webhook_username,
        "url_password": settings.webhook_password.get_secret_value(),
    }
    return httpx.Request(
        "POST", f"{settings.base_url}/v2/calls/send_notify", json=body, headers={"token": token or ""}
    )


def build_call(order: CallOrder, settings: FractelSettings, token: str | None = None) -> httpx.Request:
    if order.audio_url is not None:
        service_type, service_id = "SoundFile", order.audio_url
    else:
        service_type, service_id = "TTS", order.text or ""
    body = {
        "fonenumber": order.caller_id.removeprefix("+"),
        "to": dial_string(order.to),
        "service_type": service_type,
        "service_id": service_id,
    }
    return httpx.Request("POST", f"{settings.base_url}/v2/calls", json=body, headers={"token": token or ""})


def parse_call(response: httpx.Response) -> str:
    return call_id_at(response, "call", "id", provider="Fractel")


def error_detail(response: httpx.Response) -> str:
    return json_detail(response, "message", "error")


def verify_webhook(webhook: Webhook, settings: FractelSettings) -> None:
    """Fractel sends the Basic credentials we registered with ``send_notify``."""
    if settings.webhook_password is None:
        raise ConfigurationError("DIALER_FRACTEL__WEBHOOK_PASSWORD is not set")
    pair = f"{settings.webhook_username}:{settings.webhook_password.get_secret_value()}"
    expected = f"Basic {base64.b64encode(pair.encode()).decode()}"
    if not hmac.compare_digest(webhook.headers.get("authorization", ""), expected):
        raise WebhookAuthError("Fractel callback without the registered credentials")


def parse_webhook(webhook: Webhook) -> CallEvent:
    try:
        payload: Any = json.loads(webhook.body) if webhook.method == "POST" else dict(webhook.query)
        state, call_id = payload["status"], payload["uid"]
    except (ValueError, KeyError, TypeError):
        raise WebhookPayloadError("Fractel callback without status and uid") from None
    if state == "BEGIN":
        return CallEvent(status=AttemptStatus.DIALING, call_id=call_id)
    if state != "END":
        raise WebhookPayloadError(f"unknown Fractel status {state!r}")
    disposition = str(payload.get("disposition", ""))
    status = DISPOSITIONS.get(disposition.split(":")[0])
    if status is None:
        raise WebhookPayloadError(f"unknown Fractel disposition {disposition!r}")
    seconds = payload.get("billable_seconds")
    return CallEvent(
        status=status,
        call_id=call_id,
        duration=int(seconds) if seconds not in (None, "") else None,
        reason=disposition if status != AttemptStatus.COMPLETED else None,
    )


PROVIDER = Provider(
    name="fractel",
    title="Fractel",
    capabilities=Capabilities(tts=True, ssml=True, audio=True, dtmf=False, audio_formats=(".wav",)),
    default_rate_limit=10.0,
    build_call=build_call,
    parse_call=parse_call,
    verify_webhook=verify_webhook,
    parse_webhook=parse_webhook,
    error_detail=error_detail,
    webhook_kinds=("event",),
    sign_in=sign_in,
    parse_sign_in=parse_sign_in,
    setup=setup,
    per_call_callbacks=False,
)
