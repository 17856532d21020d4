"""The call-outcome vocabulary and the attempt state machine.

An attempt moves forward only: ``queued -> dispatching -> dialing -> ringing -> answered -> final``.
``unconfirmed`` marks a request that may have reached the provider without an answer (a read
timeout, a worker that died sending it); webhooks or a status look-up settle it, it is never dialed
blindly again. When no result comes within the call's longest possible life, the attempt ends
``unknown``: the callee may have been called, and may have answered, so it is retried only where the
campaign asks for it. A final status never changes, except ``unknown`` to the result a late callback
or look-up brings (``dialer.recorder.finish``).
"""

from __future__ import annotations

from enum import StrEnum


class AttemptStatus(StrEnum):
    """Where one call attempt stands; the final members are the outcome vocabulary's results."""

    QUEUED = "queued"
    DISPATCHING = "dispatching"
    UNCONFIRMED = "unconfirmed"
    DIALING = "dialing"
    RINGING = "ringing"
    ANSWERED = "answered"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    REJECTED = "rejected"
    MACHINE = "machine"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self in FINAL

    @property
    def rank(self) -> int:
        return _RANK[self]


FINAL = frozenset(
    {
        AttemptStatus.COMPLETED,
        AttemptStatus.BUSY,
        AttemptStatus.NO_ANSWER,
        AttemptStatus.FAILED,
        AttemptStatus.REJECTED,
        AttemptStatus.MACHINE,
        AttemptStatus.CANCELLED,
        AttemptStatus.UNKNOWN,
    }
)
LIVE = frozenset(AttemptStatus) - FINAL

_RANK = {
    AttemptStatus.QUEUED: 0,
    AttemptStatus.DISPATCHING: 1,
    AttemptStatus.UNCONFIRMED: 2,
    AttemptStatus.DIALING: 3,
    AttemptStatus.RINGING: 4,
    AttemptStatus.ANSWERED: 5,
} | {status: 9 for status in FINAL}


def earlier_than(status: AttemptStatus) -> frozenset[AttemptStatus]:
    """The statuses an attempt may leave to reach ``status`` (the guard of a forward-only update)."""
    return frozenset(s for s in AttemptStatus if s.rank < status.rank)


def moves_forward(current: AttemptStatus, new: AttemptStatus) -> bool:
    """True when an event with ``new`` may replace ``current``: late or repeated events may not."""
    return new.rank > current.rank


class ContactState(StrEnum):
    """A contact waits (``pending``), has one live attempt (``calling``), or is finished (``done``)."""

    PENDING = "pending"
    CALLING = "calling"
    DONE = "done"


class ContactResult(StrEnum):
    """How a finished contact ended."""

    REACHED = "reached"
    DTMF_ANSWERED = "dtmf_answered"
    OPTED_OUT = "opted_out"
    EXHAUSTED = "exhausted"
    UNKNOWN = "unknown"
    """The last attempt's result never came, and the campaign does not retry ``unknown``."""
    EXPIRED = "expired"
    """Not reached before the campaign's ``schedule.end``."""
    INVALID = "invalid"
    DNC = "dnc"
    CANCELLED = "cancelled"


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
