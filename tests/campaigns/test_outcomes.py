from __future__ import annotations

import pytest

from campaigns.outcomes import FINAL, AttemptStatus, moves_forward


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (AttemptStatus.QUEUED, AttemptStatus.DISPATCHING, True),
        (AttemptStatus.DIALING, AttemptStatus.RINGING, True),
        (AttemptStatus.UNCONFIRMED, AttemptStatus.RINGING, True),
        (AttemptStatus.UNKNOWN, AttemptStatus.RINGING, False),
        (AttemptStatus.RINGING, AttemptStatus.COMPLETED, True),
        (AttemptStatus.ANSWERED, AttemptStatus.RINGING, False),
        (AttemptStatus.COMPLETED, AttemptStatus.ANSWERED, False),
        (AttemptStatus.COMPLETED, AttemptStatus.BUSY, False),
        (AttemptStatus.BUSY, AttemptStatus.BUSY, False),
    ],
)
def test_an_attempt_only_moves_forward(current: AttemptStatus, new: AttemptStatus, allowed: bool) -> None:
    assert moves_forward(current, new) is allowed


def test_every_final_outcome_is_final() -> None:
    assert {s.value for s in FINAL} == {
        "completed",
        "busy",
        "no_answer",
        "failed",
        "rejected",
        "machine",
        "cancelled",
        "unknown",
    }
