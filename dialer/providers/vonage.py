"""Vonage Voice API v1.

Requests carry an application JWT (RS256, signed with the application's private key; claims
``application_id``, ``iat``, ``jti``, ``exp``); the application id is required (no default).

A call runs a campaign's flow as NCCOs, one segment each (:func:`segment_ncco`): ``talk`` for TTS
(SSML wrapped in ``<speak>``; every talk of the call in its language and style), ``stream`` for
audio, ``talk`` with ``bargeIn`` + ``input`` for a question, whose event answers with the next
segment's NCCO (it replaces the running one: NCCO reference); ``record`` for a record step, with
``endOnKey`` and ``endOnSilence`` so that what follows waits for it (recording guide), its event
bringing ``recording_url``, fetched with the application's JWT from Vonage's hosts only (as the
SDK's ``download_recording`` does); ``connect`` for a transfer, its leg's events (the leg's own
``uuid``, the call's ``conversation_uuid``) on the action's own ``eventUrl`` (NCCO reference).
The event webhook also brings events with no ``status``: errors (``reason``) and transfers
(``conversation_uuid_from``, ``_to``, webhook reference and the PHP SDK's captures); they are
recorded and change nothing.

Callbacks: every callback URL carries the attempt's secret token, which authenticates it. Vonage
signs callbacks when the application has signing on (``signed_callbacks``, the default for Voice
today; older applications may not sign): an ``Authorization: Bearer`` JWT (HS256, the account's
signature secret) whose ``payload_hash`` is the SHA-256 of the body. A signature, when present, is
verified and a bad one refused; ``DIALER_VONAGE__REQUIRE_SIGNATURE`` makes it required, and an
unsigned callback then gets a 503, so that Vonage sends it again rather than it being lost.

Choices where the public documents are silent (kept here, easy to correct):
- ``payload_hash`` is compared as a hex digest.
- Vonage's ``cancelled`` status maps to our ``cancelled`` outcome (not retried).
- ``disconnected``, ``human`` and ``machine`` carry no outcome of their own; ``machine`` marks the
  attempt as answered by a machine, so its ``completed`` becomes our ``machine``.
- ``call.on_machine = "leave_message"`` is advanced machine detection in its asynchronous mode
  (``default``): the NCCO runs as for a person, and the ``machine`` event whose ``sub_state`` is
  ``beep_start`` is answered with an NCCO that leaves the message alone (the documented way to
  leave a message after the beep).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from functools import lru_cache
from typing import Annotated, Any, Literal

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pydantic import StringConstraints

from campaigns.flow import Segment, Step, start
from campaigns.outcomes import AttemptStatus
from campaigns.spec import CampaignSpec
from dialer.errors import (
    ConfigurationError,
    ProviderRejected,
    WebhookAuthError,
    WebhookPayloadError,
    WebhookUnsigned,
)
from dialer.providers.base import (
    CallEvent,
    CallOrder,
    Capabilities,
    Provider,
    Webhook,
    call_id_at,
    caller_id_problem,
    flow_field,
    json_detail,
    step_field,
)
from dialer.providers.fields import Callback, CallId, Digits, Name, Note, Price, Seconds, price_text, read
from dialer.settings import VonageSettings

log = logging.getLogger("dialer.providers.vonage")

API_JWT_LIFETIME = 15 * 60
WEBHOOK_JWT_MAX_AGE = 5 * 60
TALK_LIMIT = 1500
"""Characters of text in one ``talk`` action."""

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

#: TTS languages: the API reference's list (talk) and the NCCO schema's, together.
LANGUAGES = frozenset(
    [
        "ar",
        "bn-IN",
        "ca-ES",
        "cmn-CN",
        "cmn-TW",
        "cs-CZ",
        "cy-GB",
        "da-DK",
        "de-DE",
        "el-GR",
        "en-AU",
        "en-GB",
        "en-GB-WLS",
        "en-IN",
        "en-US",
        "en-ZA",
        "es-ES",
        "es-MX",
        "es-US",
        "eu-ES",
        "fi-FI",
        "fil-PH",
        "fr-CA",
        "fr-FR",
        "he-IL",
        "hi-IN",
        "hu-HU",
        "id-ID",
        "is-IS",
        "it-IT",
        "ja-JP",
        "ko-KR",
        "ml-IN",
        "nb-NO",
        "nl-NL",
        "no-NO",
        "pl-PL",
        "pt-BR",
        "pt-PT",
        "ro-RO",
        "ru-RU",
        "sk-SK",
        "sv-SE",
        "ta-IN",
        "te-IN",
        "th-TH",
        "tr-TR",
        "uk-UA",
        "vi-VN",
        "yue-CN",
    ]
)


@lru_cache(maxsize=4)
def _signing_key(pem: str) -> RSAPrivateKey:
    """The application's RSA key, parsed once: parsing checks the key, which costs some fifty
    times the signature itself (PyJWT would parse a PEM string again on every call)."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        # The library's message may quote the key's text: say what is wrong without it.
        raise ConfigurationError(
            "DIALER_VONAGE__PRIVATE_KEY is not a usable PEM private key (is it the whole file, "
            "from -----BEGIN to -----END, unencrypted?)"
        ) from None
    if not isinstance(key, RSAPrivateKey):
        raise ConfigurationError("DIALER_VONAGE__PRIVATE_KEY must be an RSA key (Vonage signs with RS256)")
    return key


def api_token(settings: VonageSettings, *, now: float | None = None) -> str:
    """An application JWT for one request."""
    if not settings.application_id:
        raise ConfigurationError("DIALER_VONAGE__APPLICATION_ID is not set (your Vonage application's id)")
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


def _speak(text: str) -> str:
    """SSML as Vonage reads it: inside one ``<speak>`` element."""
    return text if text.lstrip().startswith("<speak") else f"<speak>{text}</speak>"


def _talk(order: CallOrder, text: str, *, barge_in: bool = False) -> dict[str, Any]:
    """Text in the contact's language and the flow's voice, for every talk of the call alike."""
    talk: dict[str, Any] = {
        "action": "talk",
        "text": _speak(text) if order.flow.ssml else text,
        "language": order.language,
    }
    if order.voice:
        talk["style"] = int(order.voice)  # check_campaign lets only a style number through
    if barge_in:
        talk["bargeIn"] = True  # the next action is the input the callee may start early
    return talk


def _prompt(order: CallOrder, step: Step, *, barge_in: bool = False) -> list[dict[str, Any]]:
    """What a step says or plays (nothing for a silent one)."""
    if step.audio is not None:
        stream: dict[str, Any] = {"action": "stream", "streamUrl": [step.audio]}
        return [stream | {"bargeIn": True}] if barge_in else [stream]
    text = order.text(step)
    return [] if text is None else [_talk(order, text, barge_in=barge_in)]


def segment_ncco(segment: Segment, order: CallOrder, seq: int) -> list[dict[str, Any]]:
    """A segment of the flow as NCCO actions: each step's talk or stream; a question's ``input``
    (its event answers with the next segment), a record step's ``record`` (it ends on the step's
    key or on silence, so the actions after it wait for it), a transfer's ``connect``."""
    actions = [] if segment.preface is None else [_talk(order, order.render(segment.preface))]
    for name, step in segment.steps:
        actions += _prompt(order, step, barge_in=step.asks)
        if step.asks:
            keys = step.rules
            actions.append(
                {
                    "action": "input",
                    "type": ["dtmf"],
                    "dtmf": {
                        "maxDigits": keys.max_digits,
                        "timeOut": round(keys.timeout.total_seconds()),
                        "submitOnHash": keys.terminator == "#",
                    },
                    "eventUrl": [order.url("input", step=name, seq=seq, tries=segment.tries)],
                    "eventMethod": "POST",
                }
            )
        elif step.action == "record":
            actions.append(
                {
                    "action": "record",
                    "endOnKey": step.end_key,
                    "endOnSilence": RECORD_SILENCE,
                    "timeOut": round(step.max_duration.total_seconds()),
                    "beepStart": True,
                    "eventUrl": [order.url("record", step=name, seq=seq)],
                    "eventMethod": "POST",
                }
            )
        elif step.action == "transfer":
            actions.append(
                {
                    "action": "connect",
                    "from": _digits(order.caller_id),
                    "timeout": round(step.ring_timeout.total_seconds()),
                    "endpoint": [{"type": "phone", "number": _digits(order.transfer_number(step))}],
                    "eventUrl": [order.url("transfer", step=name, seq=seq)],
                    "eventMethod": "POST",
                }
            )
    return actions


def ncco(order: CallOrder) -> list[dict[str, Any]]:
    """The call-control object the call starts with: the flow up to its first question."""
    return segment_ncco(start(order.flow), order, 0)


RECORD_SILENCE = 5
"""Seconds of silence that end a recording (Vonage takes 3 to 10): a pause to think is not the end."""


def _machine_detection(order: CallOrder) -> dict[str, Any]:
    """What Vonage does when a machine answers, as the campaign's ``call.on_machine`` asks."""
    if order.call.on_machine == "leave_message":
        detection: dict[str, Any] = {"behavior": "continue", "mode": "default"}
        if order.call.beep_timeout is not None:
            detection["beep_timeout"] = round(order.call.beep_timeout.total_seconds())
        return {"advanced_machine_detection": detection}
    return {"machine_detection": order.call.on_machine}  # continue or hangup


EXTENSION_PAUSE = "pp"
"""Sent before a contact's extension: one second (``p`` is 500 ms) for the switchboard to listen."""


def build_call(order: CallOrder, settings: VonageSettings, token: str | None = None) -> httpx.Request:
    actions = ncco(order)
    for action in actions:
        if action["action"] == "talk" and len(action["text"]) > TALK_LIMIT:
            raise ProviderRejected(
                f"a message is {len(action['text'])} characters for this contact;"
                f" Vonage speaks at most {TALK_LIMIT}"
            )
    to: dict[str, Any] = {"type": "phone", "number": _digits(order.to)}
    if order.extension:
        # Each p waits half a second: a switchboard answers before it listens for an extension.
        to["dtmfAnswer"] = EXTENSION_PAUSE + order.extension
    body: dict[str, Any] = {
        "to": [to],
        "from": {"type": "phone", "number": _digits(order.caller_id)},
        "ncco": actions,
        "event_url": [f"{order.callback_url}/event"],
        "event_method": "POST",
        "ringing_timer": order.ring_timeout,
        **_machine_detection(order),
    }
    if order.call.max_duration is not None:
        body["length_timer"] = round(order.call.max_duration.total_seconds())
    return httpx.Request(
        "POST",
        f"{settings.base_url}/v1/calls",
        json=body,
        headers={"Authorization": f"Bearer {api_token(settings)}", "Accept": "application/json"},
    )


def parse_call(response: httpx.Response, settings: Any = None) -> str:
    return call_id_at(response, "uuid", provider="Vonage")


def build_lookup(call_id: str, settings: VonageSettings, token: str | None = None) -> httpx.Request:
    return httpx.Request(
        "GET",
        f"{settings.base_url}/v1/calls/{call_id}",
        headers={"Authorization": f"Bearer {api_token(settings)}", "Accept": "application/json"},
    )


def probe(settings: VonageSettings, token: str | None = None) -> httpx.Request:
    """List one call: authenticated, and harmless."""
    return httpx.Request(
        "GET",
        f"{settings.base_url}/v1/calls",
        params={"page_size": 1},
        headers={"Authorization": f"Bearer {api_token(settings)}", "Accept": "application/json"},
    )


def parse_lookup(response: httpx.Response) -> CallEvent:
    return _event(read(Event, response.content, what="Vonage call"))


def error_detail(response: httpx.Response) -> str:
    """The problem's detail, with each invalid parameter's reason when Vonage lists them."""
    detail = json_detail(response, "detail", "title")
    try:
        invalid = response.json().get("invalid_parameters") or []
    except (ValueError, AttributeError):
        return detail
    reasons = [f"{p.get('name')}: {p.get('reason')}" for p in invalid if isinstance(p, dict)]
    return f"{detail} ({'; '.join(reasons)})" if reasons else detail


def check_settings(settings: VonageSettings) -> None:
    """Refuse to receive callbacks that could never be accepted: required signatures need the
    secret to check them with and the account they are signed for."""
    if settings.require_signature and (settings.signature_secret is None or not settings.api_key):
        raise ConfigurationError(
            "DIALER_VONAGE__REQUIRE_SIGNATURE is on, so DIALER_VONAGE__SIGNATURE_SECRET and "
            "DIALER_VONAGE__API_KEY (the account whose secret it is) must both be set"
        )


_unverified_warned: list[bool] = []


def verify_webhook(webhook: Webhook, settings: VonageSettings) -> None:
    """Check Vonage's signature where there is one; the token in the URL is checked by the caller."""
    header = webhook.headers.get("authorization")
    if not header:
        if settings.require_signature:
            raise WebhookUnsigned("Vonage callback without a signature (DIALER_VONAGE__REQUIRE_SIGNATURE)")
        return
    if settings.signature_secret is None:
        if not _unverified_warned:
            _unverified_warned.append(True)
            log.warning(
                "Vonage signs its callbacks, but DIALER_VONAGE__SIGNATURE_SECRET is not set: "
                "they are accepted on their URL's token alone"
            )
        return
    if not header.startswith("Bearer "):
        raise WebhookAuthError("Vonage callback with an Authorization header that is not a bearer JWT")
    try:
        claims = jwt.decode(
            header.removeprefix("Bearer "),
            settings.signature_secret.get_secret_value(),
            algorithms=["HS256"],
            options={"require": ["iat", "payload_hash"]},
        )
    except jwt.PyJWTError as error:
        raise WebhookAuthError(f"Vonage callback JWT does not verify: {error}") from None
    if settings.api_key and claims.get("api_key") != settings.api_key:
        raise WebhookAuthError("Vonage callback signed for another account")
    if abs(time.time() - float(claims["iat"])) > WEBHOOK_JWT_MAX_AGE:
        raise WebhookAuthError("Vonage callback JWT is too old")
    if not hmac.compare_digest(str(claims["payload_hash"]), hashlib.sha256(webhook.body).hexdigest()):
        raise WebhookAuthError("Vonage callback body does not match its payload_hash")


class Event(Callback):
    """An event webhook (and a call resource, which has the same fields).

    Errors and transfers come to the event webhook too, with no ``status``: an error has a
    ``reason``, a transfer ``conversation_uuid_from`` and ``conversation_uuid_to``.
    """

    status: (
        Literal[
            "started",
            "ringing",
            "answered",
            "completed",
            "busy",
            "timeout",
            "unanswered",
            "cancelled",
            "rejected",
            "failed",
            "human",
            "machine",
            "disconnected",
        ]
        | None
    ) = None
    uuid: CallId | None = None
    call_uuid: CallId | None = None
    """The human and machine events name the call here instead."""
    duration: Seconds | None = None
    price: Price | None = None
    sub_state: Name | None = None
    detail: Note | None = None
    reason: Note | None = None


class Dtmf(Callback):
    digits: Digits | None = ""
    """The keys pressed; absent or null when none were (a time-out may still carry some)."""
    timed_out: bool = False


class Input(Callback):
    """An input webhook: the keys the callee pressed."""

    dtmf: Dtmf
    uuid: CallId | None = None


class Recorded(Callback):
    """A record action's event: where the recording is (empty when nothing was recorded)."""

    recording_url: Annotated[str, StringConstraints(max_length=500, pattern=r"^(https?://\S+)?$")] = ""


def _event(event: Event) -> CallEvent:
    name = event.status
    if name is None:  # an error or a transfer between conversations: nothing changes for the call
        return CallEvent(call_id=event.uuid, reason=event.reason or event.detail)
    return CallEvent(
        status=STATUSES[name],
        call_id=event.uuid or event.call_uuid,
        answered_by="machine" if name == "machine" else "human" if name == "human" else None,
        duration=event.duration,
        price=price_text(event.price),
        reason=event.detail or event.reason,
        message_now=name == "machine" and event.sub_state == "beep_start",
    )


def parse_webhook(webhook: Webhook, settings: Any = None) -> CallEvent:
    if webhook.kind == "event":
        return _event(read(Event, webhook.body, what="Vonage event"))
    if webhook.kind == "input":
        entered = read(Input, webhook.body, what="Vonage input")
        return CallEvent(call_id=entered.uuid, digits=entered.dtmf.digits or "")
    if webhook.kind == "transfer":  # the events of the leg a connect action placed: its own uuid
        leg = _event(read(Event, webhook.body, what="Vonage transfer event"))
        return CallEvent(status=leg.status, duration=leg.duration, reason=leg.reason, transfer=True)
    if webhook.kind == "record":
        recorded = read(Recorded, webhook.body, what="Vonage record event")
        return CallEvent(recording=recorded.recording_url)
    raise WebhookPayloadError(f"Vonage sends no {webhook.kind!r} callback")


def reply_to_machine(order: CallOrder) -> list[dict[str, Any]]:
    """After the beep: the call's first message alone, as the NCCO that replaces the running one."""
    return _prompt(order, order.flow.steps[order.flow.first])


def recording_request(url: str, settings: VonageSettings, token: str | None = None) -> httpx.Request:
    """The download of a recording: the application's JWT, to Vonage's own hosts only (the URL
    came in a callback; the JWT must not go anywhere else)."""
    return httpx.Request(
        "GET", url, headers={"Authorization": f"Bearer {api_token(settings)}", "Accept": "audio/*"}
    )


def check_campaign(spec: CampaignSpec) -> list[str]:
    """What Vonage's API would refuse or silently change in this campaign."""
    problems = []
    if problem := caller_id_problem(spec.caller_id, "Vonage"):
        problems.append(problem)
    flow = spec.call_flow
    voice = flow.voice
    if voice is not None and not voice.isdigit():
        problems.append(
            f"{flow_field(spec, 'voice')}: Vonage picks a voice by language and style, a number (0, 1, ...); "
            f"{voice!r} is not a style (voice names are deprecated)"
        )
    for name, step in flow.steps.items():
        if step.asks and step.rules.terminator == "*":
            problems.append(
                f"{step_field(spec, name, 'keys.terminator')}: Vonage ends input on '#' only"
                " (or on no key: '')"
            )
        if step.say is not None and len(step.say) > TALK_LIMIT:
            problems.append(
                f"{step_field(spec, name, 'say')}: Vonage speaks at most {TALK_LIMIT} characters in one talk"
            )
    return problems


def voice_problem(voice: str) -> str | None:
    return None if voice.isdigit() else f"Vonage's voice is a style number (0, 1, ...), not {voice!r}"


PROVIDER = Provider(
    name="vonage",
    title="Vonage",
    capabilities=Capabilities(
        tts=True,
        ssml=True,
        audio=True,
        dtmf=True,
        machine_detection=True,
        max_duration=True,
        on_machine=frozenset({"continue", "hangup", "leave_message"}),
        text_limit=TALK_LIMIT,
        extensions=True,
        transfer=True,
        record=True,
    ),
    languages=LANGUAGES,
    voice_problem=voice_problem,
    recording_request=recording_request,
    recording_hosts=("nexmo.com", "vonage.com"),
    default_rate_limit=3.0,
    build_call=build_call,
    parse_call=parse_call,
    verify_webhook=verify_webhook,
    parse_webhook=parse_webhook,
    error_detail=error_detail,
    build_lookup=build_lookup,
    parse_lookup=parse_lookup,
    compile_segment=segment_ncco,
    reply_to_machine=reply_to_machine,
    webhook_kinds=("event", "input", "transfer", "record"),
    input_kinds=("input",),
    check_campaign=check_campaign,
    check_settings=check_settings,
    probe=probe,
)
