"""Cequens "call with user input": one call playing TTS or an audio URL, optional DTMF collection.

Auth: ``POST /auth/v1/tokens/`` with ``{"apiKey", "userName"}`` answers a JWT in
``data.access_token``; it is sent as a bearer token and renewed at its ``exp`` or on a 401.
Callbacks are unsigned; the per-call status and DTMF URLs carry the attempt's secret token.

No public source confirms the call path, the answer or the callback bodies. Each is a setting
(``DIALER_CEQUENS__CALL_PATH``, ``__CALL_ID_FIELD``, ``__CALLBACK_ID_FIELD``, ``__STATUS_FIELD``,
``__DIGITS_FIELD``: set them to what your account's traffic shows); unset, every guess below is
read:

- The call path: ``DIALER_CEQUENS__CALL_PATH`` (default ``/voice/v1/calls``, on the sign-in host).
  A 404 there names that setting.
- The answer: the sign-in envelope (``replyCode`` 0 for success), the call id in the first of
  :data:`CALL_ID_FIELDS` present.
- Status callbacks: POSTed JSON with the call id (:data:`CALLBACK_ID_FIELDS`) and a status
  (:data:`STATUS_FIELDS`) among :data:`STATUSES`, with ``duration`` in seconds.
- The DTMF callback: a GET (as the seed says) with the call id and the digits in the query
  (:data:`DIGITS_FIELDS`), once per call.

Voices: the call takes no language, only ``voiceName`` (its default, Zeina, is Arabic), so the
voice is chosen by the flow's language from the voices Cequens names per language
(:data:`VOICES`): Zeina (``arb``), Hala (``ar-AE``, a neural voice only), Joanna (``en-US``); for
``en-GB`` and ``fr-FR``, which Cequens lists without naming a voice, Amy and Lea, the Amazon Polly
voices Cequens's others are (a guess). A language with no voice is refused at ``campaign create``,
and so is a voice of another language than the flow's.

Other choices: ``sayText`` is required, so an audio campaign sends its question's prompt there (or
nothing); ``repeat`` is the question's number of attempts (1 without a question); a token whose
``exp`` cannot be read is renewed after an hour; the rate limit is taken as 10 calls per second.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import httpx
import jwt
import pydantic_core
from pydantic import BeforeValidator

from campaigns.flow import one_question
from campaigns.outcomes import AttemptStatus
from campaigns.spec import CampaignSpec
from dialer.errors import ConfigurationError, ProviderRejected, ProviderTimeout, WebhookPayloadError
from dialer.providers.base import (
    CallEvent,
    CallOrder,
    Capabilities,
    Provider,
    Token,
    Webhook,
    caller_id_problem,
    flow_field,
    step_field,
)
from dialer.providers.fields import Callback, CallId, Digits, Seconds, read
from dialer.settings import CequensSettings

DEFAULT_TOKEN_LIFETIME = 3600.0

#: Each language's voice (the first), and the language of every voice Cequens names.
VOICES: dict[str, str] = {"arb": "Zeina", "ar-AE": "Hala", "en-US": "Joanna", "en-GB": "Amy", "fr-FR": "Lea"}
VOICE_LANGUAGES: dict[str, str] = {
    "Zeina": "arb",
    "Hala": "ar-AE",
    "Joanna": "en-US",
    "Matthew": "en-US",
    "Kendra": "en-US",
    "Amy": "en-GB",
    "Brian": "en-GB",
    "Lea": "fr-FR",
    "Mathieu": "fr-FR",
}
NEURAL_ONLY = frozenset({"Hala"})
"""Voices with no standard engine: ``neural`` must be true for them."""

#: Where the call id may be in the create-call answer, in the order tried.
CALL_ID_FIELDS = ("data.callId", "data.call_id", "data.id", "callId", "id")
#: Where a callback names its call, and where a status callback has its status.
CALLBACK_ID_FIELDS = ("callId", "call_id", "id")
STATUS_FIELDS = ("status", "callStatus", "state")
#: The DTMF callback's query parameter with the digits.
DIGITS_FIELDS = ("digits", "dtmf", "input")

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
    shape = one_question(order.flow, "Cequens")
    assert not isinstance(shape, tuple), shape  # check_campaign refused such a flow
    steps = [step for _, step in shape.intro] + ([shape.question[1]] if shape.question else [])
    audio = next((step.audio for step in steps if step.audio), None)
    question = shape.question[1] if shape.question else None
    voice = order.voice or VOICES[order.language]
    body: dict[str, Any] = {
        "recipient": order.to,
        "sayText": " ".join(text for step in steps if (text := order.text(step))),
        "neural": voice in NEURAL_ONLY,
        "repeat": question.attempts if question else 1,
        "timeout": order.ring_timeout,
        "collectInput": question is not None,
        "statusCallbackEndpoint": f"{order.callback_url}/status",
        "metaData": {"key": "attempt", "value": order.reference},
    }
    body["voiceName"] = voice
    if audio:
        body["audioUrl"] = audio
    if question is not None:
        body["dtmfCallbackEndpoint"] = f"{order.callback_url}/dtmf"
    return httpx.Request(
        "POST",
        f"{settings.base_url}{settings.call_path}",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def _first(payload: Any, paths: tuple[str, ...]) -> Any:
    """The value at the first of the dotted ``paths`` present in ``payload`` (None if none is)."""
    for path in paths:
        value = payload
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value not in (None, ""):
            return value
    return None


def _where(setting: str | None, guesses: tuple[str, ...]) -> tuple[str, ...]:
    """Where a value is: as the account's setting says, else any of our guesses."""
    return (setting,) if setting else guesses


def parse_call(response: httpx.Response, settings: CequensSettings | None = None) -> str:
    account = settings or CequensSettings()
    try:
        envelope = response.json()
    except ValueError:
        raise ProviderTimeout(f"Cequens answer is not JSON: {response.text[:200]}") from None
    if not isinstance(envelope, dict):
        raise ProviderTimeout(f"Cequens answer is not an object: {response.text[:200]}")
    code = envelope.get("replyCode", 0)
    if code not in (0, "0"):
        raise ProviderRejected(f"Cequens refused the call: {envelope.get('replyMessage') or code}")
    call_id = _first(envelope, _where(account.call_id_field, CALL_ID_FIELDS))
    if call_id is None:
        raise ProviderTimeout(
            f"Cequens answer has no call id where we look (DIALER_CEQUENS__CALL_ID_FIELD says where"
            f" yours is): {response.text[:200]}"
        )
    return str(call_id)


def error_detail(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return str(error.get("description") or error)
    except (ValueError, KeyError, TypeError, AttributeError):
        return response.text[:200] or response.reason_phrase


def verify_webhook(webhook: Webhook, settings: CequensSettings) -> None:
    """Cequens does not sign callbacks: the attempt's secret token in the URL authenticates them."""


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class Status(Callback):
    """A status callback's fields, found where the account's settings (or our guesses) say."""

    call_id: CallId | None = None
    status: Annotated[
        Literal["initiated", "ringing", "answered", "completed", "busy", "no-answer", "failed", "rejected"],
        BeforeValidator(_lower),
    ]
    duration: Seconds | None = None


class Dtmf(Callback):
    """The DTMF callback's query."""

    call_id: CallId | None = None
    digits: Digits = ""


def parse_webhook(webhook: Webhook, settings: CequensSettings | None = None) -> CallEvent:
    account = settings or CequensSettings()
    ids = _where(account.callback_id_field, CALLBACK_ID_FIELDS)
    if webhook.kind == "dtmf":
        query = dict(webhook.query)
        fields = {
            "call_id": _first(query, ids),
            "digits": _first(query, _where(account.digits_field, DIGITS_FIELDS)),
        }
        entered = read(Dtmf, {key: value for key, value in fields.items() if value is not None}, what=_DTMF)
        # No digits is no answer: nothing to store, and a later callback may still bring one.
        return CallEvent(call_id=entered.call_id, digits=entered.digits or None)
    if webhook.kind != "status":
        raise WebhookPayloadError(f"Cequens sends no {webhook.kind!r} callback")
    try:
        payload = pydantic_core.from_json(webhook.body)  # refuses any depth of nesting, as a ValueError
    except ValueError:
        raise WebhookPayloadError("Cequens status callback: body: not JSON") from None
    fields = {
        "call_id": _first(payload, ids),
        "status": _first(payload, _where(account.status_field, STATUS_FIELDS)),
        "duration": payload.get("duration") if isinstance(payload, dict) else None,
    }
    status = read(Status, {key: value for key, value in fields.items() if value is not None}, what=_STATUS)
    return CallEvent(status=STATUSES[status.status], call_id=status.call_id, duration=status.duration)


_STATUS = (
    "Cequens status callback (DIALER_CEQUENS__STATUS_FIELD and __CALLBACK_ID_FIELD say where yours has them)"
)
_DTMF = (
    "Cequens DTMF callback (DIALER_CEQUENS__DIGITS_FIELD and __CALLBACK_ID_FIELD say where yours has them)"
)


def check_campaign(spec: CampaignSpec) -> list[str]:
    """What Cequens would not do with this campaign."""
    problems = []
    if problem := caller_id_problem(spec.caller_id, "a campaign (Cequens calls from its own number)"):
        problems.append(problem)
    shape = one_question(spec.call_flow, "Cequens")
    if isinstance(shape, tuple):
        return problems  # the flow as a whole is refused (one question a call)
    if shape.question is not None:
        name, step = shape.question
        if step.rules.terminator == "*":
            problems.append(
                f"{step_field(spec, name, 'keys.terminator')}: Cequens collects input without"
                " a '*' terminator"
            )
        if spec.flow is not None:  # [question]'s prompts have defaults, which Cequens never said
            if step.retry is not None:
                problems.append(
                    f"flow.steps.{name}.retry: Cequens repeats its prompt, with nothing said between"
                )
            if shape.closing is not None:
                problems.append(
                    f"flow.steps.{name}: Cequens says nothing after the answer: let its answers"
                    " lead to steps that say nothing"
                )
    asked = [*shape.intro, *([shape.question] if shape.question else [])]
    if sum(1 for _, step in asked if step.audio) > 1:
        problems.append("flow: Cequens plays one audio file a call")
    flow = spec.call_flow
    if flow.voice is not None and (problem := voice_problem(flow.voice)):
        problems.append(f"{flow_field(spec, 'voice')}: {problem}")
    elif flow.voice is not None and VOICE_LANGUAGES[flow.voice] != flow.language:
        spoken = VOICE_LANGUAGES[flow.voice]
        problems.append(
            f"{flow_field(spec, 'voice')}: {flow.voice} speaks {spoken}, not the call's {flow.language}"
        )
    return problems


def voice_problem(voice: str) -> str | None:
    if voice in VOICE_LANGUAGES:
        return None
    return f"Cequens's voices are {', '.join(VOICE_LANGUAGES)}, not {voice!r}"


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
    check_campaign=check_campaign,
    languages=frozenset(VOICES),
    voice_problem=voice_problem,
    setup_hint="CALL_PATH (the call path is not in Cequens's public documents)",
)
