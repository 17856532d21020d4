"""A campaign's call as a flow of named steps, checked and walked with no I/O.

A step plays text (with the contact's ``{placeholders}``) or an audio file, and then:

- asks for keys, when it has ``keys``, ``choices`` or ``on``: an accepted answer leads to the
  step ``on`` names for it, else to ``next``; silence and a wrong answer are asked again while
  the step has ``attempts`` left (after its ``retry`` message), then lead to ``no_input`` and
  ``invalid``;
- or does its ``action``: ``optout`` (the number goes on the do-not-call list, and the call
  ends after the step's message), ``transfer`` (the callee is connected to ``to``, or to the
  number in the contact's ``to_column``), ``record`` (the callee's voice after a tone, then
  ``next``), ``hangup`` (the call ends after the message);
- or goes on to ``next``, and ends the call when it has none.

An answer may also lead to ``repeat`` (the step again) or ``hangup``.

:func:`problems` finds what would make a flow misbehave: a name that leads nowhere, a step no
call reaches, a loop with no way out, a key its step cannot take, an opt-out that a callee
could reach without pressing a key for it.

A call runs in segments (:func:`segment`): from a step up to the next question or the end, the
callee hears steps that need nothing from the dialer. :func:`judge` decides what one input makes
of a question, and which segment comes next. The receiver, each provider's compiler and
``dialer campaign try`` walk flows with these two, so they cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from campaigns.fields import Duration, Model, SpecError, placeholders, render

KEYS = "0123456789*#"
"""The keys of a telephone keypad."""
HANGUP = "hangup"
REPEAT = "repeat"
RESERVED = frozenset({HANGUP, REPEAT})
"""Targets that are not steps: end the call, or ask the same step again (an answer only)."""
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

Action = Literal["hangup", "optout", "transfer", "record"]
ENDS_CALL = frozenset({"hangup", "optout", "transfer"})
"""Actions after which the call is over (a transfer hands the callee to someone else)."""


class Keys(Model):
    """How a step takes keys: how many, how long between them, what ends them, what is accepted."""

    min_digits: int = Field(1, ge=1, le=20)
    max_digits: int = Field(1, ge=1, le=20)
    timeout: Duration = timedelta(seconds=5)
    """The wait for the first key after the prompt, and between keys."""
    terminator: str = "#"
    pattern: str | None = None
    """A regular expression every answer must match (None: any keys)."""

    @field_validator("terminator")
    @classmethod
    def _terminator(cls, terminator: str) -> str:
        if terminator not in ("", "#", "*"):
            raise ValueError("terminator must be '#', '*' or empty")
        return terminator

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from None
        return pattern

    @model_validator(mode="after")
    def _consistent(self) -> Keys:
        if self.min_digits > self.max_digits:
            raise ValueError("min_digits is larger than max_digits")
        if not timedelta(seconds=1) <= self.timeout <= timedelta(seconds=10):
            raise ValueError("timeout must be between 1 and 10 seconds")
        return self

    def fit(self, digits: str) -> str | None:
        """Why ``digits`` cannot be an answer under these rules, or None when they can."""
        if not self.min_digits <= len(digits) <= self.max_digits:
            wanted = (
                f"{self.min_digits}"
                if self.min_digits == self.max_digits
                else f"{self.min_digits} to {self.max_digits}"
            )
            return f"takes {wanted} key(s)"
        if any(key not in KEYS for key in digits):
            return "is not keypad keys (0-9, * and #)"
        if self.terminator and self.terminator in digits:
            return f"holds {self.terminator!r}, which ends the input"
        if self.pattern is not None and not re.fullmatch(self.pattern, digits):
            return f"does not match the pattern {self.pattern!r}"
        return None


ANY_KEYS = Keys()


class Step(Model):
    """One step of a call flow (see the module's docstring)."""

    say: str | None = None
    audio: str | None = None
    keys: Keys | None = None
    choices: dict[str, str] = Field(default_factory=dict)
    """Names of answers, for the report: ``{"1" = "yes"}``."""
    on: dict[str, str] = Field(default_factory=dict)
    """Where each answer leads: ``{"1" = "next_question", "9" = "stop"}``."""
    next: str | None = None
    attempts: int = Field(1, ge=1, le=10)
    retry: str | None = None
    """Said before the question is asked again after silence or a wrong answer."""
    no_input: str = HANGUP
    invalid: str = HANGUP
    action: Action | None = None
    to: str | None = None
    """A transfer's number (E.164)."""
    to_column: str | None = None
    """The contact CSV column that holds a transfer's number instead."""
    ring_timeout: Duration = timedelta(seconds=30)
    """How long a transfer's number rings before the transfer is given up."""
    scope: Literal["global", "campaign"] = "global"
    """An opt-out's do-not-call list: every campaign's, or this campaign's only."""
    max_duration: Duration = timedelta(seconds=60)
    """The longest recording."""
    end_key: str = "#"
    """The key that ends a recording."""

    @field_validator("audio")
    @classmethod
    def _url(cls, audio: str | None) -> str | None:
        if audio is not None and not audio.startswith(("http://", "https://")):
            raise ValueError("audio must be an http(s) URL")
        return audio

    @field_validator("say", "retry")
    @classmethod
    def _template(cls, text: str | None) -> str | None:
        if text is not None:
            if not text.strip():
                raise ValueError("is empty")
            placeholders(text)
        return text

    @model_validator(mode="after")
    def _kind(self) -> Step:
        if self.say is not None and self.audio is not None:
            raise SpecError("audio", "give say or audio, not both")
        # What differs from its default (not what the file wrote: a stored flow has every field).
        given = {
            name
            for name, info in type(self).model_fields.items()
            if getattr(self, name) != info.get_default(call_default_factory=True)
        }
        if self.asks and self.action is not None:
            raise SpecError("action", "a step either asks for keys or does an action, not both")
        if not self.asks:
            for name in ("attempts", "retry", "no_input", "invalid"):
                if name in given:
                    raise SpecError(name, "only a step that asks for keys (keys, choices or on) has it")
        only = {
            "transfer": ("to", "to_column", "ring_timeout"),
            "optout": ("scope",),
            "record": ("max_duration", "end_key"),
        }
        for action, names in only.items():
            for name in names:
                if name in given and self.action != action:
                    raise SpecError(name, f"only a {action} step has it")
        if self.action == "transfer" and (self.to is None) == (self.to_column is None):
            raise SpecError("to", "a transfer needs exactly one of to (a number) or to_column")
        if self.action in ENDS_CALL and self.next is not None:
            raise SpecError("next", f"a {self.action} step ends the call: it has no next step")
        if self.action == "record":
            if not timedelta(seconds=3) <= self.max_duration <= timedelta(hours=2):
                raise SpecError("max_duration", "a recording lasts 3 seconds to 2 hours")
            if self.end_key not in KEYS or len(self.end_key) != 1:
                raise SpecError("end_key", "one key of 0-9, * or #")
        if not timedelta(seconds=5) <= self.ring_timeout <= timedelta(seconds=120):
            raise SpecError("ring_timeout", "must be between 5 and 120 seconds")
        return self

    @property
    def asks(self) -> bool:
        """Whether the step waits for the callee's keys."""
        return self.keys is not None or bool(self.choices) or bool(self.on)

    @property
    def rules(self) -> Keys:
        return self.keys or ANY_KEYS

    @property
    def ends_call(self) -> bool:
        """Whether the call is over once this step has played."""
        return self.action in ENDS_CALL or (not self.asks and self.next is None)

    def accepts(self, digits: str) -> bool:
        """Whether ``digits`` answer the step: they fit its keys and, if it names its answers
        (``choices``, ``on``), are one of them."""
        if self.rules.fit(digits) is not None:
            return False
        return not (self.choices or self.on) or digits in self.choices or digits in self.on

    def text(self, variables: dict[str, str], *, ssml: bool = False) -> str | None:
        """What the step says to one contact (None: it plays audio, or says nothing)."""
        return None if self.say is None else render(self.say, variables, ssml=ssml)

    def targets(self) -> Iterator[tuple[str, str]]:
        """Where the step may lead: (the field that says so, the target)."""
        if self.next is not None:
            yield "next", self.next
        for key, target in self.on.items():
            yield f"on.{key}", target
        if self.asks:
            yield "no_input", self.no_input
            yield "invalid", self.invalid


class Speech(Model):
    """How a call speaks: its language and voice (each contact's own, from CSV columns, where
    given), and whether its texts are SSML."""

    language: str = "en-US"
    voice: str | None = None
    ssml: bool = False
    """The texts are SSML (the values put into placeholders are escaped)."""
    language_column: str | None = None
    """The contact CSV column that holds each contact's language (empty: ``language``)."""
    voice_column: str | None = None
    """The contact CSV column that holds each contact's voice (empty: ``voice``)."""

    @field_validator("voice", mode="before")
    @classmethod
    def _voice_text(cls, voice: object) -> object:
        """A style number written as a TOML number is the same voice as the string."""
        return str(voice) if isinstance(voice, int) and not isinstance(voice, bool) else voice


class Flow(Speech):
    """A call as named steps; ``start`` (else the first step) is where every call begins."""

    steps: dict[str, Step] = Field(min_length=1)
    start: str | None = None
    """Where every call begins (the first step written, if not given)."""

    @model_validator(mode="before")
    @classmethod
    def _start_named(cls, data: Any) -> Any:
        """The first step written is the start: named, so that it stays the start once stored
        (a stored spec's steps come back in another order)."""
        if isinstance(data, dict) and data.get("start") is None and isinstance(data.get("steps"), dict):
            data = {**data, "start": next(iter(data["steps"]), None)}
        return data

    @model_validator(mode="after")
    def _graph(self) -> Flow:
        problem = next(problems(self), None)
        if problem is not None:
            raise SpecError(*problem)
        return self

    @property
    def first(self) -> str:
        return self.start or next(iter(self.steps))

    def questions(self) -> list[str]:
        """The steps that ask for keys or record, in the order the file gives them."""
        return [name for name, step in self.steps.items() if step.asks or step.action == "record"]

    def required_columns(self) -> set[str]:
        """The contact CSV columns every contact needs: the texts' placeholders, transfer numbers."""
        return self.spoken_columns() | {step.to_column for step in self.steps.values() if step.to_column}

    def spoken_columns(self) -> set[str]:
        """The columns the texts' ``{placeholders}`` are filled from."""
        columns: set[str] = set()
        for step in self.steps.values():
            for text in (step.say, step.retry):
                columns |= placeholders(text or "")
        return columns


def problems(flow: Flow) -> Iterator[tuple[str, str]]:
    """What would make ``flow`` misbehave, as (the field at fault, why), first found first."""
    for name in flow.steps:
        if name in RESERVED or not _NAME.match(name):
            yield (
                f"steps.{name}",
                "a step name is lower case letters, digits and _, at most 40, starting with a letter,"
                f" and not {' or '.join(sorted(RESERVED))}",
            )
            return
    if flow.start is not None and flow.start not in flow.steps:
        yield "start", f"no step is named {flow.start!r}"
        return
    for name, step in flow.steps.items():
        for key in {**step.choices, **step.on}:
            if (why := step.rules.fit(key)) is not None:
                field = "on" if key in step.on else "choices"
                yield f"steps.{name}.{field}.{key}", f"the answer {key!r} {why} (the step's keys)"
                return
        for field, target in step.targets():
            if target == REPEAT and not field.startswith("on."):
                yield f"steps.{name}.{field}", "only an answer (on) can repeat the step"
                return
            if target not in RESERVED and target not in flow.steps:
                yield f"steps.{name}.{field}", f"no step is named {target!r}"
                return
            if target in flow.steps and flow.steps[target].action == "optout" and not field.startswith("on."):
                yield (
                    f"steps.{name}.{field}",
                    f"leads to the opt-out {target!r}, which only a key pressed for it may reach",
                )
                return
    if flow.steps[flow.first].action == "optout":
        yield (
            f"steps.{flow.first}",
            "an opt-out is reached by a key pressed for it, not at the start of the call",
        )
        return
    reached = _reachable(flow, flow.first)
    for name in flow.steps:
        if name not in reached:
            yield f"steps.{name}", f"no call reaches this step from {flow.first!r}"
            return
    for name in flow.steps:
        if (loop := _silent_loop(flow, name)) is not None:
            yield (
                f"steps.{name}.next",
                f"loops back without asking anything ({' -> '.join(loop)}): the call never ends",
            )
            return
    ending = _can_end(flow)
    for name in flow.steps:
        if name not in ending:
            yield f"steps.{name}", "a loop with no way out: no answer from here ever ends the call"
            return


def _edges(step: Step) -> list[str]:
    return [target for _, target in step.targets() if target not in RESERVED]


def _reachable(flow: Flow, start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for target in _edges(flow.steps[todo.pop()]):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _silent_loop(flow: Flow, name: str) -> list[str] | None:
    """The steps of a loop of ``next`` with no question on it, from ``name``, if there is one."""
    path = [name]
    step = flow.steps[name]
    while not step.asks and step.next is not None and step.next in flow.steps:
        if step.next in path:
            return [*path[path.index(step.next) :], step.next]
        path.append(step.next)
        step = flow.steps[step.next]
    return None


def _can_end(flow: Flow) -> set[str]:
    """The steps from which some way through the flow ends the call."""
    ending = {
        name
        for name, step in flow.steps.items()
        if step.ends_call or any(target == HANGUP for _, target in step.targets())
    }
    grew = True
    while grew:
        grew = False
        for name, step in flow.steps.items():
            if name not in ending and any(target in ending for target in _edges(step)):
                ending.add(name)
                grew = True
    return ending


@dataclass(frozen=True)
class Segment:
    """The steps a callee hears, in order, with nothing asked of the dialer in between.

    The last one asks for keys (:attr:`question`), or the call ends after it. ``preface`` is
    said first (a retry message); ``tries`` counts the times the question has been asked, this
    one included.
    """

    steps: tuple[tuple[str, Step], ...]
    preface: str | None = None
    tries: int = 1

    @property
    def question(self) -> tuple[str, Step] | None:
        name, step = self.steps[-1]
        return (name, step) if step.asks else None

    def actions(self) -> list[tuple[str, Step]]:
        """The steps that do something beyond speaking (opt-out, transfer, record, hang up)."""
        return [(name, step) for name, step in self.steps if step.action is not None]


def segment(flow: Flow, name: str, *, preface: str | None = None, tries: int = 1) -> Segment:
    """What the callee hears from step ``name`` on: each step's ``next`` is followed until a step
    that asks for keys or ends the call (a record step is heard on the way)."""
    steps: list[tuple[str, Step]] = []
    seen: set[str] = set()
    while name not in seen:  # problems() refuses silent loops; a flow built without it stops here
        seen.add(name)
        step = flow.steps[name]
        steps.append((name, step))
        if step.asks or step.ends_call or step.next is None:
            break
        name = step.next
    return Segment(tuple(steps), preface=preface, tries=tries)


def start(flow: Flow) -> Segment:
    """What every call of the flow begins with."""
    return segment(flow, flow.first)


def segments(flow: Flow) -> Iterator[Segment]:
    """Every segment a call of ``flow`` may run: its start, each question asked again, and where
    each answer leads (for limits a provider sets on what one reply may hold)."""
    yield start(flow)
    for name, step in flow.steps.items():
        if step.asks:
            yield segment(flow, name, preface=step.retry, tries=2)
        for _, target in step.targets():
            if target in flow.steps:
                yield segment(flow, target)


@dataclass(frozen=True)
class Answer:
    """An answer as it is kept: the keys, the choice they name, whether the step accepted them."""

    digits: str
    choice: str | None
    valid: bool


@dataclass(frozen=True)
class Turn:
    """What one input makes of a question: the answer to keep (None while the question is asked
    again), and what the callee hears next (None: the call ends)."""

    answer: Answer | None
    then: Segment | None


def judge(flow: Flow, name: str, digits: str, *, tries: int, final: bool = False) -> Turn:
    """The turn the keys ``digits`` (``""``: none) give the question ``name``, asked for the
    ``tries``-th time. ``final``: it cannot be asked again (the call is over, or the provider
    asked it as often as the step allows)."""
    step = flow.steps[name]
    if step.accepts(digits):
        target = step.on.get(digits, step.next)
        return Turn(Answer(digits, step.choices.get(digits), True), _after(flow, name, target))
    if tries < step.attempts and not final:
        return Turn(None, segment(flow, name, preface=step.retry, tries=tries + 1))
    target = step.invalid if digits else step.no_input
    return Turn(Answer(digits, None, False), _after(flow, name, target))


def _after(flow: Flow, name: str, target: str | None) -> Segment | None:
    if target is None or target == HANGUP:
        return None
    return segment(flow, name if target == REPEAT else target)


@dataclass(frozen=True)
class OneQuestion:
    """A flow a provider runs as one instruction: steps said first, one question (asked
    ``attempts`` times, with its ``retry`` before each new try), and one closing message every
    way out of it ends with (None: silence)."""

    intro: tuple[tuple[str, Step], ...]
    question: tuple[str, Step] | None
    closing: str | None


def one_question(flow: Flow, title: str) -> OneQuestion | tuple[str, str]:
    """``flow`` as :class:`OneQuestion`, or (the field at fault, why ``title`` cannot run it):
    for providers that ask one question a call and report the answer when the call is over."""
    first = start(flow)
    if first.question is None:
        return OneQuestion(first.steps, None, None)
    name, step = first.question
    closings: dict[str | None, str] = {}
    for field, target in step.targets():
        if target == REPEAT:
            return f"steps.{name}.{field}", f"{title} cannot ask a question again once it is answered"
        if target == HANGUP:
            closings.setdefault(None, field)
            continue
        after = segment(flow, target)
        if after.question is not None or any(s.action in ("transfer", "record") for _, s in after.steps):
            what = "asks a second question" if after.question else f"does a {after.steps[-1][1].action}"
            return f"steps.{target}", f"{title} asks one question a call, and this step {what}"
        if any(s.audio for _, s in after.steps):
            return f"steps.{target}.audio", f"{title} says a closing message as text only"
        said = " ".join(s.say for _, s in after.steps if s.say) or None
        closings.setdefault(said, field)
    if step.next is None and (not step.on or any(key not in step.on for key in step.choices)):
        closings.setdefault(None, "next")  # an answer that leads nowhere ends the call in silence
    if len(closings) > 1:
        fields = " and ".join(sorted(closings.values()))
        return (
            f"steps.{name}",
            f"{title} says one closing message whatever the answer, but {fields} lead to different ones",
        )
    return OneQuestion(first.steps[:-1], first.question, next(iter(closings), None))
