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

import httpx

from campaigns.outcomes import AttemptStatus
from campaigns.phones import is_e164
from campaigns.spec import CallOptions, CampaignSpec, MachineAction, Message, Question
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


@dataclass(frozen=True)
class CallOrder:
    """Everything a provider needs to place one attempt, already rendered for its contact."""

    to: str
    caller_id: str
    text: str | None
    audio_url: str | None
    language: str
    voice: str | None
    ssml: bool
    question: Question | None
    callback_url: str
    """Our per-attempt webhook base, ``{public_url}/webhooks/{provider}/{token}``; add the kind."""
    reference: str
    ring_timeout: int = 60
    call: CallOptions = field(default_factory=CallOptions)
    extension: str = ""
    """Digits to send once the call is answered ('' for none)."""


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


@dataclass(frozen=True)
class InputVerdict:
    """What the receiver decided about DTMF input, for providers that expect a reply."""

    outcome: Literal["accepted", "retry", "done", "more"]
    """``more``: part of an answer arrived, keep collecting the rest."""
    question: Question
    callback_url: str
    language: str
    received: int = 0
    """Digits of the answer received so far."""


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


def nothing_wrong(_: Any) -> Iterable[str]:
    """A check that finds nothing (the default of :attr:`Provider.check_campaign`)."""
    return ()


@dataclass(frozen=True)
class Provider:
    """A provider adapter: pure functions over plain data.

    ``build_call`` and ``build_lookup`` take the provider's settings and, for providers that sign
    in (``sign_in``), the current token. Providers whose callbacks are configured per account
    rather than per call (``per_call_callbacks=False``) say so, register them with ``setup``
    (given the settings, the callback URL, the token and the caller ID), and have their callbacks
    matched to attempts by call id.
    """

    name: str
    title: str
    capabilities: Capabilities
    default_rate_limit: float
    build_call: Callable[[CallOrder, Any, str | None], httpx.Request]
    parse_call: Callable[[httpx.Response], str]
    verify_webhook: Callable[[Webhook, Any], None]
    parse_webhook: Callable[[Webhook], CallEvent]
    error_detail: Callable[[httpx.Response], str]
    build_lookup: Callable[[str, Any, str | None], httpx.Request] | None = None
    parse_lookup: Callable[[httpx.Response], CallEvent] | None = None
    reply_to_input: Callable[[InputVerdict], Any] | None = None
    reply_to_machine: Callable[[Message, str | None], Any] | None = None
    """The reply that leaves the message on a machine, given the message and its rendered text."""
    webhook_kinds: tuple[str, ...] = field(default=("event",))
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
    raise ProviderRejected(detail, status_code=status)


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
