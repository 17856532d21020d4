"""Thin tasks: they take ids and call into :mod:`dialer`, which holds the logic."""

from __future__ import annotations

import contextlib
from functools import cache

import redis

from dialer import dispatch, health, metrics, notify, scheduler
from dialer.pacing import RedisLimiter
from dialer.runtime import Runtime, http_client
from workers.app import app, settings


def _enqueue(attempt_id: int, countdown: float) -> None:
    place_call.apply_async((attempt_id,), countdown=countdown or None)


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


@cache
def runtime() -> Runtime:
    """This worker process's runtime (made after fork, once)."""
    return Runtime(
        settings=settings,
        limiter=RedisLimiter(_redis()),
        http=http_client(settings),
        enqueue=_enqueue,
        on_rate_limited=lambda provider: metrics.count_rate_limited(_redis(), provider),
    )


@app.task(name="dialer.place_call")
def place_call(attempt_id: int) -> None:
    dispatch.place_call(runtime(), attempt_id)


@app.task(name="dialer.pump")
def pump() -> int:
    health.mark_pump(_redis())  # `campaign start` and `dialer doctor` look for it
    # One pump at a time across every beat and worker: overlapping pumps would only waste work.
    lock = _redis().lock("dialer:pump", timeout=30, blocking=False)
    if not lock.acquire():
        return 0
    try:
        return scheduler.pump(runtime())
    finally:
        lock.release()


SWEEP_LOCK_SECONDS = 60
"""How long a sweep keeps others out at most. A sweep takes well under a second, but its worker
may be killed holding the lock: sweeps then stop until it lapses (it was 300 s, longer than the
kill -9 fault test's deadline). A sweep outliving it overlaps the next, whose guarded updates
change nothing twice."""


@app.task(name="dialer.sweep")
def sweep() -> dict[str, int]:
    lock = _redis().lock("dialer:sweep", timeout=SWEEP_LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return {}
    try:
        return scheduler.sweep(runtime())
    finally:
        with contextlib.suppress(redis.exceptions.LockNotOwnedError):  # it lapsed meanwhile
            lock.release()


@app.task(name="dialer.notify")
def deliver_results() -> dict[str, int]:
    """Push the results due to their campaigns' [notify] URLs (each claimed by one deliverer)."""
    return dict(notify.deliver_due(settings, runtime().http))
