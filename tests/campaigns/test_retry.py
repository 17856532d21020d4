from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from campaigns.outcomes import AttemptStatus
from campaigns.retry import next_attempt_at
from campaigns.spec import RetryPolicy

ENDED = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("outcome", "attempts_made", "expected"),
    [
        (AttemptStatus.BUSY, 1, ENDED + timedelta(minutes=10)),
        (AttemptStatus.NO_ANSWER, 2, ENDED + timedelta(minutes=10)),
        (AttemptStatus.FAILED, 1, ENDED + timedelta(minutes=10)),
        (AttemptStatus.BUSY, 3, None),  # the attempt limit
        (AttemptStatus.MACHINE, 1, None),  # not in retry_on
        (AttemptStatus.REJECTED, 1, None),
        (AttemptStatus.COMPLETED, 1, None),
    ],
)
def test_fixed_delay_from_the_end_of_the_previous_attempt(
    outcome: AttemptStatus, attempts_made: int, expected: datetime | None
) -> None:
    policy = RetryPolicy(max_attempts=3, delay="10m")
    assert next_attempt_at(policy, outcome=outcome, attempts_made=attempts_made, ended_at=ENDED) == expected


def test_exponential_delay_doubles_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, delay="10m", backoff="exponential", max_delay="30m")
    waits = [
        next_attempt_at(policy, outcome=AttemptStatus.BUSY, attempts_made=n, ended_at=ENDED)
        for n in (1, 2, 3, 4)
    ]
    assert [w - ENDED for w in waits if w] == [timedelta(minutes=m) for m in (10, 20, 30, 30)]


def test_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(delay="100s", jitter=0.2)
    rng = random.Random(1)
    waits = {
        next_attempt_at(policy, outcome=AttemptStatus.BUSY, attempts_made=1, ended_at=ENDED, rng=rng)
        for _ in range(200)
    }
    seconds = sorted((w - ENDED).total_seconds() for w in waits if w)
    assert 80 <= seconds[0] < 90 and 110 < seconds[-1] <= 120


def test_machine_is_retried_when_the_campaign_says_so() -> None:
    policy = RetryPolicy(retry_on=("machine",), delay="1h")
    assert next_attempt_at(
        policy, outcome=AttemptStatus.MACHINE, attempts_made=1, ended_at=ENDED
    ) == ENDED + timedelta(hours=1)
