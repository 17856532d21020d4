"""Retry decisions: whether an ended attempt is tried again, and when."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from campaigns.outcomes import AttemptStatus
from campaigns.spec import RetryPolicy


def retry_delay(policy: RetryPolicy, *, attempts_made: int, rng: random.Random | None = None) -> timedelta:
    """The wait after the ``attempts_made``-th attempt: fixed or doubling, capped, with jitter."""
    delay = policy.delay
    if policy.backoff == "exponential":
        delay = min(policy.delay * 2 ** (attempts_made - 1), policy.max_delay)
    if policy.jitter:
        delay *= 1 + (rng or random).uniform(-policy.jitter, policy.jitter)
    return delay


def next_attempt_at(
    policy: RetryPolicy,
    *,
    outcome: AttemptStatus,
    attempts_made: int,
    ended_at: datetime,
    rng: random.Random | None = None,
) -> datetime | None:
    """When to call again after an attempt ended with ``outcome``, or None when the contact is done.

    The delay is measured from the end of the previous attempt.
    """
    if outcome.value not in policy.retry_on or attempts_made >= policy.max_attempts:
        return None
    return ended_at + retry_delay(policy, attempts_made=attempts_made, rng=rng)
