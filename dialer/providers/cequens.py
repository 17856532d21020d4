"""Cequens "call with user input": one call playing TTS or an audio URL, optional DTMF collection.

Auth: ``POST /auth/v1/tokens/`` with ``{"apiKey", "userName"}`` answers a JWT in
``data.access_token``; it is sent as a bearer token and renewed at its ``exp`` or on a 401.
Callbacks are unsigned; the per-call status and DTMF URLs carry the attempt's secret token.

Choices where the public documents are silent (kept here, easy to correct):
- The call path is ``settings.call_path`` (default ``/voice/v1/calls``); its answer uses the
  sign-in envelope with the call id in ``data.callId`` and ``replyCode`` 0 for success.
- Status callbacks are POSTed JSON ``{"callId", "status", "duration", "timestamp"}`` with
  statuses ``initiated, ringing, answered, completed, busy, no-answer, failed, rejected``.
- The DTMF callback is a GET with ``callId`` and ``digits`` in the query, once per call.
- ``sayText`` is required: an audio campaign sends its question's prompt there (or nothing).
- ``repeat`` is the question's number of attempts (1 without a question); the voice is
  ``voiceName`` when the campaign names one, else Cequens's default (Zeina).
- A token whose ``exp`` cannot be read is renewed after an hour; the rate limit is taken as 10/s.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jwt

from campaigns.outcomes import AttemptStatus
from dialer.errors import ConfigurationError, ProviderRejected, ProviderTimeout, WebhookPayloadError
from dialer.providers.base import CallEvent, CallOrder, Capabilities, Provider, Token, Webhook
from dialer.settings import CequensSettings

DEFAULT_TOKEN_LIFETIME = 3600.0

#: Cequens call statuses in the common vocabulary.
STATUSES: dict[str, AttemptStatus] = {
    "initiated": AttemptStatus.DIALING,
    "ringing": AttemptStatus.RINGING,
    "answered": AttemptStatus.ANSWERED,
    "completed": AttemptStatus.COMPLETED,
    "busy": AttemptStatus.BUSY,
    "no-answer": AttemptStatus.NO_ANSWER,
    "failed": AttemptStatus.FAILED,
    "rejected": AttemptStatus.REJECTED,
}


def sign_in(settings: CequensSettings) -> httpx.Request:
    if settings.api_key is None or not settings.user_name:
        raise ConfigurationError("DIALER_CEQUENS__API_KEY and DIALER_CEQUENS__USER_NAME are not set")
    body = {"apiKey": settings.api_key.get_secret_value(), "userName": settings.user_name}
    return httpx.Request("POST", f"{settings.base_url}/auth/v1/tokens/", json=body)


def parse_sign_in(response: httpx.Response) -> Token:
    value = str(response.json()["data"]["access_token"])
    try:
        claims = jwt.decode(value, options={"verify_signature": False})
        lifetime = float(claims["exp"]) - float(claims.get("iat") or claims["exp"] - DEFAULT_TOKEN_LIFETIME)
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        lifetime = DEFAULT_TOKEN_LIFETIME
    return Token(value=value, lifetime=lifetime)


def build_call(order: CallOrder, settings: CequensSettings, token: str | None = None) -> httpx.Request:
    question = order.question
    spoken = [order.text] if order.text else []
    if question is not None:
        spoken.append(question.prompt)
    body: dict[str, Any] = {
        "recipient": order.to,
        "sayText": " ".join(spoken),
        "neural": False,
        "repeat": question.attempts if question else 1,
        "timeout": order.ring_timeout,
        "collectInput": question is not None,
        "statusCallbackEndpoint": f"{order.callback_url}/status",
        "metaData": {"key": "attempt", "value": order.reference},
    }
    if order.voice:
        body["voiceName"] = order.voice
    if order.audio_url:
        body["audioUrl"] = order.audio_url
    if question is not None:
        body["dtmfCallbackEndpoint"] = f"{order.callback_url}/dtmf"
    return httpx.Request(
        "POST",
        f"{settings.base_url}{settings.call_path}",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def parse_call(response: httpx.Response) -> str:
    try:
        envelope = response.json()
        code, data = envelope.get("replyCode"), envelope.get("data") or {}
    except (ValueError, AttributeError):
        raise ProviderTimeout(f"Cequens answer is not JSON: {response.text[:200]}") from None
    if code != 0:
        raise ProviderRejected(f"Cequens refused the call: {envelope.get('replyMessage') or code}")
    if not data.get("callId"):
        raise ProviderTimeout(f"Cequens answer has no call id: {response.text[:200]}")
    return str(data["callId"])


def error_detail(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return str(error.get("description") or error)
    except (ValueError, KeyError, TypeError, AttributeError):
        return response.text[:200] or response.reason_phrase


def verify_webhook(webhook: Webhook, settings: CequensSettings) -> None:
    """Cequens does not sign callbacks: the attempt's secret token in the URL authenticates them."""


def parse_webhook(webhook: Webhook) -> CallEvent:
    if webhook.kind == "dtmf":
        return CallEvent(
            call_id=webhook.query.get("callId"), digits=webhook.query.get("digits", ""), input_complete=True
        )
    if webhook.kind != "status":
        raise WebhookPayloadError(f"Cequens sends no {webhook.kind!r} callback")
    try:
        payload = json.loads(webhook.body)
        name = str(payload["status"]).lower()
    except (ValueError, KeyError, TypeError):
        raise WebhookPayloadError("Cequens status callback without a status") from None
    if name not in STATUSES:
        raise WebhookPayloadError(f"unknown Cequens status {name!r}")
    duration = payload.get("duration")
    return CallEvent(
        status=STATUSES[name],
        call_id=payload.get("callId"),
        duration=int(duration) if duration not in (None, "") else None,
    )


PROVIDER = Provider(
    name="cequens",
    title="Cequens",
    capabilities=Capabilities(tts=True, ssml=False, audio=True, dtmf=True),
    default_rate_limit=10.0,
    build_call=build_call,
    parse_call=parse_call,
    verify_webhook=verify_webhook,
    parse_webhook=parse_webhook,
    error_detail=error_detail,
    webhook_kinds=("status", "dtmf"),
    sign_in=sign_in,
    parse_sign_in=parse_sign_in,
)
