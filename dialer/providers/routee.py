"""Routee voice conversations: a dial plan of SAY, PLAY and COLLECT verbs, OAuth2 bearer tokens.

The token comes from ``POST {auth_url}/oauth/token`` (HTTP Basic with the application id and
secret, ``grant_type=client_credentials``) and lives ``expires_in`` seconds; a 401 gets a new one.
Status callbacks (``OnChange``) and COLLECT and machine-detection events are unsigned: their URLs
carry the attempt's secret token. COLLECT and machine events expect a dial plan in reply.

Choices where the public documents are silent (kept here, easy to correct):
- A verb is an object with ``type`` (``SAY``, ``PLAY``, ``COLLECT``, ``PAUSE``, ``DIAL``).
- COLLECT and machine events carry ``conversationTrackingId``, ``collectedTones`` / ``answeredBy``.
- ``Unknown`` changes nothing (the sweeper settles the attempt), ``Unsent`` is ``rejected`` and
  ``Terminated`` is ``failed``.
- The status look-up is ``GET /voice/tracking/{trackingId}`` answering like a status callback.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from campaigns.outcomes import AttemptStatus
from campaigns.spec import Question
from dialer.errors import ConfigurationError, WebhookPayloadError
from dialer.providers.base import (
    CallEvent,
    CallOrder,
    Capabilities,
    InputVerdict,
    Provider,
    Token,
    Webhook,
    call_id_at,
    json_detail,
)
from dialer.settings import RouteeSettings

#: Routee's ``status.name`` in the common vocabulary; None means "no change of outcome".
STATUSES: dict[str, AttemptStatus | None] = {
    "Queued": None,
    "Initiated": AttemptStatus.DIALING,
    "Ringing": AttemptStatus.RINGING,
    "InProgress": AttemptStatus.ANSWERED,
    "Completed": AttemptStatus.COMPLETED,
    "Busy": AttemptStatus.BUSY,
    "NoAnswer": AttemptStatus.NO_ANSWER,
    "Failed": AttemptStatus.FAILED,
    "Unknown": None,
    "Unsent": AttemptStatus.REJECTED,
    "Terminated": AttemptStatus.FAILED,
}


def sign_in(settings: RouteeSettings) -> httpx.Request:
    if settings.application_secret is None or not settings.application_id:
        raise ConfigurationError("DIALER_ROUTEE__APPLICATION_ID and __APPLICATION_SECRET are not set")
    pair = f"{settings.application_id}:{settings.application_secret.get_secret_value()}"
    return httpx.Request(
        "POST",
        f"{settings.auth_url}/oauth/token",
        headers={"Authorization": f"Basic {base64.b64encode(pair.encode()).decode()}"},
        data={"grant_type": "client_credentials"},
    )


def parse_sign_in(response: httpx.Response) -> Token:
    body = response.json()
    return Token(value=str(body["access_token"]), lifetime=float(body.get("expires_in") or 3600))


def _say(text: str, language: str, voice: str | None, *, barge_in: bool = False) -> dict[str, Any]:
    gender = voice if voice in ("male", "female") else "female"
    return {
        "type": "SAY",
        "message": {"text": text, "language": language, "gender": gender},
        "bargeIn": barge_in,
    }


def _ask(question: Question, callback_url: str, language: str, voice: str | None) -> list[dict[str, Any]]:
    if question.prompt_audio_url:
        prompt = {"type": "PLAY", "fileURL": question.prompt_audio_url, "bargeIn": True}
    else:
        prompt = _say(question.prompt, language, voice, barge_in=True)
    collect = {
        "type": "COLLECT",
        "eventUrl": f"{callback_url}/collect",
        "maxDigits": question.max_digits,
        "submitOnHash": question.terminator == "#",
    }
    return [prompt, collect]


def message_verbs(
    text: str | None, audio_url: str | None, language: str, voice: str | None
) -> list[dict[str, Any]]:
    if audio_url is not None:
        return [{"type": "PLAY", "fileURL": audio_url}]
    return [_say(text or "", language, voice)]


def build_call(order: CallOrder, settings: RouteeSettings, token: str | None = None) -> httpx.Request:
    verbs = message_verbs(order.text, order.audio_url, order.language, order.voice)
    if order.question is not None:
        verbs += _ask(order.question, order.callback_url, order.language, order.voice)
    body = {
        "from": order.caller_id,
        "to": {"phone": order.to},
        "dialPlan": {"verbs": verbs},
        "callback": {"url": f"{order.callback_url}/status", "strategy": "OnChange"},
        "hangupDelay": max(1, min(60, order.ring_timeout)),
        "machineDetection": {"strategy": "Continue", "eventUrl": f"{order.callback_url}/machine"},
    }
    return httpx.Request(
        "POST",
        f"{settings.base_url}/voice/conversation",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )


def parse_call(response: httpx.Response) -> str:
    return call_id_at(response, "trackingId", provider="Routee")


def build_lookup(call_id: str, settings: RouteeSettings, token: str | None = None) -> httpx.Request:
    return httpx.Request(
        "GET", f"{settings.base_url}/voice/tracking/{call_id}", headers={"Authorization": f"Bearer {token}"}
    )


def error_detail(response: httpx.Response) -> str:
    return json_detail(response, "developerMessage", "error_description", "error")


def verify_webhook(webhook: Webhook, settings: RouteeSettings) -> None:
    """Routee does not sign callbacks: the attempt's secret token in the URL authenticates them."""


def _status(payload: dict[str, Any]) -> CallEvent:
    status = payload.get("status")
    name = status.get("name") if isinstance(status, dict) else None
    if name not in STATUSES:
        raise WebhookPayloadError(f"unknown Routee status {name!r}")
    duration = payload.get("duration")
    price = payload.get("price")
    return CallEvent(
        status=STATUSES[name],
        call_id=payload.get("conversationTrackingId"),
        duration=int(duration) if duration not in (None, "") else None,
        price=str(price) if price not in (None, "") else None,
    )


def parse_webhook(webhook: Webhook) -> CallEvent:
    try:
        payload = json.loads(webhook.body)
    except ValueError:
        raise WebhookPayloadError("Routee callback body is not JSON") from None
    if not isinstance(payload, dict):
        raise WebhookPayloadError("Routee callback body is not an object")
    call_id = payload.get("conversationTrackingId")
    if webhook.kind == "status":
        return _status(payload)
    if webhook.kind == "collect":
        return CallEvent(
            call_id=call_id, digits=str(payload.get("collectedTones") or ""), input_complete=True
        )
    if webhook.kind == "machine":
        return CallEvent(call_id=call_id, answered_by="machine")
    raise WebhookPayloadError(f"Routee sends no {webhook.kind!r} callback")


def parse_lookup(response: httpx.Response) -> CallEvent:
    return _status(response.json())


def reply_to_input(verdict: InputVerdict) -> dict[str, Any]:
    """The dial plan that replaces the running one after COLLECT: thank, or ask again."""
    question = verdict.question
    if verdict.outcome == "retry":
        verbs = [_say(question.invalid_prompt, verdict.language, None)]
        return {"verbs": verbs + _ask(question, verdict.callback_url, verdict.language, None)}
    return {"verbs": [_say(question.final_prompt, verdict.language, None)]}


def reply_to_machine(text: str | None, audio_url: str | None, language: str) -> dict[str, Any]:
    """On voicemail: leave the message, skip the question."""
    return {"verbs": message_verbs(text, audio_url, language, None)}


PROVIDER = Provider(
    name="routee",
    title="Routee",
    capabilities=Capabilities(
        tts=True,
        ssml=False,
        audio=True,
        dtmf=True,
        machine_detection=True,
        audio_formats=(".wav",),
    ),
    default_rate_limit=1.0,
    build_call=build_call,
    parse_call=parse_call,
    verify_webhook=verify_webhook,
    parse_webhook=parse_webhook,
    error_detail=error_detail,
    build_lookup=build_lookup,
    parse_lookup=parse_lookup,
    reply_to_input=reply_to_input,
    reply_to_machine=reply_to_machine,
    webhook_kinds=("status", "collect", "machine"),
    sign_in=sign_in,
    parse_sign_in=parse_sign_in,
)
