"""The campaign file: provider, caller ID, message, DTMF question, retry policy, calling window, pacing.

A campaign file is TOML. ``parse_campaign`` turns its text into a validated :class:`CampaignSpec`;
every problem is reported with the dotted path of the field that caused it.
"""

from __future__ import annotations

import re
import tomllib
from datetime import datetime, timedelta
from functools import cached_property
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from campaigns.fields import Duration, Model, SpecError, parse_duration, placeholders, render
from campaigns.flow import Flow, Keys, Speech, Step

__all__ = ["Duration", "SpecError", "parse_duration", "placeholders", "render"]


class Message(Speech):
    """What the callee hears: TTS text (with ``{placeholders}``) or an audio file URL."""

    text: str | None = None
    audio_url: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Message:
        if (self.text is None) == (self.audio_url is None):
            raise ValueError("give exactly one of text or audio_url")
        if self.text is not None:
            if not self.text.strip():
                raise ValueError("text is empty")
            placeholders(self.text)
        if self.audio_url is not None and not self.audio_url.startswith(("http://", "https://")):
            raise ValueError("audio_url must be an http(s) URL")
        return self

    def render(self, variables: dict[str, str]) -> str | None:
        """The text one contact hears (None for an audio message)."""
        return None if self.text is None else render(self.text, variables, ssml=self.ssml)


class Question(Model):
    """A DTMF question asked after the message."""

    prompt: str = Field(min_length=1)
    prompt_audio_url: str | None = None
    min_digits: int = Field(1, ge=1, le=20)
    max_digits: int = Field(1, ge=1, le=20)
    attempts: int = Field(1, ge=1, le=10)
    timeout: Duration = timedelta(seconds=5)
    terminator: str = "#"
    pattern: str = "[0-9]*"
    choices: dict[str, str] = Field(default_factory=dict)
    invalid_prompt: str = "Sorry, that was not a valid choice."
    final_prompt: str = "Thank you. Goodbye."

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return pattern

    @field_validator("terminator")
    @classmethod
    def _key(cls, terminator: str) -> str:
        if terminator not in ("", "#", "*"):
            raise ValueError("terminator must be '#', '*' or empty")
        return terminator

    @model_validator(mode="after")
    def _consistent(self) -> Question:
        if self.min_digits > self.max_digits:
            raise ValueError("min_digits is larger than max_digits")
        if not timedelta(seconds=1) <= self.timeout <= timedelta(seconds=10):
            raise ValueError("timeout must be between 1 and 10 seconds")
        for key in self.choices:
            if not self.accepts(key):
                raise ValueError(f"choice {key!r} does not satisfy the digits and pattern rules")
        return self

    def accepts(self, digits: str) -> bool:
        """True when ``digits`` is a valid answer (length, pattern, and one of the choices if any)."""
        if not self.min_digits <= len(digits) <= self.max_digits:
            return False
        if not re.fullmatch(self.pattern, digits):
            return False
        return not self.choices or digits in self.choices

    def choice(self, digits: str | None) -> str | None:
        return self.choices.get(digits) if digits else None


RetryableOutcome = Literal["busy", "no_answer", "failed", "machine", "unknown"]
"""``unknown``: no result came (the callee may have been called, and answered): retried only if asked."""


class RetryPolicy(Model):
    """Which outcomes are tried again, how many attempts in all, and how long to wait between them."""

    max_attempts: int = Field(3, ge=1, le=20)
    retry_on: tuple[RetryableOutcome, ...] = ("busy", "no_answer", "failed")
    delay: Duration = timedelta(minutes=30)
    backoff: Literal["fixed", "exponential"] = "fixed"
    max_delay: Duration = timedelta(hours=24)
    jitter: float = Field(0.0, ge=0.0, le=0.5)

    @model_validator(mode="after")
    def _delays(self) -> RetryPolicy:
        if self.delay <= timedelta(0):
            raise ValueError("delay must be positive")
        if self.max_delay < self.delay:
            raise ValueError("max_delay is shorter than delay")
        return self


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


def _minutes(value: str) -> int:
    match = _CLOCK.match(value)
    if not match or (match[1] == "24" and match[2] != "00"):
        raise ValueError(f"not a time of day: {value!r} (use HH:MM, 00:00 to 24:00)")
    return int(match[1]) * 60 + int(match[2])


class Window(Model):
    """Hours and weekdays when calls may be placed, in the callee's local time."""

    start: str = "09:00"
    end: str = "20:00"
    days: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat")
    timezone: str | None = None

    @field_validator("days")
    @classmethod
    def _days(cls, days: tuple[str, ...]) -> tuple[str, ...]:
        lowered = tuple(day.lower()[:3] for day in days)
        unknown = [day for day in lowered if day not in _DAYS]
        if unknown or not lowered:
            raise ValueError(f"days must name weekdays from {', '.join(_DAYS)}")
        return lowered

    @field_validator("timezone")
    @classmethod
    def _zone(cls, zone: str | None) -> str | None:
        if zone is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {zone!r}") from None
        return zone

    @model_validator(mode="after")
    def _order(self) -> Window:
        if _minutes(self.start) >= _minutes(self.end):
            raise ValueError("start must be before end (windows across midnight are not supported)")
        return self

    @property
    def start_minute(self) -> int:
        return _minutes(self.start)

    @property
    def end_minute(self) -> int:
        return _minutes(self.end)

    @property
    def weekdays(self) -> frozenset[int]:
        return frozenset(_DAYS.index(day) for day in self.days)

    @classmethod
    def always(cls) -> Window:
        return cls(start="00:00", end="24:00", days=_DAYS)


MachineAction = Literal["continue", "hangup", "leave_message"]


class CallOptions(Model):
    """How each call is conducted, where the provider offers it."""

    max_duration: Duration | None = None
    """Hang up this long after the callee answers (None: the provider's own limit)."""
    on_machine: MachineAction = "continue"
    """When a machine answers: play the call as to a person (``continue``), hang up, or wait for
    the beep and leave the message without asking the question (``leave_message``)."""
    beep_timeout: Duration | None = None
    """With ``leave_message``: how long to wait for the beep (the provider's default if None)."""

    @model_validator(mode="after")
    def _ranges(self) -> CallOptions:
        if self.max_duration is not None and not timedelta(seconds=1) <= self.max_duration <= timedelta(
            hours=24
        ):
            raise ValueError("max_duration must be between 1 second and 24 hours")
        if self.beep_timeout is not None:
            if self.on_machine != "leave_message":
                raise ValueError("beep_timeout only applies with on_machine = 'leave_message'")
            if not timedelta(seconds=30) <= self.beep_timeout <= timedelta(seconds=120):
                raise ValueError("beep_timeout must be between 30 and 120 seconds")
        return self


class Pacing(Model):
    """Per-campaign limits below the provider account's own rate limit."""

    calls_per_second: float | None = Field(None, gt=0, le=1000)
    max_concurrent: int = Field(50, ge=1, le=10000)


class CallerIds(Model):
    """A pool of caller IDs besides the campaign's ``caller_id``: each call takes one, in turn
    (``rotate``) or the one that shares the callee's country and area code (``local``; else the
    campaign's ``caller_id``), none more than ``per_day`` times in 24 hours."""

    numbers: tuple[str, ...] = ()
    file: str | None = None
    """A file of numbers, one per line, beside the campaign file: read into ``numbers`` at create."""
    choose: Literal["rotate", "local"] = "rotate"
    per_day: int | None = Field(None, ge=1)


class Notify(Model):
    """Where each contact's final result is pushed as it is settled (and each attempt's, with
    ``attempts``): a JSON POST signed with ``DIALER_NOTIFY_SECRET``."""

    url: str | None = None
    attempts: bool = False

    @field_validator("url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return url


class Schedule(Model):
    """When a campaign may call at all: from ``start``, and until ``end``, after which the contacts
    not reached finish as ``expired``. Both are moments with their offset (``2026-12-07T09:00:00-05:00``)."""

    start: datetime | None = None
    end: datetime | None = None

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, moment: datetime | None) -> datetime | None:
        if moment is not None and moment.utcoffset() is None:
            raise ValueError("give the moment with its offset from UTC (Z, or +01:00 and the like)")
        return moment

    @model_validator(mode="after")
    def _order(self) -> Schedule:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise SpecError("end", "is not after schedule.start")
        return self

    def before_start(self, now: datetime) -> bool:
        return self.start is not None and now < self.start

    def over(self, now: datetime) -> bool:
        return self.end is not None and now >= self.end


class CampaignSpec(Model):
    """A parsed, validated campaign file."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    provider: str
    fallback: tuple[str, ...] = ()
    """The routes taken, in order, when the one in use cannot place calls (after ``provider``, the
    first route: the campaign row's ``provider`` is the route in use)."""
    caller_id: str
    message: Message | None = None
    question: Question | None = None
    flow: Flow | None = None
    retry: RetryPolicy = RetryPolicy()
    window: Window = Window()
    pacing: Pacing = Pacing()
    call: CallOptions = CallOptions()
    caller_ids: CallerIds = CallerIds()
    schedule: Schedule = Schedule()
    notify: Notify = Notify()
    phone_column: str = "phone"
    region: str | None = Field(None, min_length=2, max_length=2)
    defaults: dict[str, str] = Field(default_factory=dict)
    """What a ``{placeholder}`` says for a contact whose cell is empty (``first_name = "there"``);
    a row with an empty placeholder and no default here is rejected at import."""

    @field_validator("region")
    @classmethod
    def _region(cls, region: str | None) -> str | None:
        if region is None:
            return None
        from phonenumbers import SUPPORTED_REGIONS

        if region.upper() not in SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {region!r} (use a two-letter country code such as US or GB)")
        return region.upper()

    @model_validator(mode="after")
    def _one_call(self) -> CampaignSpec:
        if self.flow is not None and self.message is not None:
            raise SpecError(
                "flow", "a campaign gives its call as [flow] or as [message] (and [question]), not both"
            )
        if self.flow is None and self.message is None:
            raise SpecError("message", "a campaign needs [message] (and maybe [question]), or a [flow]")
        if self.flow is not None and self.question is not None:
            raise SpecError("question", "a flow asks its questions in its steps")
        for name, text in self.defaults.items():
            if name not in self.call_flow.spoken_columns():
                raise SpecError(f"defaults.{name}", "no text of the call has this {placeholder}")
            if not text.strip():
                raise SpecError(f"defaults.{name}", "an empty default is what it is there to replace")
        if len(set(self.routes)) != len(self.routes):
            raise SpecError("fallback", "names a route twice (the provider is the first route)")
        if self.call.on_machine == "leave_message" and "machine" in self.retry.retry_on:
            raise SpecError(
                "retry.retry_on",
                "lists machine, but call.on_machine = 'leave_message' leaves the message on the machine:"
                " calling again would leave another; take machine out of retry_on, or choose another"
                " on_machine",
            )
        return self

    @property
    def routes(self) -> tuple[str, ...]:
        """The providers a campaign may call through, in order: ``provider``, then ``fallback``."""
        return (self.provider, *self.fallback)

    @property
    def caller_pool(self) -> tuple[str, ...]:
        """Every caller ID the campaign may call from: its pool, then its ``caller_id`` if not in it."""
        pool = self.caller_ids.numbers
        return pool if self.caller_id in pool else (*pool, self.caller_id)

    @cached_property
    def call_flow(self) -> Flow:
        """The call as a flow: ``[flow]``, or ``[message]`` and ``[question]`` as two steps."""
        if self.flow is not None:
            return self.flow
        assert self.message is not None
        return legacy_flow(self.message, self.question)

    def required_columns(self) -> set[str]:
        """The CSV columns the call needs for every contact."""
        return self.call_flow.required_columns()


def legacy_flow(message: Message, question: Question | None) -> Flow:
    """``[message]`` and ``[question]`` as the flow they always meant: the message, then the
    question (asked again after its invalid prompt while it has attempts), then the final prompt."""
    steps = {
        "message": Step(say=message.text, audio=message.audio_url, next="question" if question else None)
    }
    if question is not None:
        steps["question"] = Step(
            say=None if question.prompt_audio_url else question.prompt,
            audio=question.prompt_audio_url,
            keys=Keys(
                min_digits=question.min_digits,
                max_digits=question.max_digits,
                timeout=question.timeout,
                terminator=question.terminator,
                pattern=question.pattern,
            ),
            choices=question.choices,
            next="final",
            attempts=question.attempts,
            retry=question.invalid_prompt,
            no_input="final",
            invalid="final",
        )
        steps["final"] = Step(say=question.final_prompt)
    return Flow(steps=steps, **message.model_dump(include=set(Speech.model_fields)))


def parse_campaign(text: str) -> CampaignSpec:
    """Parse and validate a campaign file's TOML text, raising :class:`SpecError` on the first problem."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError("", f"not valid TOML: {error}") from None
    try:
        return CampaignSpec.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        path = [str(part) for part in first["loc"]]
        message = first["msg"].removeprefix("Value error, ")
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, SpecError):  # a check that names a field inside the part it checked
            path, message = [*path, *filter(None, [cause.field])], cause.message
        field = ".".join(path)
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        raise SpecError(field, message) from None
