"""Routee voice conversations: a dial plan of SAY, PLAY, PAUSE and COLLECT verbs, OAuth2 bearer tokens.

The token comes from ``POST {auth_url}/oauth/token`` (HTTP Basic with the application id and
secret, ``grant_type=client_credentials``) and lives ``expires_in`` seconds; a 401 gets a new one.
Status callbacks (``OnChange``) and COLLECT and machine-detection events are unsigned: their URLs
carry the attempt's secret token. COLLECT and machine events expect a dial plan in reply.

How a DTMF question runs, as Routee's dial plan verbs work (docs.routee.net, dialplan-verbs and
the IVR and PIN guides): verbs run in order and the call ends after the last one; COLLECT does not
wait, it only says where the tones of the call go. Tones are posted when the first one interrupts
a SAY or PLAY with ``bargeIn`` (the tones so far), when ``#`` ends input (``submitOnHash``), or
when the call ends; silence posts nothing. So a question is its prompt with ``bargeIn``, said
again (after the step's ``retry``) as often as the step's ``attempts`` allow, and at least
twice, so that the key the callee presses while it plays reaches us at once; then a PAUSE that
waits for the rest of the answer (the question's timeout for each key it may have), the
COLLECT, and what the step's
``no_input`` leads to: after silence, the dial plan simply goes on (a step that asks again
cannot follow, since nothing reaches us). The reply to a COLLECT post is the next segment of the
flow, as a dial plan that replaces the running one: Routee waits 3 seconds for it. An answer of
several keys arrives in pieces: each is added to the attempt's answer so far, and while it is not
complete (fewer than the question's keys, no ``#``) the reply is a dial plan that keeps
collecting; without ``#``, the rest arrives when the call ends, and is judged as it stands.

A transfer is a DIAL, the last verb of its plan (one DIAL a plan at most), with a callback of its
own that reports the leg's statuses. Routee has no verb that records the callee.

Choices where the public documents are silent (kept here, easy to correct):
- A verb is an object with ``type`` (``SAY``, ``PLAY``, ``COLLECT``, ``PAUSE``, ``DIAL``).
- COLLECT and machine events carry ``conversationTrackingId``, ``collectedTones`` / ``answeredBy``.
- What a COLLECT post's ``collectedTones`` holds can be read two ways: the tones since the previous
  post (the simulator's default and ours, from the IVR examples' pieces), or, as the dial-plan
  page's words have it, "all the collected tones of the call, including the tone that interrupted
  execution". The two cannot be told apart from the posts alone (a survey's "1" then "1" is one or
  the other), so ``DIALER_ROUTEE__COLLECTED_TONES`` says which your account does
  (``since_last_post`` or ``whole_call``); with ``whole_call`` the tones a post repeats are dropped.
  The conversation's tracking page (``collectedTones``) shows all of a call's tones, to check.
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
from dataclasses import replace
from typing import Any, Literal

import httpx
from pydantic import Field

from campaigns.flow import Flow, Keys, Segment, Step, segment, segments, start
from campaigns.outcomes import AttemptStatus
from campaigns.spec import CampaignSpec
from dialer.errors import ConfigurationError, ProviderRejected, WebhookPayloadError
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
    step_field,
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


def _say(order: CallOrder, text: str, *, barge_in: bool = False) -> dict[str, Any]:
    """Text in the contact's language and the flow's voice, for every verb of the call alike."""
    verb: dict[str, Any] = {"type": "SAY", "message": {"text": text, "language": order.language}}
    if order.voice:
        verb["message"]["gender"] = order.voice.lower()
    if barge_in:
        verb["bargeIn"] = True
    return verb


def _prompt(order: CallOrder, step: Step, *, barge_in: bool = False) -> list[dict[str, Any]]:
    """What a step says or plays (nothing for a silent one); a first key interrupts a question's."""
    if step.audio is not None:
        play: dict[str, Any] = {"type": "PLAY", "fileURL": step.audio}
        return [play | {"bargeIn": True}] if barge_in else [play]
    text = order.text(step)
    return [] if text is None else [_say(order, text, barge_in=barge_in)]


def _wait(keys: Keys, digits: int) -> dict[str, Any]:
    """A PAUSE long enough for ``digits`` keys, the question's timeout for each."""
    return {"type": "PAUSE", "duration": math.ceil(keys.timeout.total_seconds() * max(1, digits))}


def _collect(order: CallOrder, name: str, step: Step, seq: int, tries: int) -> dict[str, Any]:
    return {
        "type": "COLLECT",
        "eventUrl": order.url("collect", step=name, seq=seq, tries=tries),
        "maxDigits": step.rules.max_digits,
        "submitOnHash": step.rules.terminator == "#",
    }


def dial_plan(segment: Segment, order: CallOrder, seq: int) -> dict[str, Any]:
    """A segment of the flow as a dial plan: each step's SAY or PLAY; a question as :func:`_ask`
    puts it (its COLLECT's reply is the next dial plan); a transfer's DIAL, the plan's last verb."""
    verbs = [] if segment.preface is None else [_say(order, order.render(segment.preface))]
    for name, step in segment.steps:
        if step.asks:
            verbs += _ask(order, name, step, seq, segment.tries)
            continue
        verbs += _prompt(order, step)
        if step.action == "transfer":
            verbs.append(
                {
                    "type": "DIAL",
                    "from": order.caller_id,
                    "to": {"phone": order.transfer_number(step)},
                    "hangupDelay": round(step.ring_timeout.total_seconds()),
                    "callback": {"url": order.url("transfer", step=name, seq=seq), "strategy": "OnChange"},
                }
            )
    return {"verbs": verbs or END_CALL["verbs"]}


END_CALL = {"verbs": [{"type": "PAUSE", "duration": 1}]}
"""A dial plan that ends the call (a reply must be a dial plan; an empty one would leave the
running one playing)."""


def _ask(order: CallOrder, name: str, step: Step, seq: int, tries: int) -> list[dict[str, Any]]:
    """A question: its prompt, said again while it has tries left (a key interrupts it, and is
    posted at once), the wait for the rest of the answer, the collector, and what silence leads to."""
    prompt = _prompt(order, step, barge_in=True)
    verbs = list(prompt)
    # Said once more at least: a key pressed after the prompt, during the PAUSE, would reach us
    # only when the call ends, too late to lead anywhere.
    for _ in range(tries, max(step.attempts, tries + 1)):
        if step.retry is not None:
            verbs.append(_say(order, order.render(step.retry), barge_in=True))
        verbs += prompt
    verbs += [_wait(step.rules, step.rules.max_digits), _collect(order, name, step, seq, tries)]
    if step.no_input in order.flow.steps:  # check_campaign: what silence leads to asks nothing
        silence = segment(order.flow, step.no_input)
        verbs += dial_plan(silence, order, seq)["verbs"]
    return verbs


def keep_collecting(
    order: CallOrder, name: str, step: Step, seq: int, tries: int, received: int
) -> dict[str, Any]:
    """The dial plan that waits for the rest of an answer that arrived in part."""
    left = step.rules.max_digits - received
    return {"verbs": [_wait(step.rules, left), _collect(order, name, step, seq, tries)]}


def _spoken(plan: dict[str, Any]) -> int:
    return sum(len(verb["message"]["text"]) for verb in plan["verbs"] if verb["type"] == "SAY")


def build_call(order: CallOrder, settings: RouteeSettings, token: str | None = None) -> httpx.Request:
    plan = dial_plan(start(order.flow), order, 0)
    if (spoken := _spoken(plan)) > TEXT_LIMIT:
        raise ProviderRejected(
            f"the call would speak {spoken} characters; Routee speaks at most {TEXT_LIMIT}"
        )
    body: dict[str, Any] = {
        "from": order.caller_id,
        "to": {"phone": order.to},
        "dialPlan": plan,
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


def parse_call(response: httpx.Response, settings: Any = None) -> str:
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


def parse_webhook(webhook: Webhook, settings: Any = None) -> CallEvent:
    if webhook.kind in ("status", "transfer"):  # a transfer's DIAL calls back on its own URL
        status = read(Status, webhook.body, what="Routee status callback")
        event = status.outcome(status.status.name)
        return replace(event, call_id=None, transfer=True) if webhook.kind == "transfer" else event
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


def reply_to_machine(order: CallOrder) -> dict[str, Any]:
    """On voicemail: leave the call's first message, skip the questions."""
    return {"verbs": _prompt(order, order.flow.steps[order.flow.first])}


def check_campaign(spec: CampaignSpec) -> list[str]:
    """What Routee would refuse or change in this campaign."""
    problems = []
    if not _SENDER.match(spec.caller_id) or len(spec.caller_id) > 16:
        problems.append(
            f"caller_id: Routee needs a numeric sender id of at most 16 characters, such as "
            f"+14155550100 (an alphanumeric one shows the callee 'Unknown'), not {spec.caller_id!r}"
        )
    flow = spec.call_flow
    if flow.voice is not None and (problem := voice_problem(flow.voice)):
        problems.append(f"{flow_field(spec, 'voice')}: {problem}")
    for name, step in flow.steps.items():
        if step.asks and step.rules.terminator == "*":
            problems.append(
                f"{step_field(spec, name, 'keys.terminator')}: Routee ends input on '#' only"
                " (or on no key: '')"
            )
        if step.action == "transfer" and step.ring_timeout.total_seconds() > 60:
            problems.append(
                f"{step_field(spec, name, 'ring_timeout')}: Routee rings a transfer 60 seconds at most"
            )
        if step.asks and step.no_input in flow.steps and segment(flow, step.no_input).question:
            field = step_field(spec, name, "no_input")
            problems.append(
                f"{field}: after silence Routee hears nothing from the call, so no_input cannot lead to"
                " a step that asks again (let it lead to a message, or hang up)"
            )
        if step.asks and step.rules.max_digits > 1 and step.rules.terminator != "#" and _leads_on(flow, step):
            problems.append(
                f"{step_field(spec, name, 'keys.terminator')}: Routee sends an answer of several keys"
                " before the call ends only when '#' ends it, and this question's answers lead on"
            )
    for part in segments(flow):
        spoken = sum(len(step.say or "") for _, step in part.steps) + len(part.preface or "")
        if spoken > TEXT_LIMIT:
            name = part.steps[-1][0]
            problems.append(
                f"{step_field(spec, name, 'say')}: Routee speaks at most {TEXT_LIMIT} characters in"
                f" one dial plan, and the steps up to this one say {spoken}"
            )
            break
    return problems


def _leads_on(flow: Flow, step: Step) -> bool:
    """Whether an answer to ``step`` leads to more than a closing message."""
    for field, target in step.targets():
        if field.startswith("on.") or field == "next":
            after = segment(flow, target) if target in flow.steps else None
            if after is not None and (after.question or after.actions()):
                return True
    return False


def voice_problem(voice: str) -> str | None:
    return (
        None
        if voice.lower() in ("male", "female")
        else f"Routee's voice is 'male' or 'female', not {voice!r}"
    )


PROVIDER = Provider(
    name="routee",
    title="Routee",
    callback_delay=300.0,  # it retries a callback not acknowledged within 2 s
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
        transfer=True,
    ),
    languages=LANGUAGES,
    voice_problem=voice_problem,
    default_rate_limit=1.0,
    build_call=build_call,
    parse_call=parse_call,
    verify_webhook=verify_webhook,
    parse_webhook=parse_webhook,
    error_detail=error_detail,
    build_lookup=build_lookup,
    parse_lookup=parse_lookup,
    compile_segment=dial_plan,
    tones_of_the_call=lambda settings: bool(settings.collected_tones == "whole_call"),
    end_call=END_CALL,
    keep_collecting=keep_collecting,
    reply_to_machine=reply_to_machine,
    webhook_kinds=("status", "collect", "machine", "transfer"),
    input_kinds=("collect",),
    sign_in=sign_in,
    parse_sign_in=parse_sign_in,
    check_campaign=check_campaign,
)
