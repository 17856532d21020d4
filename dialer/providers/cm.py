"""CM.com Voice API (``/voiceapi/v2``): the DTMF instruction, or a Notification without a question.

Auth is the account's product token in the ``X-CM-PRODUCTTOKEN`` header. CM.com posts one callback
when the call is over; it is unsigned, so its URL carries the attempt's secret token.

Choices where the public documents are silent (kept here, easy to correct):
- The callback's DTMF fields are ``digits``, ``valid`` and ``attempts``, and its times are
  ``started-on``, ``answered-on`` and ``ended-on`` (ISO 8601); a Notification's callback has
  ``type: notification-finished``.
- ``result.code`` 12 (rejected) with SIP disconnect code 486 or 600 means busy.
- A non-2xx error body is ``{"message": ...}``; CM.com's rate limit is taken as 10 calls per second.
- The question's choices, when given, become the ``regex`` (``1|2``); else its pattern is sent.
- An audio prompt must be a file in CM.com's Voice Audio Manager, not a URL: audio URLs are refused.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import httpx

from campaigns.outcomes import AttemptStatus
from dialer.errors import ProviderRejected, WebhookPayloadError
from dialer.providers.base import (
    CallEvent,
    CallOrder,
    Capabilities,
    Provider,
    Webhook,
    call_id_at,
    json_detail,
)
from dialer.settings import CmSettings

#: ``result.code`` of the callback in the common vocabulary.
RESULT_CODES: dict[int, AttemptStatus] = {
    9: AttemptStatus.NO_ANSWER,  # cancelled: not answered in time
    10: AttemptStatus.COMPLETED,  # finished
    11: AttemptStatus.FAILED,
    12: AttemptStatus.REJECTED,
}
BUSY_SIP_CODES = frozenset({486, 600})


def _headers(settings: CmSettings) -> dict[str, str]:
    token = settings.product_token.get_secret_value() if settings.product_token else ""
    return {"X-CM-PRODUCTTOKEN": token, "Content-Type": "application/json", "Accept": "application/json"}


def build_call(order: CallOrder, settings: CmSettings, token: str | None = None) -> httpx.Request:
    prompt_type = "TTS_SSML" if order.ssml else "TTS"
    body: dict[str, Any] = {
        "instruction-id": order.reference[:64],
        "callee": order.to,
        "caller": order.caller_id,
        "prompt": order.text or "",
        "prompt-type": prompt_type,
        "voice": {"language": order.language, "gender": order.voice or "Female", "number": 1},
        "callback-url": f"{order.callback_url}/callback",
        "max-ringing-timeout": max(10, min(60, order.ring_timeout)),
    }
    question = order.question
    if question is None:
        return httpx.Request(
            "POST", f"{settings.base_url}/voiceapi/v2/Notification", json=body, headers=_headers(settings)
        )
    body |= {
        "prompt": " ".join(part for part in (order.text, question.prompt) if part),
        "valid-prompt": question.final_prompt,
        "valid-prompt-type": "TTS",
        "invalid-prompt": question.invalid_prompt,
        "invalid-prompt-type": "TTS",
        "min-digits": question.min_digits,
        "max-digits": question.max_digits,
        "max-attempts": question.attempts,
        "timeout": int(question.timeout.total_seconds() * 1000),
        "terminators": question.terminator or "#",
        "regex": "|".join(re.escape(key) for key in question.choices)
        if question.choices
        else question.pattern,
    }
    return httpx.Request(
        "POST", f"{settings.base_url}/voiceapi/v2/DTMF", json=body, headers=_headers(settings)
    )


def parse_call(response: httpx.Response) -> str:
    try:
        event = response.json()[0]
        refused = not event.get("success", False)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        refused = False
    if refused:
        raise ProviderRejected(f"CM.com refused the call: {event.get('error') or 'no reason given'}")
    return call_id_at(response, 0, "call-id", provider="CM.com")


def error_detail(response: httpx.Response) -> str:
    return json_detail(response, "message", "error", "detail")


def verify_webhook(webhook: Webhook, settings: CmSettings) -> None:
    """CM.com does not sign callbacks: the attempt's secret token in the URL authenticates them."""


def _seconds(payload: dict[str, Any], start: str, end: str) -> int | None:
    try:
        return round(
            (datetime.fromisoformat(payload[end]) - datetime.fromisoformat(payload[start])).total_seconds()
        )
    except (KeyError, TypeError, ValueError):
        return None


def parse_webhook(webhook: Webhook) -> CallEvent:
    try:
        payload = json.loads(webhook.body)
        result = payload["result"]
        code = int(result["code"])
    except (ValueError, KeyError, TypeError):
        raise WebhookPayloadError("CM.com callback without a result code") from None
    if code not in RESULT_CODES:
        raise WebhookPayloadError(f"unknown CM.com result code {code}")
    status = RESULT_CODES[code]
    if status == AttemptStatus.REJECTED and int(result.get("sip-disconnect-code") or 0) in BUSY_SIP_CODES:
        status = AttemptStatus.BUSY
    asked = payload.get("type") == "dtmf-finished" and status == AttemptStatus.COMPLETED
    return CallEvent(
        status=status,
        call_id=payload.get("call-id"),
        digits=str(payload.get("digits") or "") if asked else None,
        input_complete=asked,
        duration=_seconds(payload, "answered-on", "ended-on") if status == AttemptStatus.COMPLETED else None,
        reason=result.get("description") if status != AttemptStatus.COMPLETED else None,
    )


PROVIDER = Provider(
    name="cm",
    title="CM.com",
    capabilities=Capabilities(tts=True, ssml=True, audio=False, dtmf=True, machine_detection=False),
    default_rate_limit=10.0,
    build_call=build_call,
    parse_call=parse_call,
    verify_webhook=verify_webhook,
    parse_webhook=parse_webhook,
    error_detail=error_detail,
    webhook_kinds=("callback",),
)
