"""CM.com Voice API (``/voiceapi/v2``): the DTMF instruction, or a Notification without a question.

A flow runs as one instruction (its steps up to its one question as the ``prompt``, the question,
and the one closing message every answer leads to as ``valid-prompt``): CM.com's apps ask one
question and report the answer when the call is over. Its FlowBuilder runs flows drawn in CM.com's
web app, which a campaign file cannot make, so a flow with more is refused at create. An opt-out
key takes effect when the callback brings the answer. In SSML, the steps' texts are one document
under one ``<speak>`` root (text outside it is not SSML). Languages: those the audio-and-voices page
lists (de-DE, en-US, nl-NL) and the SDK's default voice's (en-GB); the fuller list is not public.
``instruction-id``, copied into CDRs, is the attempt's number: the callback's secret stays in its URL.

Auth is the account's product token in the ``X-CM-PRODUCTTOKEN`` header. CM.com posts one callback
when the call is over; it is unsigned, so its URL carries the attempt's secret token.

The answer to an instruction is one ``call-queued`` event per callee: the documents show a JSON
array of them, the official .NET SDK reads a single object; both are read. ``voice.gender`` is
``Male`` or ``Female`` (the SDK's ``Gender``); the Notification's prompt holds at most 750
characters, the DTMF instruction's 1000. ``sip-disconnect-code`` is alphanumeric (``"BYE"``).

Choices where the public documents are silent (kept here, easy to correct):
- The callback's DTMF fields are ``digits``, ``valid`` and ``attempts``, and its times are
  ``started-on``, ``answered-on`` and ``ended-on`` (ISO 8601); a Notification's callback has
  ``type: notification-finished``.
- ``result.code`` 12 (rejected) with SIP disconnect code 486 or 600 means busy.
- A non-2xx error body is ``{"message": ...}``; CM.com's rate limit is taken as 10 calls per second.
- The question's choices, when given, become the ``regex`` (``1|2``); else its pattern is sent.
- ``terminators`` defaults to ``#``: whether an empty value turns terminators off is not
  documented, so a question without a terminator key is refused at ``campaign create``.
- An audio prompt must be a file in CM.com's Voice Audio Manager, not a URL: audio URLs are refused.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import BeforeValidator, Field

from campaigns.flow import one_question
from campaigns.outcomes import AttemptStatus
from campaigns.spec import CampaignSpec
from dialer.errors import ProviderRejected, ProviderTimeout
from dialer.providers.base import (
    CallEvent,
    CallOrder,
    Capabilities,
    Provider,
    Webhook,
    caller_id_problem,
    flow_field,
    json_detail,
    step_field,
)
from dialer.providers.fields import MAX_CALL_SECONDS, Callback, CallId, Digits, Name, Note, read
from dialer.settings import CmSettings

#: ``result.code`` of the callback in the common vocabulary.
RESULT_CODES: dict[int, AttemptStatus] = {
    9: AttemptStatus.NO_ANSWER,  # cancelled: not answered in time
    10: AttemptStatus.COMPLETED,  # finished
    11: AttemptStatus.FAILED,
    12: AttemptStatus.REJECTED,
}
BUSY_SIP_CODES = frozenset({"486", "600"})
PROMPT_LIMITS = {"Notification": 750, "DTMF": 1000}
"""The most characters of a prompt, by instruction."""
GENDERS = {"male": "Male", "female": "Female"}
LANGUAGES = frozenset({"de-DE", "en-US", "nl-NL", "en-GB"})
"""What CM.com's audio-and-voices page lists (German, US English, Dutch) and its SDK's default
voice (en-GB); its fuller list of languages is not public."""


def _headers(settings: CmSettings) -> dict[str, str]:
    token = settings.product_token.get_secret_value() if settings.product_token else ""
    return {"X-CM-PRODUCTTOKEN": token, "Content-Type": "application/json", "Accept": "application/json"}


def _ssml(parts: list[str]) -> str:
    """SSML texts said one after the other, as one document: one ``<speak>`` root around them all."""
    inner = [_SPEAK.sub("", part.strip()) for part in parts]
    return f"<speak>{' '.join(inner)}</speak>"


_SPEAK = re.compile(r"^<speak[^>]*>|</speak>$")


def _said(order: CallOrder, texts: list[str | None]) -> str:
    parts = [text for text in texts if text]
    return _ssml(parts) if order.flow.ssml else " ".join(parts)


def build_call(order: CallOrder, settings: CmSettings, token: str | None = None) -> httpx.Request:
    """The flow as one instruction: a Notification that says its steps, or the DTMF instruction
    that says the steps up to its question, asks it, and says its closing message."""
    shape = one_question(order.flow, "CM.com")
    assert not isinstance(shape, tuple), shape  # check_campaign refused such a flow
    said = [order.text(step) for _, step in shape.intro]
    question = shape.question
    if question is not None:
        said.append(order.text(question[1]))
    instruction = "Notification" if question is None else "DTMF"
    prompt = _said(order, said)
    if len(prompt) > PROMPT_LIMITS[instruction]:
        raise ProviderRejected(
            f"the prompt would be {len(prompt)} characters for this contact; CM.com's {instruction}"
            f" instruction takes at most {PROMPT_LIMITS[instruction]}"
        )
    kind = "TTS_SSML" if order.flow.ssml else "TTS"
    body: dict[str, Any] = {
        "instruction-id": order.reference[:64],
        "callee": order.to,
        "caller": order.caller_id,
        "prompt": prompt,
        "prompt-type": kind,
        "voice": {
            "language": order.language,
            "gender": GENDERS[(order.voice or "female").lower()],
            "number": 1,
        },
        "callback-url": f"{order.callback_url}/callback",
        "max-ringing-timeout": max(10, min(60, order.ring_timeout)),
    }
    if question is not None:
        step = question[1]
        keys = step.rules
        named = [*step.choices, *(key for key in step.on if key not in step.choices)]
        body |= {
            "valid-prompt": _said(order, [order.render(shape.closing or "")]),
            "valid-prompt-type": kind,
            "min-digits": keys.min_digits,
            "max-digits": keys.max_digits,
            "max-attempts": step.attempts,
            "timeout": int(keys.timeout.total_seconds() * 1000),
            "terminators": keys.terminator,
        }
        if step.retry is not None:
            body |= {"invalid-prompt": _said(order, [order.render(step.retry)]), "invalid-prompt-type": kind}
        regex = "|".join(re.escape(key) for key in named) if named else keys.pattern
        if regex is not None:
            body["regex"] = regex
    return httpx.Request(
        "POST", f"{settings.base_url}/voiceapi/v2/{instruction}", json=body, headers=_headers(settings)
    )


def parse_call(response: httpx.Response, settings: Any = None) -> str:
    """The call id of the one callee's ``call-queued`` event (an array of one, or the object)."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    event = answer[0] if isinstance(answer, list) and answer else answer
    if isinstance(event, dict) and event.get("success") is False:
        raise ProviderRejected(f"CM.com refused the call: {event.get('error') or 'no reason given'}")
    if isinstance(event, dict) and event.get("call-id"):
        return str(event["call-id"])
    raise ProviderTimeout(f"CM.com answer has no call-id: {response.text[:200]}")


def error_detail(response: httpx.Response) -> str:
    return json_detail(response, "message", "error", "detail")


def verify_webhook(webhook: Webhook, settings: CmSettings) -> None:
    """CM.com does not sign callbacks: the attempt's secret token in the URL authenticates them."""


def _sip_code(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Result(Callback):
    code: Literal[9, 10, 11, 12]
    description: Note | None = None
    sip_disconnect_code: Annotated[Name, BeforeValidator(_sip_code)] | None = Field(
        None, alias="sip-disconnect-code"
    )
    """Alphanumeric: ``BYE`` in CM.com's example, SIP codes such as ``486`` otherwise."""
    sip_disconnect_reason: Note | None = Field(None, alias="sip-disconnect-reason")


class Finished(Callback):
    """The callback CM.com posts when a call is over."""

    type: Name | None = None
    call_id: CallId | None = Field(None, alias="call-id")
    result: Result
    digits: Digits | None = None
    answered_on: datetime | None = Field(None, alias="answered-on")
    ended_on: datetime | None = Field(None, alias="ended-on")


def parse_webhook(webhook: Webhook, settings: Any = None) -> CallEvent:
    finished = read(Finished, webhook.body, what="CM.com callback")
    result = finished.result
    status = RESULT_CODES[result.code]
    if status == AttemptStatus.REJECTED and result.sip_disconnect_code in BUSY_SIP_CODES:
        status = AttemptStatus.BUSY
    completed = status == AttemptStatus.COMPLETED
    duration = None
    if completed and finished.answered_on and finished.ended_on:
        duration = max(
            0, min(MAX_CALL_SECONDS, round((finished.ended_on - finished.answered_on).total_seconds()))
        )
    return CallEvent(
        status=status,
        call_id=finished.call_id,
        digits=(finished.digits or "") if completed and finished.type == "dtmf-finished" else None,
        duration=duration,
        reason=None if completed else _reason(result),
    )


def _reason(result: Result) -> str:
    """The result's description, with the SIP disconnect code and reason when CM.com gives them."""
    sip = " ".join(part for part in (result.sip_disconnect_code, result.sip_disconnect_reason) if part)
    return f"{result.description or 'not completed'}" + (f" (SIP {sip})" if sip else "")


def check_campaign(spec: CampaignSpec) -> list[str]:
    """What CM.com would refuse in this campaign."""
    problems = []
    if problem := caller_id_problem(spec.caller_id, "CM.com"):
        problems.append(problem)
    flow = spec.call_flow
    if flow.voice is not None and (problem := voice_problem(flow.voice)):
        problems.append(f"{flow_field(spec, 'voice')}: {problem}")
    shape = one_question(flow, "CM.com")
    if isinstance(shape, tuple):
        return problems  # the flow as a whole is refused (one question a call)
    question = shape.question
    if question is not None:
        name, step = question
        if not step.rules.terminator:
            problems.append(
                f"{step_field(spec, name, 'keys.terminator')}: CM.com always ends input on a key:"
                " '#' (its default) or '*'"
            )
        if shape.closing is None:
            problems.append(
                f"flow.steps.{name}: CM.com says a closing message after the answer: give the steps"
                " its answers lead to something to say"
            )
    instruction = "Notification" if question is None else "DTMF"
    spoken = sum(len(step.say or "") + 1 for _, step in [*shape.intro, *([question] if question else [])])
    if spoken - 1 > PROMPT_LIMITS[instruction]:
        first = shape.intro[0][0] if shape.intro else question[0] if question else flow.first
        problems.append(
            f"{step_field(spec, first, 'say')}: CM.com's {instruction} prompt holds at most"
            f" {PROMPT_LIMITS[instruction]} characters"
        )
    return problems


def voice_problem(voice: str) -> str | None:
    return None if voice.lower() in GENDERS else f"CM.com's voice is a gender, Male or Female, not {voice!r}"


PROVIDER = Provider(
    name="cm",
    title="CM.com",
    capabilities=Capabilities(
        tts=True, ssml=True, audio=False, dtmf=True, machine_detection=False, text_limit=PROMPT_LIMITS["DTMF"]
    ),
    default_rate_limit=10.0,
    call_records="CM.com's Voice CDR API (https://docs.cmtelecom.com/voice-cdr/v1) lists the account's calls",
    build_call=build_call,
    parse_call=parse_call,
    verify_webhook=verify_webhook,
    parse_webhook=parse_webhook,
    error_detail=error_detail,
    webhook_kinds=("callback",),
    check_campaign=check_campaign,
    languages=LANGUAGES,
    voice_problem=voice_problem,
)
