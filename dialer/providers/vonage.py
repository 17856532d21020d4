"""Vonage Voice API v1.

Requests carry an application JWT (RS256, signed with the application's private key; claims
``application_id``, ``iat``, ``jti``, ``exp``). A call runs an NCCO: ``talk`` for TTS, ``stream`` for
audio, then optionally ``talk`` + ``input`` for a DTMF question. Callbacks are signed by Vonage: an
``Authorization: Bearer`` JWT (HS256, the account's signature secret) whose ``payload_hash`` is the
SHA-256 of the body; we also put the attempt's token in the callback path.

Choices where the public documents are silent (kept here, easy to correct):
- ``payload_hash`` is compared as a hex digest.
- Vonage's ``cancelled`` status maps to our ``cancelled`` outcome (not retried).
- ``disconnected``, ``human`` and ``machine`` carry no outcome of their own; ``machine`` marks the
  attempt as answered by a machine, so its ``completed`` becomes our ``machine``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from functools import lru_cache
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from campaigns.outcomes import AttemptStatus
from dialer.errors import ConfigurationError, WebhookAuthError, WebhookPayloadError
from dialer.providers.base import (
    CallEvent,
    CallOrder,
    Capabilities,
    InputVerdict,
    Provider,
    Webhook,
    call_id_at,
    json_detail,
)
from dialer.settings import VonageSettings

API_JWT_LIFETIME = 15 * 60
WEBHOOK_JWT_MAX_AGE = 5 * 60

#: Vonage event statuses in the common vocabulary; None means "no change of outcome".
STATUSES: dict[str, AttemptStatus | None] = {
    "started": AttemptStatus.DIALING,
    "ringing": AttemptStatus.RINGING,
    "answered": AttemptStatus.ANSWERED,
    "completed": AttemptStatus.COMPLETED,
    "busy": AttemptStatus.BUSY,
    "timeout": AttemptStatus.NO_ANSWER,
    "unanswered": AttemptStatus.NO_ANSWER,
    "cancelled": AttemptStatus.CANCELLED,
    "rejected": AttemptStatus.REJECTED,
    "failed": AttemptStatus.FAILED,
    "human": None,
    "machine": None,
    "disconnected": None,
}


@lru_cache(maxsize=4)
def _signing_key(pem: str) -> RSAPrivateKey:
    """The application's RSA key, parsed once: parsing checks the key, which costs some fifty
    times the signature itself (PyJWT would parse a PEM string again on every call)."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as error:
        raise ConfigurationError(
            f"DIALER_VONAGE__PRIVATE_KEY is not a usable PEM private key: {error}"
        ) from None
    if not isinstance(key, RSAPrivateKey):
        raise ConfigurationError("DIALER_VONAGE__PRIVATE_KEY must be an RSA key (Vonage signs with RS256)")
    return key


def api_token(settings: VonageSettings, *, now: float | None = None) -> str:
    """An application JWT for one request."""
    pem = settings.private_key_pem()
    if pem is None:
        raise ConfigurationError("DIALER_VONAGE__PRIVATE_KEY is not set (PEM text or a file path)")
    key = _signing_key(pem)
    issued = int(now if now is not None else time.time())
    claims = {
        "application_id": settings.application_id,
        "iat": issued,
        "jti": str(uuid.uuid4()),
        "exp": issued + API_JWT_LIFETIME,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"typ": "JWT"})


def _digits(e164: str) -> str:
    return e164.removeprefix("+")


def ncco(order: CallOrder) -> list[dict[str, Any]]:
    """The call-control object: the message, then the question and its DTMF input."""
    actions: list[dict[str, Any]] = []
    if order.text is not None:
        talk: dict[str, Any] = {"action": "talk", "text": order.text, "language": order.language}
        if order.voice:
            talk["style"] = int(order.voice) if order.voice.isdigit() else 0
        actions.append(talk)
    if order.audio_url is not None:
        actions.append({"action": "stream", "streamUrl": [order.audio_url]})
    if order.question is not None:
        actions += _question_actions(order.question, order.callback_url, order.language)
    return actions


def _question_actions(question: Any, callback_url: str, language: str) -> list[dict[str, Any]]:
    if question.prompt_audio_url:
        prompt = {"action": "stream", "streamUrl": [question.prompt_audio_url], "bargeIn": True}
    else:
        prompt = {"action": "talk", "text": question.prompt, "language": language, "bargeIn": True}
    return [
        prompt,
        {
            "action": "input",
            "type": ["dtmf"],
            "dtmf": {
                "maxDigits": question.max_digits,
                "timeOut": int(question.timeout.total_seconds()),
                "submitOnHash": question.terminator == "#",
            },
            "eventUrl": [f"{callback_url}/input"],
            "eventMethod": "POST",
        },
    ]


def build_call(order: CallOrder, settings: VonageSettings, token: str | None = None) -> httpx.Request:
    body = {
        "to": [{"type": "phone", "number": _digits(order.to)}],
        "from": {"type": "phone", "number": _digits(order.caller_id)},
        "ncco": ncco(order),
        "event_url": [f"{order.callback_url}/event"],
        "event_method": "POST",
        "machine_detection": "continue",
        "ringing_timer": order.ring_timeout,
    }
    return httpx.Request(
        "POST",
        f"{settings.base_url}/v1/calls",
        json=body,
        headers={"Authorization": f"Bearer {api_token(settings)}", "Accept": "application/json"},
    )


def parse_call(response: httpx.Response) -> str:
    return call_id_at(response, "uuid", provider="Vonage")


def build_lookup(call_id: str, settings: VonageSettings, token: str | None = None) -> httpx.Request:
    return httpx.Request(
        "GET",
        f"{settings.base_url}/v1/calls/{call_id}",
        headers={"Authorization": f"Bearer {api_token(settings)}", "Accept": "application/json"},
    )


def parse_lookup(response: httpx.Response) -> CallEvent:
    return _event(response.json())


def error_detail(response: httpx.Response) -> str:
    """The problem's detail, with each invalid parameter's reason when Vonage lists them."""
    detail = json_detail(response, "detail", "title")
    try:
        invalid = response.json().get("invalid_parameters") or []
    except (ValueError, AttributeError):
        return detail
    reasons = [f"{p.get('name')}: {p.get('reason')}" for p in invalid if isinstance(p, dict)]
    return f"{detail} ({'; '.join(reasons)})" if reasons else detail


def verify_webhook(webhook: Webhook, settings: VonageSettings) -> None:
    if settings.signature_secret is None:
        raise ConfigurationError("DIALER_VONAGE__SIGNATURE_SECRET is not set")
    header = webhook.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        raise WebhookAuthError("Vonage callback without a signed JWT")
    try:
        claims = jwt.decode(
            header.removeprefix("Bearer "),
            settings.signature_secret.get_secret_value(),
            algorithms=["HS256"],
            options={"require": ["iat", "payload_hash", "api_key"]},
        )
    except jwt.PyJWTError as error:
        raise WebhookAuthError(f"Vonage callback JWT does not verify: {error}") from None
    if claims["api_key"] != settings.api_key:
        raise WebhookAuthError("Vonage callback signed for another account")
    if abs(time.time() - float(claims["iat"])) > WEBHOOK_JWT_MAX_AGE:
        raise WebhookAuthError("Vonage callback JWT is too old")
    if not hmac.compare_digest(str(claims["payload_hash"]), hashlib.sha256(webhook.body).hexdigest()):
        raise WebhookAuthError("Vonage callback body does not match its payload_hash")


def _event(payload: Any) -> CallEvent:
    if not isinstance(payload, dict) or not isinstance(payload.get("status"), str):
        raise WebhookPayloadError("Vonage event without a status")
    name = payload["status"]
    if name not in STATUSES:
        raise WebhookPayloadError(f"unknown Vonage status {name!r}")
    duration = payload.get("duration")
    return CallEvent(
        status=STATUSES[name],
        call_id=payload.get("uuid") or payload.get("call_uuid"),
        answered_by="machine" if name == "machine" else "human" if name == "human" else None,
        duration=int(duration) if duration not in (None, "") else None,
        price=payload.get("price"),
        reason=payload.get("detail") or payload.get("reason"),
    )


def parse_webhook(webhook: Webhook) -> CallEvent:
    try:
        payload = json.loads(webhook.body)
    except ValueError:
        raise WebhookPayloadError("Vonage callback body is not JSON") from None
    if webhook.kind == "event":
        return _event(payload)
    if webhook.kind == "input":
        dtmf = payload.get("dtmf") if isinstance(payload, dict) else None
        if not isinstance(dtmf, dict):
            raise WebhookPayloadError("Vonage input callback without dtmf")
        return CallEvent(
            call_id=payload.get("uuid"), digits=str(dtmf.get("digits") or ""), input_complete=True
        )
    raise WebhookPayloadError(f"Vonage sends no {webhook.kind!r} callback")


def reply_to_input(verdict: InputVerdict) -> list[dict[str, Any]]:
    """The NCCO that replaces the running one after input: thank, or ask again."""
    question = verdict.question
    if verdict.outcome == "retry":
        return [
            {"action": "talk", "text": question.invalid_prompt, "language": verdict.language},
            *_question_actions(question, verdict.callback_url, verdict.language),
        ]
    return [{"action": "talk", "text": question.final_prompt, "language": verdict.language}]


PROVIDER = Provider(
    name="vonage",
    title="Vonage",
    capabilities=Capabilities(tts=True, ssml=True, audio=True, dtmf=True, machine_detection=True),
    default_rate_limit=3.0,
    build_call=build_call,
    parse_call=parse_call,
    verify_webhook=verify_webhook,
    parse_webhook=parse_webhook,
    error_detail=error_detail,
    build_lookup=build_lookup,
    parse_lookup=parse_lookup,
    reply_to_input=reply_to_input,
    webhook_kinds=("event", "input"),
)
