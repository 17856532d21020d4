"""A Celery app whose one task does nothing but count itself, configured like ``workers``.

The floor bench/dispatch.py compares ``place_call`` with: same broker, same acknowledgement and
prefetch settings, same pool. ``celery -A bench.noop_app worker`` (with the repository on the path).
"""

from __future__ import annotations

from functools import cache

import redis
from celery import Celery

from bench.common import REDIS_URL
from workers.app import app as dialer_app

DONE = "bench:noop:done"
SAME = (
    "task_acks_late",
    "task_reject_on_worker_lost",
    "worker_prefetch_multiplier",
    "task_ignore_result",
    "broker_transport_options",
)

app = Celery("noop", broker=REDIS_URL)
app.conf.update({name: dialer_app.conf[name] for name in SAME}, task_default_queue="noop")


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


@app.task(name="bench.noop")
def noop() -> None:
    _redis().incr(DONE)
