"""Routee voice conversations: a dial plan of SAY, PLAY, PAUSE and COLLECT verbs, OAuth2 bearer tokens.

The token comes from ``POST {auth_url}/oauth/token`` (HTTP Basic with the application id and
secret, ``grant_type=client_credentials``) and lives ``expires_in`` seconds; a 401 gets a new one.
Status callbacks (``OnChange``) and COLLECT and machine-detection events are unsigned: their URLs
carry the attempt's secret token. COLLECT and machine events expect a dial plan in reply.

How a DTMF question runs, as Routee's dial plan verbs work (docs.routee.net, dialplan-verbs and
the IVR and PIN guides): verbs run in order and the call ends after the last one; COLLECT does not
wait, it only says where the tones of the call go. So the question is the prompt (SAY or PLAY with
``bargeIn``), then a PAUSE that waits for the answer (the question's timeout for each digit it may
have), then COLLECT (``maxDigits``, ``submitOnHash`` when ``#`` ends input). Tones are posted when
the first one interrupts the prompt (that tone alone, usually), when ``#`` ends input, or when the
call ends. An answer may therefore arrive in pieces: each piece is added to the attempt's answer
so far, and while it is not complete (fewer than the question's digits, no ``#``) the reply is a
dial plan that keeps collecting. An answer still incomplete when the call ends is judged as it is.

Choices where the public documents are silent (kept here, easy to correct):
- A verb is an object with ``type`` (``SAY``, ``PLAY``, ``COLLECT``, ``PAUSE``, ``DIAL``).
- COLLECT and machine events carry ``conversationTrackingId``, ``collectedTones`` / ``answeredBy``;
  each COLLECT post carries the tones since the previous post.
- ``Unknown`` changes nothing (the sweeper settles the attempt). ``Unsent`` and ``Terminated``
  mean the account's balance ran out (voice-messaging-statuses): every campaign on the account is
  paused with that reason, and the contact is called again once the operator resumes.
- The status look-up is the conversation tracking endpoint
  (``GET /voice/tracking/conversation/{conversationTrackingId}``), a page whose ``content`` holds
  the conversation's messages with ``status.status``.
- ``call.on_machine = "continue"`` is the ``Continue`` strategy answered with the message alone,
  as ``leave_message`` is: Routee stops the dial plan when it detects a machine and asks for a new
  one, and asking the question of a machine gets no answer.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Any, Literal

import httpx
from pydantic import Field

from campaigns.outcomes import AttemptStatus
from campaigns.spec import CampaignSpec, Message, Question
from dialer.errors import ConfigurationError, ProviderRejected, WebhookPayloadError
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
from dialer.providers.fields import Callback, CallId, Digits, Price, Seconds, price_text, read
from dialer.settings import RouteeSettings

TEXT_LIMIT = 1000
"""Characters of TTS text in one call (other-voice-messaging-concept)."""
LANGUAGES = frozenset(
    [
        "en-US",
        "de-DE",
        "fr-FR",
        "it-IT",
        "pt-BR",
        "es-ES",
        "es-LA",
        "en-GB",
        "el-GR",
        "bg-BG",
        "pl-PL",
        "hu-HU",
        "sv-SE",
        "ru-RU",
    ]
)
_SENDER = re.compile(r"^\+?\d{1,15}$")

#: Routee's status names in the common vocabulary; None means "no change of outcome".
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
}
#: Statuses that stop the call because of the account, not the callee.
ACCOUNT_STATUSES = {
    "Unsent": "the account's balance ran out (Unsent): top it up, then resume the campaign",
    "Terminated": "the account's balance ran out during the call (Terminated): top it up, then resume",
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
    verb: dict[str, Any] = {"type": "SAY", "message": {"text": text, "language": language}}
    if voice:
        verb["message"]["gender"] = voice.lower()
    if barge_in:
        verb["bargeIn"] = True
    return verb


def _collect(question: Question, callback_url: str) -> dict[str, Any]:
    return {
        "type": "COLLECT",
        "eventUrl": f"{callback_url}/collect",
        "maxDigits": question.max_digits,
        "submitOnHash": question.terminator == "#",
    }


def _wait(question: Question, digits: int) -> dict[str, Any]:
    """A PAUSE long enough for ``digits`` keys, the question's timeout for each."""
    return {"type": "PAUSE", "duration": math.ceil(question.timeout.total_seconds() * max(1, digits))}


def _ask(question: Question, callback_url: str, language: str, voice: str | None) -> list[dict[str, Any]]:
    """The question: its prompt (a first key interrupts it), the wait for the answer, the collector."""
    if question.prompt_audio_url:
        prompt = {"type": "PLAY", "fileURL": question.prompt_audio_url, "bargeIn": True}
    else:
        prompt = _say(question.prompt, language, voice, barge_in=True)
    return [prompt, _wait(question, question.max_digits), _collect(question, callback_url)]


def message_verbs(
    text: str | None, audio_url: str | None, language: str, voice: str | None
) -> list[dict[str, Any]]:
    if audio_url is not None:
        return [{"type": "PLAY", "fileURL": audio_url}]
    return [_say(text or "", language, voice)]


def build_call(order: CallOrder, settings: RouteeSettings, token: str | None = None) -> httpx.Request:
    spoken = len(order.text or "") + len(order.question.prompt if order.question else "")
    if spoken > TEXT_LIMIT:
        raise ProviderRejected(
            f"the call would speak {spoken} characters; Routee speaks at most {TEXT_LIMIT}"
        )
    verbs = message_verbs(order.text, order.audio_url, order.language, order.voice)
    if order.question is not None:
        verbs += _ask(order.question, order.callback_url, order.language, order.voice)
    body: dict[str, Any] = {
        "from": order.caller_id,
        "to": {"phone": order.to},
        "dialPlan": {"verbs": verbs},
        "callback": {"url": f"{order.callback_url}/status", "strategy": "OnChange"},
        "hangupDelay": max(1, min(60, order.ring_timeout)),
    }
    if order.call.on_machine == "hangup":
        body["machineDetection"] = {"strategy": "Hangup"}
    else:
        body["machineDetection"] = {"strategy": "Continue", "eventUrl": f"{order.callback_url}/machine"}
    if order.call.max_duration is not None:
        body["maxDuration"] = math.ceil(order.call.max_duration.total_seconds())
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
        "GET",
        f"{settings.base_url}/voice/tracking/conversation/{call_id}",
        headers={"Authorization": f"Bearer {token}"},
    )


def error_detail(response: httpx.Response) -> str:
    return json_detail(response, "developerMessage", "error_description", "error")


def verify_webhook(webhook: Webhook, settings: RouteeSettings) -> None:
    """Routee does not sign callbacks: the attempt's secret token in the URL authenticates them."""


StatusName = Literal[
    "Queued",
    "Initiated",
    "Ringing",
    "InProgress",
    "Completed",
    "Busy",
    "NoAnswer",
    "Failed",
    "Unknown",
    "Unsent",
    "Terminated",
]


class _Figures(Callback):
    conversation_tracking_id: CallId | None = Field(None, alias="conversationTrackingId")
    duration: Seconds | None = None
    price: Price | None = None
    answered_by: Literal["HUMAN", "MACHINE", "UNKNOWN"] | None = Field(None, alias="answeredBy")

    def outcome(self, name: str) -> CallEvent:
        """A status name and the figures beside it, as one event."""
        if name in ACCOUNT_STATUSES:
            return CallEvent(call_id=self.conversation_tracking_id, account_problem=ACCOUNT_STATUSES[name])
        by = self.answered_by
        return CallEvent(
            status=STATUSES[name],
            call_id=self.conversation_tracking_id,
            duration=self.duration,
            price=price_text(self.price),
            answered_by="machine" if by == "MACHINE" else "human" if by == "HUMAN" else None,
        )


class _StatusName(Callback):
    name: StatusName


class Status(_Figures):
    """A status callback."""

    status: _StatusName


class _TrackedStatus(Callback):
    status: StatusName


class Tracked(_Figures):
    """One message of the conversation tracking page."""

    status: _TrackedStatus


class TrackingPage(Callback):
    content: list[Tracked] = Field(min_length=1)


class Collected(Callback):
    """A COLLECT post: the tones since the previous one."""

    conversation_tracking_id: CallId | None = Field(None, alias="conversationTrackingId")
    collected_tones: Digits = Field("", alias="collectedTones")


def parse_webhook(webhook: Webhook) -> CallEvent:
    if webhook.kind == "status":
        status = read(Status, webhook.body, what="Routee status callback")
        return status.outcome(status.status.name)
    if webhook.kind == "collect":
        # A piece of the answer: the recorder knows what came before it.
        tones = read(Collected, webhook.body, what="Routee COLLECT event")
        return CallEvent(
            call_id=tones.conversation_tracking_id, digits=tones.collected_tones, input_complete=False
        )
    if webhook.kind == "machine":
        detected = read(Collected, webhook.body, what="Routee machine event")
        return CallEvent(call_id=detected.conversation_tracking_id, answered_by="machine", message_now=True)
    raise WebhookPayloadError(f"Routee sends no {webhook.kind!r} callback")


def parse_lookup(response: httpx.Response) -> CallEvent:
    """The conversation's tracking page: its (first) message's status and figures."""
    message = read(TrackingPage, response.content, what="Routee tracking page").content[0]
    return message.outcome(message.status.status)


def reply_to_input(verdict: InputVerdict) -> dict[str, Any]:
    """The dial plan that replaces the running one after COLLECT: thank, ask again, or keep
    collecting the rest of an answer."""
    question = verdict.question
    if verdict.outcome == "more":
        left = question.max_digits - verdict.received
        return {"verbs": [_wait(question, left), _collect(question, verdict.callback_url)]}
    if verdict.outcome == "retry":
        verbs = [_say(question.invalid_prompt, verdict.language, None)]
        return {"verbs": verbs + _ask(question, verdict.callback_url, verdict.language, None)}
    return {"verbs": [_say(question.final_prompt, verdict.language, None)]}


def reply_to_machine(message: Message, text: str | None) -> dict[str, Any]:
    """On voicemail: leave the message, skip the question."""
    return {"verbs": message_verbs(text, message.audio_url, message.language, message.voice)}


def check_campaign(spec: CampaignSpec) -> list[str]:
    """What Routee would refuse or change in this campaign."""
    problems = []
    if not _SENDER.match(spec.caller_id) or len(spec.caller_id) > 16:
        problems.append(
            f"caller_id: Routee needs a numeric sender id of at most 16 characters, such as "
            f"+14155550100 (an alphanumeric one shows the callee 'Unknown'), not {spec.caller_id!r}"
        )
    if spec.message.language not in LANGUAGES:
        problems.append(f"message.language: Routee does not speak {spec.message.language!r}")
    voice = spec.message.voice
    if voice is not None and voice.lower() not in ("male", "female"):
        problems.append(f"message.voice: Routee's voice is 'male' or 'female', not {voice!r}")
    if spec.question is not None and spec.question.terminator == "*":
        problems.append("question.terminator: Routee ends input on '#' only (or on no key: '')")
    spoken = len(spec.message.text or "") + len(spec.question.prompt if spec.question else "")
    if spoken > TEXT_LIMIT:
        problems.append(f"message.text: Routee speaks at most {TEXT_LIMIT} characters in a call")
    return problems


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
        max_duration=True,
        on_machine=frozenset({"continue", "hangup", "leave_message"}),
        text_limit=TEXT_LIMIT,
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
    check_campaign=check_campaign,
)
