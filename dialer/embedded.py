"""The embedded mode: the pump, the sweeper and ``place_call`` workers in one process, no broker."""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from types import TracebackType
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa
import uvicorn

from dialer import lease, notify
from dialer.db import session_scope
from dialer.dispatch import place_call
from dialer.errors import DatabaseGone, LeaseLost
from dialer.models import utcnow
from dialer.pacing import LocalLimiter
from dialer.runtime import Runtime, http_client
from dialer.scheduler import pump, sweep
from dialer.settings import Settings

log = logging.getLogger("dialer.embedded")
T = TypeVar("T")

DATABASE_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)
"""What a database that is not answering raises: a dropped or refused connection, a server
restarting, SQLite locked past its busy timeout."""
LONGEST_BACKOFF = 5.0


class Outage:
    """Database errors ridden out with a growing wait, until the database has been gone longer
    than ``limit`` seconds: then :class:`DatabaseGone`."""

    def __init__(self, limit: float, *, first_wait: float = 0.25) -> None:
        self.limit, self.first_wait = limit, first_wait
        self.since: float | None = None
        self.wait = first_wait

    def failed(self, error: Exception) -> float:
        """Note one failure; the seconds to wait before trying again."""
        now = time.monotonic()
        self.since = self.since or now
        gone = now - self.since
        cause = getattr(error, "orig", None) or error
        if gone > self.limit:
            raise DatabaseGone(
                f"the database has not answered for {gone:.0f} s (DIALER_DB_OUTAGE_LIMIT is {self.limit:g}):"
                f" {str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__}"
            )
        log.warning(
            "database: %s; trying again in %.2g s (gone %.0f s of %g)", cause, self.wait, gone, self.limit
        )
        wait, self.wait = self.wait, min(self.wait * 2, LONGEST_BACKOFF)
        return wait

    def over(self) -> None:
        if self.since is not None:
            log.warning("database: answering again after %.0f s", time.monotonic() - self.since)
        self.since, self.wait = None, self.first_wait

    def retrying(self, step: Callable[[], T]) -> T:
        """``step()``, tried again while the database does not answer."""
        while True:
            try:
                result = step()
            except DATABASE_ERRORS as error:
                time.sleep(self.failed(error))
                continue
            self.over()
            return result


class LocalQueue:
    """Attempt ids ordered by when they are due, served by a pool of threads."""

    def __init__(self, handler: Callable[[int], None], *, workers: int = 16) -> None:
        self._handler = handler
        self._heap: list[tuple[float, int, int]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._serve, daemon=True, name=f"caller-{i}") for i in range(workers)
        ]

    def put(self, attempt_id: int, countdown: float = 0.0) -> None:
        with self._ready:
            heapq.heappush(self._heap, (time.monotonic() + countdown, next(self._order), attempt_id))
            self._ready.notify()

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._stopping and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._ready.wait(timeout=self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopping:
                    return
                _, _, attempt_id = heapq.heappop(self._heap)
            try:
                self._handler(attempt_id)
            except DATABASE_ERRORS as error:  # the attempt stays queued: the sweeper sends it again
                log.warning("placing attempt %s: database: %s", attempt_id, getattr(error, "orig", error))
            except Exception:
                log.exception("placing attempt %s failed", attempt_id)

    def __enter__(self) -> LocalQueue:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)


def local_runtime(
    settings: Settings,
    queue_put: Callable[[int, float], None],
    only: frozenset[int] | None = None,
    *,
    simulated: bool = False,
    any_time: bool = False,
    holder: str | None = None,
) -> Runtime:
    return Runtime(
        settings=settings,
        limiter=LocalLimiter(),
        # Under a lease, a request must be sent within its send window: a new connection times out
        # after half of it (its name's look-up aside, which httpx does not time).
        http=http_client(settings, connect=lease.SEND_WINDOW / 2) if holder else http_client(settings),
        enqueue=queue_put,
        only=only,
        simulated=simulated,
        any_time=any_time,
        holder=holder,
    )


def run_until(
    settings: Settings,
    done: Callable[[], bool],
    *,
    on_tick: Callable[[], None] | None = None,
    only: frozenset[int] | None = None,
    simulated: bool = False,
    any_time: bool = False,
    holder: str | None = None,
) -> None:
    """Pump, place and sweep in this process until ``done()`` says the work is over (``only``
    these campaigns, by id, if given; calls placed under ``holder``'s lease, if given). On return
    no call of this process is on its way.

    A database that does not answer is waited for, trying again with a growing wait, for up to
    ``DIALER_DB_OUTAGE_LIMIT`` seconds; past that the callers stop and :class:`DatabaseGone` is raised."""
    runtimes: dict[str, Runtime] = {}
    queue = LocalQueue(lambda attempt_id: place_call(runtimes["rt"], attempt_id))
    rt = runtimes["rt"] = local_runtime(
        settings, queue.put, only, simulated=simulated, any_time=any_time, holder=holder
    )
    outage = Outage(settings.db_outage_limit, first_wait=settings.tick_seconds)
    last_sweep = 0.0
    keeper = LeaseKeeper(settings.database_url, holder, sorted(only or ())) if holder else None

    def step() -> None:
        nonlocal last_sweep
        if keeper:  # first: a run woken after another took its campaign over does nothing more
            keeper.keep()
        pump(rt)
        if time.monotonic() - last_sweep >= settings.sweep_seconds:
            sweep(rt)
            last_sweep = time.monotonic()
        if on_tick:
            on_tick()

    notifier = Notifier(settings, only)
    try:
        with keeper or nullcontext(), queue, notifier:  # the lease kept until the last call is out
            while not done():
                try:
                    step()
                except DATABASE_ERRORS as error:
                    time.sleep(outage.failed(error))  # Ctrl-C is seen within LONGEST_BACKOFF
                    continue
                outage.over()
                time.sleep(settings.tick_seconds)
    finally:
        # Only once the callers have stopped: a request in flight must not lose its connection.
        rt.http.close()


class LeaseKeeper:
    """Renews ``holder``'s leases on the campaigns every fifth of their time, in a thread of its
    own while the block runs (a long sweep or pump must not let them run short: calls are claimed
    only under a lease with time left); :meth:`keep` renews them now, or raises
    :class:`~dialer.errors.LeaseLost` once another holder took one over."""

    def __init__(self, url: str, holder: str, campaign_ids: list[int]) -> None:
        self.url, self.holder, self.campaign_ids = url, holder, campaign_ids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name="lease")

    def keep(self) -> None:
        with session_scope(self.url) as session:
            for campaign_id in self.campaign_ids:
                lease.keep(session, campaign_id=campaign_id, holder=self.holder, now=utcnow())

    def _renew(self) -> None:
        while not self._stop.wait(lease.LEASE_SECONDS / 5):
            try:
                self.keep()
            except LeaseLost:
                return  # the main loop's own keep says so, and stops
            except DATABASE_ERRORS as error:  # the main loop rides the outage out, and says so
                log.debug("lease: database: %s", error)
            except Exception:  # a pool timed out, say: renewing goes on, as the callers' claims need it
                log.exception("lease: renewing failed; trying again")

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class Notifier:
    """Delivers the served campaigns' results to their ``[notify]`` URLs in a thread of its own,
    every tick, while the block runs (a send in flight is finished at its end)."""

    def __init__(self, settings: Settings, only: frozenset[int] | None) -> None:
        self.settings, self.only = settings, only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._deliver, daemon=True, name="notifier")

    def _deliver(self) -> None:
        with httpx.Client() as http:
            while not self._stop.wait(self.settings.tick_seconds):
                try:
                    notify.deliver_due(self.settings, http, only=self.only)
                except DATABASE_ERRORS as error:  # the main loop rides the outage out, and says so
                    log.debug("notifier: database: %s", error)

    def __enter__(self) -> Notifier:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.settings.notify_timeout + 5)


def loopback_socket(port: int = 0) -> socket.socket:
    """A bound loopback socket (``port=0``: a free one), so a URL is known before its server starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class BackgroundServer:
    """A uvicorn server in a thread, on a given bound socket or a free loopback port; over TLS
    with ``certificate`` (a PEM file holding the key and the certificate chain); ``options``:
    more of uvicorn's settings (the receiver's, :func:`dialer.serving.uvicorn_options`)."""

    def __init__(
        self,
        app: Any,
        *,
        sock: socket.socket | None = None,
        certificate: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self._socket = sock or loopback_socket()
        self.host, self.port = self._socket.getsockname()
        self.scheme = "https" if certificate else "http"
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="on",
            access_log=False,
            ssl_certfile=certificate,
            **(options or {}),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
