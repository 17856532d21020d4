"""What every provider adapter is made of, and the one place where requests are sent.

A provider is a module of pure functions (build a request, parse an answer, verify and parse a
webhook) gathered in a :class:`Provider`. Nothing here holds a connection: :func:`send` takes the
client, sends, and maps HTTP status to the error tree in :mod:`dialer.errors`.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

import httpx

from campaigns.fields import render
from campaigns.flow import Flow, Segment, Step, one_question
from campaigns.outcomes import AttemptStatus
from campaigns.phones import is_e164
from campaigns.spec import CallOptions, CampaignSpec, MachineAction
from dialer.errors import (
    ProviderAuthError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderSetupError,
    ProviderTimeout,
    ProviderUnavailable,
)


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do for a campaign."""

    tts: bool = True
    ssml: bool = False
    audio: bool = True
    dtmf: bool = False
    machine_detection: bool = False
    audio_formats: tuple[str, ...] | None = None
    """File endings an audio URL must have (None: any)."""
    max_duration: bool = False
    """Whether a call can be cut off after a maximum length (``call.max_duration``)."""
    on_machine: frozenset[MachineAction] = frozenset({"continue"})
    """What the provider can do when a machine answers (``call.on_machine``)."""
    text_limit: int | None = None
    """The most characters of TTS text one call may speak (None: not published)."""
    extensions: bool = False
    """Whether digits can be sent once the call is answered (a contact's extension)."""
    transfer: bool = False
    """Whether a flow can connect the callee to another number (a transfer step)."""
    record: bool = False
    """Whether a flow can record the callee's voice (a record step)."""


RING_SECONDS = 60
"""How long a call rings before it is given up as unanswered."""


@dataclass(frozen=True)
class CallOrder:
    """Everything a provider needs to place one attempt, or to run the next part of its flow."""

    to: str
    caller_id: str
    flow: Flow
    variables: Mapping[str, str]
    """The contact's CSV columns, for the steps' ``{placeholders}`` (and its language, voice, numbers)."""
    callback_url: str
    """Our per-attempt webhook base, ``{public_url}/webhooks/{provider}/{token}``; add the kind."""
    reference: str
    """Names the attempt to the provider, in a field its records may show: never a secret."""
    ring_timeout: int = RING_SECONDS
    call: CallOptions = field(default_factory=CallOptions)
    extension: str = ""
    """Digits to send once the call is answered ('' for none)."""

    @property
    def language(self) -> str:
        """The contact's language: its CSV column's, if the flow names one and it is filled in."""
        column = self.flow.language_column
        return (self.variables.get(column) if column else None) or self.flow.language

    @property
    def voice(self) -> str | None:
        column = self.flow.voice_column
        return (self.variables.get(column) if column else None) or self.flow.voice

    def text(self, step: Step) -> str | None:
        """What ``step`` says to this contact (None: it plays audio or says nothing)."""
        return None if step.say is None else self.render(step.say)

    def render(self, template: str) -> str:
        """A text of the flow for this contact (values escaped where the flow writes SSML)."""
        return render(template, dict(self.variables), ssml=self.flow.ssml)

    def transfer_number(self, step: Step) -> str:
        """The E.164 number a transfer step connects this contact to."""
        return step.to or self.variables.get(step.to_column or "", "")

    def url(self, kind: str, *, step: str, seq: int, tries: int = 1) -> str:
        """The callback URL of one step of the flow: the step and the segment it belongs to travel
        with it, so an input is taken for the question it answers, once."""
        return f"{self.callback_url}/{kind}?{urlencode({'step': step, 'seq': seq, 'try': tries})}"


def callback_base(public_url: str, provider: str, token: str) -> str:
    """The attempt's webhook base: the provider's callbacks add their kind to it."""
    return f"{public_url.rstrip('/')}/webhooks/{provider}/{token}"


def order_for(
    spec: CampaignSpec,
    *,
    to: str,
    variables: Mapping[str, str],
    callback_url: str,
    reference: str,
    extension: str = "",
    caller_id: str | None = None,
) -> CallOrder:
    """One contact's call of a campaign, from ``caller_id`` (None: the campaign's)."""
    return CallOrder(
        to=to,
        caller_id=caller_id or spec.caller_id,
        flow=spec.call_flow,
        variables=variables,
        callback_url=callback_url,
        reference=reference,
        call=spec.call,
        extension=extension,
    )


def first_question(flow: Flow) -> tuple[str, Step] | None:
    """The question a provider that asks one question a call asks (see :func:`one_question`)."""
    shape = one_question(flow, "")
    return None if isinstance(shape, tuple) else shape.question


@dataclass(frozen=True)
class CallEvent:
    """One provider callback (or status look-up) in the common vocabulary."""

    status: AttemptStatus | None = None
    call_id: str | None = None
    answered_by: Literal["human", "machine"] | None = None
    digits: str | None = None
    """DTMF input, when the event carries some (possibly empty: timed out)."""
    input_complete: bool = True
    """False when ``digits`` may be only a piece of the answer (Routee posts tones as they come)."""
    duration: int | None = None
    price: str | None = None
    reason: str | None = None
    message_now: bool = False
    transfer: bool = False
    """The event is about the leg a transfer placed, not the call: ``status`` and ``duration`` are
    the leg's."""
    recording: str | None = None
    """A record step's recording: where the provider keeps it ("": nothing was recorded)."""
    """A machine answered and is ready to record: the provider waits for the message to leave."""
    account_problem: str | None = None
    """The call did not happen because of the provider account (no balance, say): every campaign
    on it must pause, and the contact must be called again once the operator has fixed it."""


@dataclass(frozen=True)
class Webhook:
    """A callback as it reached the receiver."""

    kind: str
    method: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes


ACCOUNT_TOKEN = "account"
"""The path segment of callbacks configured per account rather than per call."""


@dataclass(frozen=True)
class Token:
    """A bearer token from a provider's sign-in call, and how many seconds it lives."""

    value: str
    lifetime: float


def caller_id_problem(caller_id: str, title: str) -> str | None:
    """Why ``caller_id`` cannot be sent as an E.164 caller ID, or None."""
    if is_e164(caller_id):
        return None
    return (
        f"caller_id: {caller_id!r} is not a valid number in E.164 form (such as +14155550100),"
        f" as {title} needs"
    )


_LEGACY_FIELDS = {
    ("message", "say"): "message.text",
    ("message", "audio"): "message.audio_url",
    ("question", "say"): "question.prompt",
    ("question", "audio"): "question.prompt_audio_url",
    ("question", "retry"): "question.invalid_prompt",
    ("final", "say"): "question.final_prompt",
}


def step_field(spec: CampaignSpec, step: str, name: str) -> str:
    """The campaign file's name for a field of one step of its call: ``flow.steps.<step>.<name>``,
    or the ``[message]`` and ``[question]`` field it came from."""
    if spec.flow is None:
        return _LEGACY_FIELDS.get((step, name), f"{step}.{name.removeprefix('keys.')}")
    return f"flow.steps.{step}.{name}"


def flow_field(spec: CampaignSpec, name: str) -> str:
    """The campaign file's name for a setting of the whole call (``language``, ``voice``...)."""
    return f"{'message' if spec.flow is None else 'flow'}.{name}"


def nothing_wrong(_: Any) -> Iterable[str]:
    """A check that finds nothing (the default of :attr:`Provider.check_campaign`)."""
    return ()


@dataclass(frozen=True)
class Provider:
    """A provider adapter: pure functions over plain data.

    ``build_call`` and ``build_lookup`` take the provider's settings and, for providers that sign
    in (``sign_in``), the current token; ``parse_call`` and ``parse_webhook`` take the settings
    too (where the shape of an answer is a setting, as Cequens's). Providers whose callbacks are
    configured per account rather than per call (``per_call_callbacks=False``) say so, register
    them with ``setup``
    (given the settings, the callback URL, the token and the caller ID), and have their callbacks
    matched to attempts by call id.
    """

    name: str
    title: str
    capabilities: Capabilities
    default_rate_limit: float
    build_call: Callable[[CallOrder, Any, str | None], httpx.Request]
    parse_call: Callable[[httpx.Response, Any], str]
    verify_webhook: Callable[[Webhook, Any], None]
    parse_webhook: Callable[[Webhook, Any], CallEvent]
    error_detail: Callable[[httpx.Response], str]
    build_lookup: Callable[[str, Any, str | None], httpx.Request] | None = None
    parse_lookup: Callable[[httpx.Response], CallEvent] | None = None
    compile_segment: Callable[[Segment, CallOrder, int], Any] | None = None
    """The provider's native form of a segment of the flow (given the call and its segment
    number), sent in reply to an input: for providers that let a reply run the call on."""
    keep_collecting: Callable[[CallOrder, str, Step, int, int, int], Any] | None = None
    """The reply that waits for the rest of an answer arriving in pieces, given the call, the
    question's step (name and step), the segment number, its try, and the keys received so far."""
    tones_of_the_call: Callable[[Any], bool] | None = None
    """Whether each post of keys carries every key of the call so far, given the account's
    settings (None: each carries the keys since the previous post)."""
    unconnected: Callable[[httpx.Response], AttemptStatus | None] | None = None
    """How a call ended that the provider answered 4xx for because it never connected (busy, not
    answered): read from the error, for providers that answer only once a call connects."""
    end_call: Any = None
    """The reply to an input that ends the call (None: no reply does, as the call's own form
    ends after the input)."""
    reply_to_machine: Callable[[CallOrder], Any] | None = None
    """The reply that leaves the call's first message on a machine."""
    webhook_kinds: tuple[str, ...] = field(default=("event",))
    input_kinds: tuple[str, ...] = ()
    """The callbacks that bring keys and wait for the call's next step in reply."""
    sign_in: Callable[[Any], httpx.Request] | None = None
    parse_sign_in: Callable[[httpx.Response], Token] | None = None
    setup: Callable[[Any, str, str | None, str], httpx.Request] | None = None
    per_call_callbacks: bool = True
    check_campaign: Callable[[CampaignSpec], Iterable[str]] = nothing_wrong
    """What in a campaign file this provider cannot do, as ``"field: reason"`` lines."""
    check_number: Callable[[str], str | None] | None = None
    """Why an E.164 number cannot be dialled through this provider (None: it can)."""
    check_settings: Callable[[Any], None] | None = None
    """Raise :class:`ConfigurationError` for settings with which no callback could be accepted."""
    probe: Callable[[Any, str | None], httpx.Request] | None = None
    """An authenticated request that places no call, to try the credentials (sign-in providers sign in)."""
    setup_hint: str = "BASE_URL"
    """The setting to look at when the provider answers 404 to a create-call request."""
    languages: frozenset[str] | None = None
    """The TTS languages the provider speaks (None: its documents list none to check against)."""
    voice_problem: Callable[[str], str | None] | None = None
    """Why a voice is not one the provider takes (None: it is), for voices given per contact."""
    recording_request: Callable[[str, Any, str | None], httpx.Request] | None = None
    """The download of a recording at a URL the provider gave, with the account's credentials."""
    recording_hosts: tuple[str, ...] = ()
    callback_delay: float = 120.0
    """Seconds after a call ends within which its last callback has come, the provider's retries
    included: past the call's longest life and this, no result is coming (the attempt is ``unknown``)."""
    call_records: str = ""
    """Where an operator reads how a call ended that no callback told (a CDR or report API), for a
    provider with no status look-up: named in the reason of an attempt that ended ``unknown``."""
    """The domains a recording may be fetched from with those credentials (the simulator's too)."""

    def repeats_tones(self, settings: Any) -> bool:
        """Whether this account's posts of keys repeat every key of the call so far."""
        return self.tones_of_the_call is not None and self.tones_of_the_call(settings)

    @property
    def replies_mid_call(self) -> bool:
        """Whether an input's reply can run the call on: a flow may branch and ask again."""
        return self.compile_segment is not None

    @property
    def can_look_up(self) -> bool:
        """Whether the provider answers how a call stands (the sweeper asks when callbacks are late)."""
        return self.build_lookup is not None and self.parse_lookup is not None


def retry_after(response: httpx.Response, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def send(client: httpx.Client, request: httpx.Request, *, provider: Provider) -> httpx.Response:
    """Send ``request`` and return a 2xx answer, or raise the error its status code means.

    A connection that never opened means the call was not placed (:class:`ProviderUnavailable`);
    a timeout or a dropped connection after the request left may have placed it
    (:class:`ProviderTimeout`), and must be reconciled, not re-dialed.
    """
    try:
        response = client.send(request)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
        raise ProviderUnavailable(f"{provider.title} could not be reached: {error}") from None
    except httpx.TransportError as error:
        raise ProviderTimeout(f"{provider.title} did not answer: {error!r}") from None
    status = response.status_code
    if status < 300:
        return response
    detail = f"{provider.title} answered {status}: {provider.error_detail(response)}"
    if status in (401, 403):
        raise ProviderAuthError(detail, status_code=status)
    if status in (404, 405) and request.method == "POST":
        # The endpoint itself is missing: a wrong base URL or path, not a bad number.
        raise ProviderSetupError(
            f"{detail} (is DIALER_{provider.name.upper()}__{provider.setup_hint} right?)", status_code=status
        )
    if status == 429:
        raise ProviderRateLimited(detail, retry_after=retry_after(response))
    if status >= 500:
        raise ProviderUnavailable(detail, status_code=status)
    outcome = provider.unconnected(response) if provider.unconnected is not None else None
    raise ProviderRejected(detail, status_code=status, outcome=outcome)


def call_id_at(response: httpx.Response, *path: str | int, provider: str) -> str:
    """The call id found at ``path`` in a create-call answer.

    An answer without one may still stand for a placed call: it is treated like a lost answer
    (:class:`ProviderTimeout`), to be reconciled, never re-dialed.
    """
    try:
        value: Any = response.json()
        for key in path:
            value = value[key]
    except (ValueError, KeyError, TypeError, IndexError):
        where = ".".join(str(key) for key in path)
        raise ProviderTimeout(f"{provider} answer has no {where}: {response.text[:200]}") from None
    return str(value)


def json_detail(response: httpx.Response, *keys: str) -> str:
    """The first of ``keys`` found in a JSON error body, else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in keys:
            if body.get(key):
                return str(body[key])
    return response.text[:200]
