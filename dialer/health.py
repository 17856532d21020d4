"""Is the deployment alive? ``dialer doctor``'s checks, and whether workers take a started campaign.

The pump task marks a key in Redis each time it runs, with Redis's own clock: a recent mark means
beat sent the task and a worker ran it, which is what a running campaign needs. Workers are also
asked directly (Celery's ``ping``), so that a missing beat and missing workers are told apart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import httpx
import redis
import sqlalchemy as sa
from sqlmodel import col

from dialer import db, notify
from dialer.errors import ConfigurationError, DialerError, ProviderAuthError
from dialer.models import Notification
from dialer.providers import PROVIDERS, get_provider
from dialer.providers.client import ProviderClient
from dialer.runner import private_host, unreachable
from dialer.settings import Settings

PUMP_MARK = "dialer:health:pump"
_MARK = "redis.call('SET', KEYS[1], redis.call('TIME')[1], 'EX', 86400)"
_AGE = "local t = redis.call('GET', KEYS[1]) if t then return redis.call('TIME')[1] - t end return -1"

WORKER = "celery -A workers worker --pool threads --concurrency 32"
BEAT = "celery -A workers beat"
RECEIVER = "dialer serve --host 0.0.0.0 --port 8000"
MAX_SKEW = 1.0
"""Seconds between this host's clock and Redis's beyond which windows and retry times drift."""


def mark_pump(client: redis.Redis) -> None:
    """Say that a pump ran now (the pump task calls this)."""
    client.eval(_MARK, 1, PUMP_MARK)


def pump_age(client: redis.Redis) -> float | None:
    """Seconds since a pump last ran, by Redis's clock (None: none has, or not for a day)."""
    age = int(client.eval(_AGE, 1, PUMP_MARK))
    return None if age < 0 else float(age)


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)


def worker_names(redis_url: str, timeout: float = 2.0) -> list[str]:
    """The Celery workers that answer a ping through the broker at ``redis_url``."""
    from celery import Celery

    app = Celery("dialer-health", broker=redis_url, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = False
    try:
        replies = app.control.ping(timeout=timeout)
    finally:
        app.close()
    return sorted(name for reply in replies for name in reply)


def pumping(age: float | None, settings: Settings) -> bool:
    """Whether a pump that ran ``age`` seconds ago means beat and a worker are at work."""
    return age is not None and age <= 2 * settings.tick_seconds + 2


def missing_workers(settings: Settings, *, wait: float) -> tuple[str, list[str]] | None:
    """None when workers take work within ``wait`` seconds; else why not, and the commands to run."""
    deadline = time.monotonic() + wait
    try:
        client = redis_client(settings.redis_url)
        while True:
            if pumping(pump_age(client), settings):
                return None
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        workers = worker_names(settings.redis_url, timeout=1.0)
    except redis.RedisError as error:
        return f"Redis at {settings.redis_url} does not answer ({error})", ["redis-server", WORKER, BEAT]
    if workers:
        return f"{len(workers)} worker(s) answer but no scheduler has sent them work in {wait:g} s", [BEAT]
    return f"no worker has taken work in {wait:g} s", [WORKER, BEAT]


# -- dialer doctor -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    state: Literal["ok", "warn", "FAIL"]
    detail: str


Mode = Literal["run", "workers"]


def chosen_mode(settings: Settings) -> Mode:
    """How this machine runs campaigns, when not said: on workers where Redis is configured
    (``DIALER_REDIS_URL``), else in one process (``dialer run``)."""
    return "workers" if "redis_url" in settings.model_fields_set else "run"


def checks(settings: Settings, *, http: httpx.Client, mode: Mode) -> Iterator[Check]:
    """Every check the mode needs, in the order an operator fixes things."""
    if mode == "run":
        yield Check("mode", "ok", "dialer run, one process (`--mode workers` checks a deployment)")
    else:
        yield Check("mode", "ok", "Celery workers, beat and the receiver (`--mode run` checks one process)")
    reachable = database(settings.database_url)
    yield reachable
    pushed = results(settings.database_url) if reachable.state == "ok" else None
    if pushed is not None:
        yield pushed
    also = _campaign_providers(settings.database_url) if reachable.state == "ok" else frozenset()
    if mode == "run":
        yield public_url(settings, also=also)
        yield from _credentials(settings, http)
        return
    try:
        client = redis_client(settings.redis_url)
        client.ping()
    except redis.RedisError as error:
        yield Check("redis", "FAIL", f"{settings.redis_url} does not answer ({error}): start redis-server")
    else:
        yield Check("redis", "ok", f"{settings.redis_url} answers")
        yield clock(client)
        yield from workers(settings, client)
    yield public_url(settings, also=also)
    yield receiver(settings, http)
    yield from _credentials(settings, http)


def results(url: str) -> Check | None:
    """Whether the results pushed to campaigns' [notify] URLs are getting there (None: none pushed)."""
    try:
        with db.session_scope(url) as session:
            standing = notify.standing(session)
            error = session.scalar(
                sa.select(col(Notification.last_error))
                .where(col(Notification.delivered_at).is_(None), col(Notification.last_error).is_not(None))
                .order_by(col(Notification.id).desc())
                .limit(1)
            )
    except sa.exc.SQLAlchemyError:
        return None  # the database's own check says why
    if not standing:
        return None
    counts = ", ".join(f"{standing[what]:,} {what.replace('_', ' ')}" for what in sorted(standing))
    if standing["given_up"]:
        return Check("results", "FAIL", f"{counts}; last error: {error} (`dialer notify replay NAME`)")
    if standing["failing"]:
        return Check("results", "warn", f"{counts}; last error: {error}")
    return Check("results", "ok", counts)


def _credentials(settings: Settings, http: httpx.Client) -> Iterator[Check]:
    configured = [name for name in settings.routes(PROVIDERS) if settings.provider_settings(name).configured]
    if not configured:
        yield Check(
            "providers", "warn", "no provider has credentials (see README: Settings); --simulate needs none"
        )
    for name in configured:
        yield credentials(name, settings, http)


def _campaign_providers(url: str) -> frozenset[str]:
    """The providers of the campaigns not yet finished (a run would call through them)."""
    try:
        with db.session_scope(url) as session:
            rows = session.execute(
                sa.text(
                    "SELECT DISTINCT provider FROM campaign WHERE status NOT IN ('completed', 'cancelled')"
                )
            )
            return frozenset(str(name) for (name,) in rows)
    except sa.exc.SQLAlchemyError:
        return frozenset()  # the database's own check says why


def database(url: str) -> Check:
    parsed = sa.make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    file = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if file and file != ":memory:" and not Path(file).exists():  # looking must leave no empty file
        try:
            db.check_sqlite_path(parsed)  # why a path cannot be one (no such directory, a symlink loop)
        except ConfigurationError as error:
            return Check("database", "FAIL", str(error))
        return Check("database", "FAIL", f"{shown}: no such file yet: run `dialer db upgrade`")
    try:
        current, head = db.revisions(url)
    except sa.exc.SQLAlchemyError as error:
        reason = getattr(error, "orig", None) or error
        return Check("database", "FAIL", f"{shown} cannot be reached: {str(reason).strip()}")
    if current is None:
        return Check("database", "FAIL", f"{shown} has no tables yet: run `dialer db upgrade`")
    if current != head:
        return Check(
            "database",
            "FAIL",
            f"{shown} is at migration {current}, this code needs {head}: run `dialer db upgrade`",
        )
    return Check("database", "ok", f"{shown} is reachable and migrated ({head})")


def clock(client: redis.Redis, now: float | None = None) -> Check:
    seconds, micros = client.time()
    skew = (time.time() if now is None else now) - (seconds + micros / 1e6)
    direction = "ahead of" if skew > 0 else "behind"
    detail = f"this host is {abs(skew):.3f} s {direction} Redis's clock"
    if abs(skew) > MAX_SKEW:
        return Check(
            "clock", "FAIL", f"{detail}: sync it (NTP); calling windows and retry times use each host's clock"
        )
    return Check("clock", "ok", detail)


def workers(settings: Settings, client: redis.Redis) -> Iterator[Check]:
    names = worker_names(settings.redis_url)
    if names:
        yield Check("workers", "ok", f"{len(names)} answer: {', '.join(names)}")
    else:
        yield Check("workers", "FAIL", f"none answers: start one or more with `{WORKER}`")
    age = pump_age(client)
    if pumping(age, settings):
        yield Check("beat", "ok", f"the pump ran {age:.0f} s ago")
    else:
        when = "never ran" if age is None else f"last ran {age:.0f} s ago"
        yield Check("beat", "FAIL", f"the pump {when}: start exactly one `{BEAT}` (and a worker)")


def public_url(settings: Settings, *, also: frozenset[str] = frozenset()) -> Check:
    """Whether the providers configured (and ``also`` these) can call ``DIALER_PUBLIC_URL`` back."""
    url = settings.public_url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Check("public URL", "FAIL", f"DIALER_PUBLIC_URL {url!r} is not an http(s) URL with a host")
    if parts.query or parts.fragment:
        return Check("public URL", "FAIL", f"DIALER_PUBLIC_URL {url!r} must have no query or fragment")
    used = [
        name
        for name in settings.routes(PROVIDERS)
        if settings.provider_settings(name).configured or name in also
    ]
    cannot = [name for name in used if unreachable(url, settings.provider_settings(name).base_url)]
    if not used and private_host(parts.hostname):
        return Check(
            "public URL",
            "warn",
            f"{url} is on this machine or a private network: no provider could call it back"
            " (no provider is configured yet, and no campaign names one; fine for --simulate)",
        )
    if cannot:
        return Check(
            "public URL",
            "FAIL",
            f"{url} is on this machine or a private network: {', '.join(cannot)} cannot call it back"
            " (`dialer run` refuses it; --simulate does not need it)",
        )
    if parts.scheme == "http" and not private_host(parts.hostname):
        return Check("public URL", "warn", f"{url} is plain http: callbacks and their tokens travel in clear")
    return Check("public URL", "ok", url)


def receiver(settings: Settings, http: httpx.Client) -> Check:
    health = settings.public_url.rstrip("/") + "/health"
    try:
        response = http.get(health, timeout=5)
    except httpx.HTTPError as error:
        return Check(
            "receiver", "warn", f"{health} does not answer from here ({error!r}): is `{RECEIVER}` running?"
        )
    if response.status_code != 200 or response.text != "ok":
        return Check("receiver", "FAIL", f"{health} answered {response.status_code}, not the receiver's ok")
    return Check("receiver", "ok", f"{health} answers")


def credentials(name: str, settings: Settings, http: httpx.Client) -> Check:
    provider = get_provider(name)
    account = settings.provider_settings(name)
    try:
        tried = ProviderClient(http).try_credentials(provider, account)
    except ProviderAuthError as error:
        return Check(name, "FAIL", f"credentials refused: {error}")
    except DialerError as error:
        return Check(name, "FAIL", str(error))
    if tried is None:
        return Check(
            name, "warn", f"credentials set, not tried: {provider.title} has no request that places no call"
        )
    return Check(name, "ok", f"credentials accepted: {tried}")
