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
a late wake-up), and a late request followed by a punctual one would put two in less than one
interval. So each request also passes a :class:`Gate` just before it is sent: it lets one through
only when one interval has passed since the last one really went, and measures the next interval
from then. Delays push later requests back instead of bunching them, so no one-second window
holds more than the limit; the bucket spreads the work, the gate guarantees the spacing. A gate
with no record of the last departure (Redis emptied) waits one interval, as if one just left.

Every request reaches the gate a little after its turn (a wake-up, a round trip to Redis: half a
millisecond is usual), and at 20 a second those delays, each charged to the requests after it,
cost 1 % of the budget. So a request that passes within the gate's ``tolerance`` of its turn
keeps the rhythm: the next turn is one interval after the turn, not after the departure. Any
``n`` consecutive intervals then still span at least ``n * interval - tolerance``; the tolerance
is a small part of what the pacing margin leaves free in each second.
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
    within ``tolerance`` of it, else from its real departure."""

    key: str
    interval: float
    tolerance: float = 0.0


@dataclass(frozen=True)
class Slot:
    """``granted``: a slot is booked ``wait`` seconds from now; else try again in ``wait`` seconds."""

    granted: bool
    wait: float


class Limiter(Protocol):
    def reserve(self, buckets: Sequence[Bucket], *, max_wait: float) -> Slot: ...

    def hold(self, bucket: Bucket, seconds: float) -> None: ...

    def admit(self, gate: Gate) -> float:
        """Let one request through ``gate`` now (0.0), or say how many seconds until one may pass."""
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
local interval = tonumber(ARGV[1])
local ttl = math.ceil(interval * 1000) + 60000
local next_free = tonumber(redis.call('GET', KEYS[1]))
if not next_free then
  -- No record (first use, idle a minute, or Redis emptied): a request may have just left.
  next_free = now + interval
  redis.call('SET', KEYS[1], string.format('%.6f', next_free), 'PX', ttl)
end
if next_free > now then
  return string.format('%.6f', next_free - now)
end
-- On time but for a moment's delay: keep the rhythm. Later: start it again from now.
local from = now
if now - next_free <= tonumber(ARGV[3]) then from = next_free end
redis.call('SET', KEYS[1], string.format('%.6f', from + interval), 'PX', ttl)
return '0'
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

    def _now(self) -> str:
        return "" if self._clock is None else f"{self._clock():.6f}"

    def reserve(self, buckets: Sequence[Bucket], *, max_wait: float) -> Slot:
        keys = [self._prefix + bucket.key for bucket in buckets]
        args = [f"{max_wait:.6f}", self._now(), *(f"{bucket.interval:.9f}" for bucket in buckets)]
        granted, wait = self._reserve(keys=keys, args=args)
        return Slot(granted=bool(granted), wait=float(wait))

    def hold(self, bucket: Bucket, seconds: float) -> None:
        self._hold(keys=[self._prefix + bucket.key], args=[f"{seconds:.6f}", self._now()])

    def admit(self, gate: Gate) -> float:
        wait = self._admit(
            keys=[self._prefix + "gate:" + gate.key],
            args=[f"{gate.interval:.9f}", self._now(), f"{gate.tolerance:.9f}"],
        )
        return float(wait)


class LocalLimiter:
    """The same buckets inside one process (the embedded mode)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tat: dict[str, float] = {}
        self._next_free: dict[str, float] = {}

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

    def admit(self, gate: Gate) -> float:
        with self._lock:
            now = self._clock()
            next_free = self._next_free.setdefault(gate.key, now + gate.interval)  # as the Lua script
            if next_free > now:
                return next_free - now
            start = next_free if now - next_free <= gate.tolerance else now
            self._next_free[gate.key] = start + gate.interval
            return 0.0
