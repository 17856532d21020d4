"""What every provider simulator shares: who answers, how fast, the rate limit, callbacks, the log.

The callee's behaviour is deterministic, by the number's last digit and how many times the
simulator has already seen that number:

====== =============================================================
digit  behaviour
====== =============================================================
0      busy every time
1      busy the first time, then answers and presses 1
2      does not answer the first time, then answers and presses 2
3      the network fails the first time, then answers and presses 1
4      rejects the call
5      an answering machine picks up
6      answers and presses 1 once the question has been asked
7      answers and presses 1 while the question is still being asked
8      answers and presses 2
9      answers and presses nothing (the input times out)
====== =============================================================

A callee presses keys the way people do: a second and a half after the question ends, one key
every half second (or a second into the question, interrupting it, for the impatient). Tests may
give a number its own script in ``Simulation.scripts``.

Delays are realistic seconds multiplied by ``time_scale`` (0.1 runs ten times faster).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

log = logging.getLogger("dialer.simulator")

Behaviour = Literal["answered", "busy", "no_answer", "failed", "rejected", "machine"]
Emit = Callable[..., Awaitable[None]]
"""A provider's way of telling the caller about a stage: ``await emit(stage, **details)``."""


THINK_SECONDS = 1.5
"""How long a callee thinks after a question before the first key."""
BARGE_SECONDS = 1.0
"""How far into a question an impatient callee presses the first key (half-way into a shorter one)."""
KEY_GAP = 0.5
"""Seconds between one key and the next."""
BEEP_SECONDS = 10.0
"""How long an answering machine's greeting lasts before its beep."""


CALLBACK_CONNECTIONS = 32
CALLBACK_POOLS = 4


class _Pools(httpx.AsyncBaseTransport):
    """Requests taken in turn by several small connection pools. httpcore looks at every
    connection of its pool (a system call each) for every request it sends: with 32 connections
    in one pool that was a third of a simulator's CPU (py-spy, bench/lifecycle.py)."""

    def __init__(self, pools: int, connections: int) -> None:
        limits = httpx.Limits(max_connections=connections)
        self._pools = [httpx.AsyncHTTPTransport(limits=limits) for _ in range(pools)]
        self._turn = itertools.cycle(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await next(self._turn).handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def callback_client() -> httpx.AsyncClient:
    """The client a simulator sends its callbacks with: up to CALLBACK_CONNECTIONS connections to
    the receiver; callbacks beyond them wait their turn (see :meth:`Simulation.deliver`), as a
    provider queues them. Only a receiver that takes more than 5 s to answer one fails it (and it
    is sent again)."""
    pools = _Pools(CALLBACK_POOLS, CALLBACK_CONNECTIONS // CALLBACK_POOLS)
    return httpx.AsyncClient(timeout=httpx.Timeout(5.0, pool=None), transport=pools)


@dataclass(frozen=True)
class Script:
    """How the simulated callee behaves on one call."""

    behaviour: Behaviour
    digits: str | None = None
    """The keys the callee presses after a question (``#`` included if they press it)."""
    ring_seconds: float = 4.0
    talk_seconds: float = 8.0
    barge: bool = False
    """Presses the first key while the question is still being asked."""
    answers: tuple[str, ...] | None = None
    """The keys pressed for each question asked, in turn ("" for silence), and silence after the
    last; None: ``digits`` for every question."""
    hangs_up_at: int | None = None
    """The callee hangs up while their nth question (1-based) is being asked."""

    def answer(self, nth: int = 1) -> str | None:
        """The keys pressed for the ``nth`` question asked (None: none)."""
        if self.behaviour != "answered":
            return None
        if self.answers is None:
            return self.digits
        return (self.answers[nth - 1] if nth <= len(self.answers) else "") or None

    def keys(self, question_seconds: float, nth: int = 1) -> list[tuple[float, str]]:
        """Each key the callee presses for the ``nth`` question, with when: seconds from its start."""
        digits = self.answer(nth)
        if not digits:
            return []
        first = min(BARGE_SECONDS, question_seconds / 2) if self.barge else question_seconds + THINK_SECONDS
        return [(first + index * KEY_GAP, key) for index, key in enumerate(digits)]

    def hangs_up(self, nth: int) -> bool:
        """Whether the callee hangs up while the ``nth`` question is being asked."""
        return self.hangs_up_at is not None and nth >= self.hangs_up_at


class CalleeHungUp(Exception):
    """The callee put the phone down: the conversation is over (the call completes)."""


def speaking_seconds(text: str) -> float:
    """How long TTS takes to say ``text`` (15 characters a second, at most 20 s)."""
    return min(len(text) / 15, 20.0)


def script_for(number: str, nth_call: int) -> Script:
    """The deterministic scenario for the ``nth_call`` (1-based) to ``number``."""
    last = number[-1]
    first = nth_call == 1
    if last == "0":
        return Script("busy", ring_seconds=2.0)
    if last == "1":
        return Script("busy", ring_seconds=2.0) if first else Script("answered", "1")
    if last == "2":
        return Script("no_answer") if first else Script("answered", "2")
    if last == "3":
        return Script("failed", ring_seconds=0.5) if first else Script("answered", "1")
    if last == "4":
        return Script("rejected", ring_seconds=3.0)
    if last == "5":
        return Script("machine", talk_seconds=12.0)
    if last == "9":
        return Script("answered", None)
    if last == "7":
        return Script("answered", "1", barge=True)
    return Script("answered", "2" if last == "8" else "1")


def busiest_second(times: Sequence[float]) -> int:
    """The most of ``times`` (seconds) that fall inside any one-second window ``[t, t + 1)``."""
    ordered = sorted(times)
    most = start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


@dataclass(frozen=True)
class Placement:
    """One call the simulator accepted."""

    to: str
    call_id: str
    at: float
    digits_after_answer: str = ""
    """DTMF the request asked to send once the callee answers (an extension), as it was given."""
    behaviour: str = ""
    """How the callee behaves (:class:`Script`): ``answered`` and ``machine`` pick up."""


@dataclass
class Simulation:
    """The simulator's shared state and helpers."""

    provider: str
    rate_limit: float
    time_scale: float = 0.1
    callback_attempts: int = 5
    slow_seconds: float = 15.0
    placements: list[Placement] = field(default_factory=list)
    legs: list[Placement] = field(default_factory=list)
    """The legs transfers placed, to the numbers the callees were connected to."""
    requests: list[float] = field(default_factory=list)
    """When each create-call request arrived (wall clock), whatever its answer."""
    throttled: int = 0
    callbacks_failed: int = 0
    callbacks_delivered: int = 0
    _sending: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CALLBACK_CONNECTIONS))
    fault: str | None = None
    """``429``, ``500``, ``401`` or ``slow``: how create-call requests are answered until ``fault_until``."""
    fault_until: float = 0.0
    faulted: int = 0
    balance: int | None = None
    """Calls the account can still pay for (None: no end); a provider that reports running out
    (Routee's ``Unsent``) refuses calls beyond it."""
    scripts: dict[str, Script] = field(default_factory=dict)
    """Scripts for given numbers (E.164), instead of the table above: for tests."""
    readings: dict[str, str] = field(default_factory=dict)
    """Where a provider's documents can be read two ways, the reading this simulator follows, by
    name (each provider's module lists its own and their defaults)."""
    _seen: Counter[str] = field(default_factory=Counter)
    _recent: deque[float] = field(default_factory=deque)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def _faulting(self, kind: str) -> bool:
        if self.fault == kind and time.monotonic() < self.fault_until:
            self.faulted += 1
            return True
        return False

    async def interfere(self) -> JSONResponse | None:
        """Log a create-call request's arrival; then an injected 500, or a stall longer than any client
        waits, before it is handled."""
        self.requests.append(time.time())
        if self._faulting("500"):
            return JSONResponse({"error": "Internal Server Error"}, status_code=500)
        if self._faulting("401"):  # the account's credentials revoked meanwhile
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        if self._faulting("slow"):
            await asyncio.sleep(self.slow_seconds)
        return None

    def admit(self, now: float | None = None) -> bool:
        """Take one request under the rate limit: no more than ``rate_limit`` in any one second."""
        if self._faulting("429"):
            self.throttled += 1
            return False
        now = time.monotonic() if now is None else now
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        if len(self._recent) >= self.rate_limit:
            self.throttled += 1
            return False
        self._recent.append(now)
        return True

    def place(self, to: str, call_id: str, digits_after_answer: str = "") -> Script:
        """Log an accepted call and say how its callee behaves."""
        self._seen[to] += 1
        script = self.scripts.get(to) or script_for(to, self._seen[to])
        self.placements.append(Placement(to, call_id, time.time(), digits_after_answer, script.behaviour))
        return script

    def transfer(self, to: str, leg_id: str) -> Script:
        """Log a leg a transfer placed (not a call of ours: the account places it for the call)
        and say how the person at ``to`` answers: by the table above, or ``scripts``."""
        self._seen[to] += 1
        self.legs.append(Placement(to, leg_id, time.time()))
        return self.scripts.get(to) or script_for(to, self._seen[to])

    async def pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.time_scale)

    def spawn(self, coroutine: Any) -> asyncio.Task[None]:
        """Run a call's life in the background, keeping a reference so it is not collected."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def deliver(self, client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response | None:
        """Send a callback, retrying like a real provider until the receiver acknowledges it."""
        for attempt in range(self.callback_attempts):
            try:
                # Callbacks wait here rather than in httpcore's pool, whose every release scans
                # every request waiting in it.
                async with self._sending:
                    response = await client.send(request)
                if response.status_code < 300:
                    self.callbacks_delivered += 1
                    return response
                log.warning("callback %s answered %s", request.url, response.status_code)
            except httpx.HTTPError as error:
                log.warning("callback %s failed: %r", request.url, error)
            await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
        self.callbacks_failed += 1
        return None

    def lifespan(self, client: httpx.AsyncClient) -> Any:
        """An ASGI lifespan that stops the calls in progress and closes the callback client."""

        @contextlib.asynccontextmanager
        async def lifespan(_: Any) -> AsyncIterator[None]:
            yield
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await client.aclose()

        return lifespan

    async def run_call(
        self,
        script: Script,
        *,
        ring_timeout: float,
        emit: Emit,
        conversation: Callable[[], Awaitable[None]],
    ) -> None:
        """The life of one call, the same for every provider: only ``emit`` speaks its dialect.

        ``conversation`` is what happens once the callee (or a machine, which the provider may
        detect there) picks up; the ``completed`` stage carries ``duration`` (seconds, unscaled)
        and ``answered_at``.
        """
        await self.pause(0.3)
        await emit("started")
        if script.behaviour == "failed":
            await self.pause(script.ring_seconds)
            await emit("failed")
            return
        await self.pause(1.0)
        await emit("ringing")
        if script.behaviour in ("busy", "rejected"):
            await self.pause(script.ring_seconds)
            await emit(script.behaviour)
            return
        if script.behaviour == "no_answer":
            await self.pause(ring_timeout)
            await emit("no_answer")
            return
        await self.pause(script.ring_seconds)
        answered_at = time.time()
        await emit("answered")
        with contextlib.suppress(CalleeHungUp):
            await conversation()
        duration = max(1, round((time.time() - answered_at) / self.time_scale))
        await emit("completed", duration=duration, answered_at=answered_at)

    def routes(self) -> list[Route]:
        """Simulator-only endpoints (not part of any provider's API) for tests and benchmarks."""

        async def report(_: Request) -> JSONResponse:
            return JSONResponse(
                {
                    "provider": self.provider,
                    "rate_limit": self.rate_limit,
                    "placements": [asdict(p) for p in self.placements],
                    "legs": [asdict(p) for p in self.legs],
                    "requests": self.requests,
                    "busiest_second": busiest_second(self.requests),
                    "throttled": self.throttled,
                    "faulted": self.faulted,
                    "callbacks_failed": self.callbacks_failed,
                    "callbacks_delivered": self.callbacks_delivered,
                    "calls_in_progress": len(self._tasks),
                }
            )

        async def count(_: Request) -> JSONResponse:
            return JSONResponse({"placements": len(self.placements), "requests": len(self.requests)})

        async def inject(request: Request) -> JSONResponse:
            body = await request.json()
            self.fault = body.get("fault")
            self.fault_until = time.monotonic() + float(body.get("seconds", 5))
            return JSONResponse({"fault": self.fault, "seconds": body.get("seconds", 5)})

        return [
            Route("/_simulator/log", report, methods=["GET"]),
            Route("/_simulator/count", count, methods=["GET"]),
            Route("/_simulator/fault", inject, methods=["POST"]),
        ]
