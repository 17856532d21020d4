"""Fractel FoneStorm: a voice call from a FoneNumber to TTS text (SSML allowed), a WAV file, or another
number: a flow of messages, or a transfer alone (``service_type`` ``Phonenumber``: the callee is
put through once they answer; nothing can be said first, as a call has one destination). Its TTS
takes no language: only a flow's default, en-US, is accepted.

Auth: ``POST /v2/auth`` with ``username``, ``password`` and ``expires`` answers a JWT (in
``authorization.token``, or ``auth.token`` in the 2.4 spec), sent as the ``token`` header.
Callbacks are configured per FoneNumber, not per call: ``POST /v2/calls/send_notify`` registers
our URL once per caller ID, with HTTP Basic credentials that authenticate Fractel's callbacks, and
each callback names its call by ``uid``. Fractel has no DTMF collection: campaigns with a question
are refused at ``campaign create``. Requests are form-encoded, as the 2.4 spec's ``consumes``.

As the documents say: the caller ID (``fonenumber``) is one of the account's FoneNumbers, 10
digits (North American); numbers are dialled ``1`` + 10 digits in North America and ``011`` +
country code + number elsewhere, at most 15 digits, so a longer international number cannot be
dialled and is refused at import. The create request answers "when the call connects": it lasts
as long as the ringing, so it waits ``DIALER_FRACTEL__ANSWER_TIMEOUT`` seconds (90 by default)
rather than the usual HTTP timeout, and callbacks that arrive before its answer are held until
the call id is known.

Choices where the public documents are silent (kept here, easy to correct):
- The send-call path is ``/v2/calls`` (the 2.4 spec's) with the seed's ``to``, ``service_type``
  and ``service_id``.
- ``BEGIN`` means the call is being placed (``dialing``); ``END`` carries the disposition.
- A call that never connects (busy, not answered): the seed says only that the API "returns with
  the call ID" when the call connects. It may answer 201 all the same (its END callback then says
  how it ended), or a 4xx: an error whose text names a disposition (``BUSY``, ``NO_ANSWER``...) is
  then that call's outcome, retried as such, not a refusal. Any other 4xx is a refusal.
"""

from __future__ import annotations

import base64
import hmac
import re
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import httpx
from pydantic import StringConstraints

from campaigns.flow import start
from campaigns.outcomes import AttemptStatus
from campaigns.phones import is_e164
from campaigns.spec import CampaignSpec
from dialer.errors import ConfigurationError, ProviderRejected, WebhookAuthError, WebhookPayloadError
from dialer.providers.base import (
    CallEvent,
    CallOrder,
    Capabilities,
    Provider,
    Token,
    Webhook,
    call_id_at,
    flow_field,
    json_detail,
)
from dialer.providers.fields import Callback, CallId, Seconds, read
from dialer.settings import FractelSettings

TOKEN_LIFETIME = 3600
MAX_DIGITS = 15
"""The longest dial string the API takes."""

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


def check_number(e164: str) -> str | None:
    """Why Fractel cannot dial ``e164`` (its dial string would be too long), or None."""
    dialled = dial_string(e164)
    if len(dialled) > MAX_DIGITS:
        return (
            f"Fractel dials international numbers as 011 + country code + number, at most {MAX_DIGITS}"
            f" digits: this one would be {len(dialled)} ({dialled})"
        )
    return None


def fonenumber(e164: str) -> str:
    """A FoneNumber as the documents write it: the 10 digits of a North American number."""
    return e164.removeprefix("+1")


def sign_in(settings: FractelSettings) -> httpx.Request:
    if settings.password is None or not settings.username:
        raise ConfigurationError("DIALER_FRACTEL__USERNAME and DIALER_FRACTEL__PASSWORD are not set")
    body = {
        "username": settings.username,
        "password": settings.password.get_secret_value(),
        "expires": TOKEN_LIFETIME,
    }
    return httpx.Request("POST", f"{settings.base_url}/v2/auth", data=body)


def parse_sign_in(response: httpx.Response) -> Token:
    body = response.json()
    holder = body.get("authorization") or body.get("auth") or {}
    return Token(value=str(holder["token"]), lifetime=TOKEN_LIFETIME)


def setup(settings: FractelSettings, callback_url: str, token: str | None, caller_id: str) -> httpx.Request:
    """Register our callback URL for the FoneNumber the campaign calls from."""
    if settings.webhook_password is None:  # nothing we could take: refused, with one log line
        raise WebhookAuthError(
            "Fractel callbacks are not taken here: DIALER_FRACTEL__WEBHOOK_PASSWORD is not set"
        )
    body = {
        "fonenumber": fonenumber(caller_id),
        "url": f"{callback_url}/event",
        "method": "JSON",
        "url_username": settings.webhook_username,
        "url_password": settings.webhook_password.get_secret_value(),
    }
    return httpx.Request(
        "POST", f"{settings.base_url}/v2/calls/send_notify", data=body, headers={"token": token or ""}
    )


def _service(order: CallOrder) -> tuple[str, str]:
    """What the call connects the callee to: another number (a transfer, and nothing else), a
    sound file, or the steps' text spoken."""
    steps = [step for _, step in start(order.flow).steps]
    if steps[-1].action == "transfer":
        return "Phonenumber", dial_string(order.transfer_number(steps[-1]))
    audio = next((step.audio for step in steps if step.audio), None)
    if audio is not None:
        return "SoundFile", audio
    return "TTS", " ".join(text for step in steps if (text := order.text(step)))


def build_call(order: CallOrder, settings: FractelSettings, token: str | None = None) -> httpx.Request:
    if reason := check_number(order.to):
        raise ProviderRejected(reason)
    service_type, service_id = _service(order)
    body = {
        "fonenumber": fonenumber(order.caller_id),
        "to": dial_string(order.to),
        "service_type": service_type,
        "service_id": service_id,
    }
    # The answer comes when the call connects: wait for the ringing, not the usual few seconds.
    wait = settings.answer_timeout or 90.0
    timeout = httpx.Timeout(wait, connect=min(5.0, wait))
    return httpx.Request(
        "POST",
        f"{settings.base_url}/v2/calls",
        data=body,
        headers={"token": token or ""},
        extensions={"timeout": timeout.as_dict()},
    )


def parse_call(response: httpx.Response, settings: Any = None) -> str:
    return call_id_at(response, "call", "id", provider="Fractel")


def error_detail(response: httpx.Response) -> str:
    return json_detail(response, "message", "error")


def verify_webhook(webhook: Webhook, settings: FractelSettings) -> None:
    """Fractel sends the Basic credentials we registered with ``send_notify``."""
    if settings.webhook_password is None:  # none registered: nothing to take (401, one log line)
        raise WebhookAuthError(
            "no Fractel callbacks are taken here: DIALER_FRACTEL__WEBHOOK_PASSWORD is not set"
        )
    pair = f"{settings.webhook_username}:{settings.webhook_password.get_secret_value()}"
    expected = f"Basic {base64.b64encode(pair.encode()).decode()}"
    # As bytes: a header may hold any byte, and compare_digest refuses non-ASCII text.
    given = webhook.headers.get("authorization", "").encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, expected.encode()):
        raise WebhookAuthError("Fractel callback without the registered credentials")


class Event(Callback):
    """A call notification, however ``send_notify``'s method sent it."""

    uid: CallId
    status: Literal["BEGIN", "END"]
    disposition: Annotated[str, StringConstraints(pattern=r"^[A-Z_]{1,20}(:\d{1,3})?$")] | None = None
    billable_seconds: Seconds | None = None


def _fields(body: bytes) -> bytes | dict[str, str]:
    """A callback's data: JSON as it came, or the fields of a form or a query string (the
    receiver passes a GET's query as the body)."""
    if body.lstrip()[:1] in (b"{", b"["):
        return body
    return dict(parse_qsl(body.decode("utf-8", "replace")))


_NAMED = re.compile(r"\b(NO[ _]ANSWER|BUSY|CANCEL|FAILED|REJECTED)\b")


def unconnected(response: httpx.Response) -> AttemptStatus | None:
    """The disposition a 4xx answer to a create-call request names, if it names one."""
    found = _NAMED.search(error_detail(response).upper())
    return None if found is None else DISPOSITIONS[found[1].replace(" ", "_")]


def parse_webhook(webhook: Webhook, settings: Any = None) -> CallEvent:
    event = read(Event, _fields(webhook.body), what="Fractel callback")
    if event.status == "BEGIN":
        return CallEvent(status=AttemptStatus.DIALING, call_id=event.uid)
    disposition = event.disposition or ""
    status = DISPOSITIONS.get(disposition.split(":")[0])
    if status is None:
        raise WebhookPayloadError(f"Fractel callback: disposition: unknown {disposition!r}")
    return CallEvent(
        status=status,
        call_id=event.uid,
        duration=event.billable_seconds,
        reason=disposition if status != AttemptStatus.COMPLETED else None,
    )


def check_campaign(spec: CampaignSpec) -> list[str]:
    """What Fractel cannot do with this campaign: it connects each call to one thing, a text,
    a sound file or another number."""
    problems = []
    if not (is_e164(spec.caller_id) and spec.caller_id.startswith("+1") and len(spec.caller_id) == 12):
        problems.append(
            f"caller_id: Fractel calls from one of the account's FoneNumbers, a North American"
            f" number such as +14155550100, not {spec.caller_id!r}"
        )
    flow = spec.call_flow
    if flow.voice is not None:
        problems.append(f"{flow_field(spec, 'voice')}: Fractel's text-to-speech has no choice of voice")
    steps = start(flow).steps
    name, last = steps[-1]
    if last.action == "transfer" and (len(steps) > 1 or last.say or last.audio):
        problems.append(
            f"flow.steps.{name}: Fractel connects the callee to another number as the call's only"
            " destination: a transfer step alone, with nothing said first"
        )
    audio = [step for _, step in steps if step.audio]
    if audio and (len(audio) > 1 or any(step.say for _, step in steps)):
        problems.append("flow: Fractel plays one sound file, or text, a call: not both")
    return problems


PROVIDER = Provider(
    name="fractel",
    title="Fractel",
    capabilities=Capabilities(
        tts=True, ssml=True, audio=True, dtmf=False, audio_formats=(".wav",), transfer=True
    ),
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
    check_campaign=check_campaign,
    check_number=check_number,
    unconnected=unconnected,
    languages=frozenset({"en-US"}),  # its TTS takes no language: only a flow's default is left as it is
)
