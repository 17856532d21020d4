"""Global pacing: GCRA buckets and a send gate, each atomic in one Lua script on Redis's clock,
or in-process.

A bucket allows one request every ``1 / rate`` seconds. :meth:`reserve` books the earliest slot
allowed by every bucket at once (provider account and, when set, the campaign) and says how long
to wait for it; when that wait is longer than ``max_wait`` nothing is booked, so a worker never
sleeps away a slot it would not use. A provider's 429 pushes its bucket forward for everyone.
A reservation that would leave one bucket's free slots unused (a slow campaign on a busy
account) books nothing and says when to come back, so the account's budget goes to whoever
can use it.

A booked slot says when a request may leave, but a busy host sends some late (a slow database,
a late wake-up), so each request also passes a :class:`Gate` just before it is sent. The gate
does two things:

- It spaces departures: one may leave when one interval has passed since the last one's turn.
  Every request reaches the gate a little after its turn (a wake-up, a round trip to Redis);
  one that passes within ``tolerance`` of its turn keeps the rhythm, and a later one restarts it
  from its real departure, so a delay pushes the next requests back instead of bunching them.
  A gate with no record of the last departure (Redis emptied) waits one interval.
- It holds the limit where the provider counts, on arrival. The way to the provider takes its
  own time (on this host's loopback, between a few microseconds and 40 ms), so spacing alone
  would need a wide margin. Each request holds one of the gate's ``permits`` (the limit per
  second) from its departure until one second after it has surely arrived: after its answer
  came back (:meth:`done`), or ``transit`` seconds after it left if that is sooner (a provider
  may take long to answer, but the request reached it on its way in). Requests that arrive
  within one second of each other then all hold their permits when the last of them leaves, so
  no one-second window at the provider holds more than ``permits``, however unevenly they
  travel within ``transit``. The price is a second of each permit stretched by the time to the
  answer or ``transit``, whichever is less.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis


@dataclass(frozen=True)
class Bucket:
    key: str
    rate: float

    @property
    def interval(self) -> float:
        return 1.0 / self.rate


@dataclass(frozen=True)
class Gate:
    """Requests leave ``interval`` seconds apart, measured from the last one's turn when it left
    within ``tolerance`` of it, else from its real departure; and no more than ``permits`` are
    held at once, each until one second after its answer or ``transit`` after it left, if sooner."""

    key: str
    interval: float
    permits: int
    tolerance: float = 0.0
    transit: float = 0.05


@dataclass(frozen=True)
class Slot:
    """``granted``: a slot is booked ``wait`` seconds from now; else try again in ``wait`` seconds."""

    granted: bool
    wait: float


class Limiter(Protocol):
    def reserve(self, buckets: Sequence[Bucket], *, max_wait: float) -> Slot: ...

    def hold(self, bucket: Bucket, seconds: float) -> None: ...

    def admit(self, gate: Gate, ticket: str) -> float:
        """Let request ``ticket`` through ``gate`` now (0.0), or say how many seconds to wait first."""
        ...

    def done(self, gate: Gate, ticket: str) -> None:
        """Request ``ticket``'s answer came back (or none will): its permit ends a second from now,
        unless it was to end sooner."""
        ...


# Redis's own clock, unless a test passes one in ARGV[2].
_NOW = """
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

_RESERVE = (
    _NOW
    + """
local max_wait = tonumber(ARGV[1])
local start = now
for _, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key))
  if tat and tat > start then start = tat end
end
local wait = start - now
if wait > max_wait then
  return {0, string.format('%.6f', wait)}
end
-- Booking later than a bucket's own next slot would waste that bucket's slots in between
-- (another campaign could use the account's): book nothing, come back when it is time.
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key))
  local own = now
  if tat and tat > now then own = tat end
  if start - own >= tonumber(ARGV[i + 2]) then
    return {0, string.format('%.6f', wait)}
  end
end
for i, key in ipairs(KEYS) do
  local tat = start + tonumber(ARGV[i + 2])
  redis.call('SET', key, string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 60000)
end
return {1, string.format('%.6f', wait)}
"""
)

_HOLD = (
    _NOW
    + """
local until_ = now + tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < until_ then
  redis.call('SET', KEYS[1], string.format('%.6f', until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 60000)
end
return 1
"""
)


_ADMIT = (
    _NOW
    + """
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[3])
local permits, held = tonumber(ARGV[4]), tonumber(ARGV[6]) + 1
local ttl = math.ceil(math.max(interval, held) * 1000) + 60000
local next_free = tonumber(redis.call('GET', KEYS[1]))
if not next_free then
  -- No record (first use, idle a minute, or Redis emptied): a request may have just left.
  next_free = now + interval
  redis.call('SET', KEYS[1], string.format('%.6f', next_free), 'PX', ttl)
end
if next_free > now then
  return string.format('%.6f', next_free - now)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= permits then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return string.format('%.6f', tonumber(first[2]) - now)
end
-- On time but for a moment's delay: keep the rhythm. Later: start it again from now.
local from = now
if now - next_free <= tolerance then from = next_free end
redis.call('SET', KEYS[1], string.format('%.6f', from + interval), 'PX', ttl)
redis.call('ZADD', KEYS[2], now + held, ARGV[5])
redis.call('PEXPIRE', KEYS[2], ttl)
return '0'
"""
)

_DONE = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], 'XX', 'LT', now + 1, ARGV[1])
return 1
"""
)


class RedisLimiter:
    """Buckets shared by every process and host that uses the same Redis.

    Time is Redis's own (``TIME``), so clock skew between worker hosts does not matter; ``clock``
    overrides it in tests.
    """

    def __init__(
        self, client: redis.Redis, *, prefix: str = "dialer:pace:", clock: Callable[[], float] | None = None
    ) -> None:
        self._prefix = prefix
        self._clock = clock
        self._reserve = client.register_script(_RESERVE)
        self._hold = client.register_script(_HOLD)
        self._admit = client.register_script(_ADMIT)
        self._done = client.register_script(_DONE)

    def _now(self) -> str:
        return "" if self._clock is None else f"{self._clock():.6f}"

    def reserve(self, buckets: Sequence[Bucket], *, max_wait: float) -> Slot:
        keys = [self._prefix + bucket.key for bucket in buckets]
        args = [f"{max_wait:.6f}", self._now(), *(f"{bucket.interval:.9f}" for bucket in buckets)]
        granted, wait = self._reserve(keys=keys, args=args)
        return Slot(granted=bool(granted), wait=float(wait))

    def hold(self, bucket: Bucket, seconds: float) -> None:
        self._hold(keys=[self._prefix + bucket.key], args=[f"{seconds:.6f}", self._now()])

    def admit(self, gate: Gate, ticket: str) -> float:
        key = self._prefix + "gate:" + gate.key
        args = [f"{gate.interval:.9f}", self._now(), f"{gate.tolerance:.9f}"]
        wait = self._admit(keys=[key, key + ":out"], args=[*args, gate.permits, ticket, gate.transit])
        return float(wait)

    def done(self, gate: Gate, ticket: str) -> None:
        self._done(keys=[self._prefix + "gate:" + gate.key + ":out"], args=[ticket, self._now()])


class LocalLimiter:
    """The same buckets inside one process (the embedded mode)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}
        self._next_free: dict[str, float] = {}
        self._out: dict[str, dict[str, float]] = {}

    def reserve(self, buckets: Sequence[Bucket], *, max_wait: float) -> Slot:
        with self._lock:
            now = self._clock()
            start = max([now, *(self._tat.get(bucket.key, now) for bucket in buckets)])
            wait = start - now
            if wait > max_wait:
                return Slot(granted=False, wait=wait)
            for bucket in buckets:  # see the Lua script: never skip a bucket's free slot
                if start - max(now, self._tat.get(bucket.key, now)) >= bucket.interval:
                    return Slot(granted=False, wait=wait)
            for bucket in buckets:
                self._tat[bucket.key] = start + bucket.interval
            return Slot(granted=True, wait=wait)

    def hold(self, bucket: Bucket, seconds: float) -> None:
        with self._lock:
            until = self._clock() + seconds
            self._tat[bucket.key] = max(self._tat.get(bucket.key, until), until)

    def admit(self, gate: Gate, ticket: str) -> float:
        with self._lock:  # as the Lua script
            now = self._clock()
            next_free = self._next_free.setdefault(gate.key, now + gate.interval)
            if next_free > now:
                return next_free - now
            out = self._out.setdefault(gate.key, {})
            for held, until in list(out.items()):
                if until <= now:
                    del out[held]
            if len(out) >= gate.permits:
                return min(out.values()) - now
            start = next_free if now - next_free <= gate.tolerance else now
            self._next_free[gate.key] = start + gate.interval
            out[ticket] = now + gate.transit + 1.0
            return 0.0

    def done(self, gate: Gate, ticket: str) -> None:
        with self._lock:
            out = self._out.get(gate.key, {})
            if ticket in out:
                out[ticket] = min(out[ticket], self._clock() + 1.0)
