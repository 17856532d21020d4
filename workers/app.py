"""Celery configuration. The broker carries attempt ids only; the database is the truth."""

from __future__ import annotations

import gc

from celery import Celery
from celery.signals import worker_ready

from dialer.settings import get_settings

settings = get_settings()

app = Celery("dialer", broker=settings.redis_url, include=["workers.tasks"])
app.conf.update(
    # A task whose worker died runs again; every state change is a guarded update, so that is safe.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_default_queue="dialer",
    # Countdowns stay short (seconds); long waits live in the database as next_attempt_at.
    broker_transport_options={"visibility_timeout": 120},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    beat_schedule={
        "pump": {"task": "dialer.pump", "schedule": settings.tick_seconds, "options": {"expires": 5}},
        "sweep": {"task": "dialer.sweep", "schedule": settings.sweep_seconds, "options": {"expires": 30}},
        "notify": {"task": "dialer.notify", "schedule": settings.tick_seconds, "options": {"expires": 5}},
    },
)


@worker_ready.connect
def _freeze_start_up_objects(**_: object) -> None:
    """Keep the start-up objects (modules, the app) out of garbage collections from now on.

    A full collection walking them paused a worker for tens of milliseconds, now and then right
    between a request passing the pacing gate and leaving; the provider then saw two requests
    closer than the interval.
    """
    gc.freeze()
