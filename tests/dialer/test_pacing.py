from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from freezegun import freeze_time

from dialer.pacing import Bucket, Gate, Limiter, LocalLimiter, RedisLimiter, Slot
from dialer.simulators.base import busiest_second

_tickets = itertools.count()


def leave(limiter: Limiter, gate: Gate) -> float:
    """A new request at the gate: 0.0 when it may leave now, else how long it must wait."""
    return limiter.admit(gate, f"request-{next(_tickets)}")


class Clock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "redis"])
def make_limiter(request: pytest.FixtureRequest) -> Iterator[Callable[[Clock], Limiter]]:
    if request.param == "local":
        yield lambda clock: LocalLimiter(clock)
        return
    url = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    yield lambda clock: RedisLimiter(client, clock=clock)
    client.close()


def test_slots_are_spaced_by_the_interval_and_long_waits_book_nothing(
    make_limiter: Callable[[Clock], Limiter],
) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    bucket = Bucket("provider:test", rate=10)
    slots = [limiter.reserve([bucket], max_wait=1.0) for _ in range(15)]
    granted = [s.wait for s in slots if s.granted]
    assert granted == pytest.approx([i * 0.1 for i in range(11)])
    refused = [s for s in slots if not s.granted]
    assert len(refused) == 4 and all(s.wait == pytest.approx(1.1) for s in refused)
    clock.now += 0.55
    assert limiter.reserve([bucket], max_wait=1.0).wait == pytest.approx(0.55)


def test_two_hosts_with_skewed_clocks_still_keep_the_interval(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    host_a, host_b = RedisLimiter(client), RedisLimiter(client)
    bucket = Bucket("provider:skew", rate=5)
    slots = []  # each booked slot as Redis recorded it: the bucket's next free time, less one interval
    for i in range(6):
        if i % 2:
            with freeze_time(datetime.now(UTC) - timedelta(seconds=30), tick=True):  # host B runs 30 s late
                assert host_b.reserve([bucket], max_wait=5).granted
        else:
            assert host_a.reserve([bucket], max_wait=5).granted
        slots.append(float(client.get("dialer:pace:provider:skew") or 0) - bucket.interval)
    client.close()
    # Never closer than the interval (a host reading its own clock would book 30 s in the past).
    gaps = [later - earlier for earlier, later in itertools.pairwise(slots)]
    assert all(gap >= bucket.interval - 1e-6 for gap in gaps), gaps


def test_a_slow_campaign_leaves_the_account_slots_to_others(make_limiter: Callable[[Clock], Limiter]) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    account, campaign = Bucket("provider:a", rate=10), Bucket("campaign:1", rate=2)
    assert limiter.reserve([account, campaign], max_wait=5) == Slot(granted=True, wait=0.0)
    second = limiter.reserve([account, campaign], max_wait=5)
    assert not second.granted and second.wait == pytest.approx(0.5)
    other = limiter.reserve([account], max_wait=5)
    assert other.granted and other.wait == pytest.approx(0.1)
    clock.now += 0.5
    assert limiter.reserve([account, campaign], max_wait=5).granted


def test_a_429_holds_the_bucket_for_everyone(make_limiter: Callable[[Clock], Limiter]) -> None:
    limiter = make_limiter(Clock())
    bucket = Bucket("provider:held", rate=10)
    limiter.hold(bucket, 3.0)
    slot = limiter.reserve([bucket], max_wait=1.0)
    assert not slot.granted and slot.wait == pytest.approx(3.0)


def test_the_gate_spaces_real_departures_and_a_late_one_pushes_the_next_back(
    make_limiter: Callable[[Clock], Limiter],
) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    gate = Gate("provider:gate", interval=0.1, permits=100)
    assert leave(limiter, gate) == pytest.approx(0.1)  # no record of the last one: it may have just left
    clock.now += 0.1
    assert leave(limiter, gate) == 0.0
    assert leave(limiter, gate) == pytest.approx(0.1)  # too soon: come back when the interval is over
    clock.now += 0.1
    assert leave(limiter, gate) == 0.0
    clock.now += 0.25  # this one leaves late, 0.15 after its turn...
    assert leave(limiter, gate) == 0.0
    clock.now += 0.05  # ...so the next, on time by the old rhythm, waits a whole interval from it
    assert leave(limiter, gate) == pytest.approx(0.05)


def test_a_request_a_moment_late_keeps_the_rhythm(make_limiter: Callable[[Clock], Limiter]) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    gate = Gate("provider:rhythm", interval=0.1, permits=100, tolerance=0.005)
    assert leave(limiter, gate) == pytest.approx(0.1)
    clock.now += 0.1
    assert leave(limiter, gate) == 0.0  # on its turn, at 0.1
    clock.now += 0.104  # 4 ms after its turn (0.2): within the tolerance...
    assert leave(limiter, gate) == 0.0
    clock.now += 0.096  # ...so the next turn is 0.3, not 0.304
    assert leave(limiter, gate) == 0.0
    clock.now += 0.106  # 6 ms late: beyond the tolerance...
    assert leave(limiter, gate) == 0.0
    clock.now += 0.096  # ...so the next turn is 0.1 after this departure, 4 ms from now
    assert leave(limiter, gate) == pytest.approx(0.004)


@pytest.mark.parametrize("tolerance", [0.0, 0.005])
def test_no_second_holds_more_than_the_limit_whatever_the_arrival_pattern(
    make_limiter: Callable[[Clock], Limiter], tolerance: float
) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    gate = Gate("provider:burst", interval=1 / 19.8, permits=20, tolerance=tolerance)  # 20/s less 1 %
    departures = []
    for step in range(6000):  # three eager senders every millisecond, and a 0.3 s stall now and then
        clock.now += 0.3 if step % 1500 == 0 else 0.001
        for sender in range(3):
            ticket = f"{step}-{sender}"
            if limiter.admit(gate, ticket) == 0.0:
                departures.append(clock.now)
                limiter.done(gate, ticket)  # answered at once
    assert busiest_second(departures) == 20
    # Any n intervals in a row span at least n whole intervals, less the tolerance once.
    for n in (1, 20):
        spans = [later - earlier for earlier, later in zip(departures, departures[n:], strict=False)]
        assert min(spans) >= n * gate.interval - tolerance - 1e-6
    assert len(departures) > 19.5 * 6  # six seconds of sending, the budget used


@pytest.mark.parametrize(("tolerance", "sent"), [(0.0, 192), (0.005, 197)])
def test_small_delays_add_up_only_beyond_the_tolerance(
    make_limiter: Callable[[Clock], Limiter], tolerance: float, sent: int
) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    gate = Gate("provider:steady", interval=1 / 19.8, permits=1000, tolerance=tolerance)
    departures = 0
    for _ in range(5000):  # ten seconds of one sender trying every 2 ms: each turn found up to 2 ms late
        clock.now += 0.002
        departures += leave(limiter, gate) == 0.0
    assert departures == sent  # the whole budget (19.8 a second) only when the delays are forgiven


def test_a_gate_whose_record_was_lost_waits_one_interval(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    clock = Clock()
    limiter = RedisLimiter(client, clock=clock)
    gate = Gate("provider:flushed", interval=0.5, permits=100)
    clock.now += 0.5
    assert leave(limiter, gate) == pytest.approx(0.5) and leave(limiter, gate) == pytest.approx(0.5)
    clock.now += 0.5
    assert leave(limiter, gate) == 0.0  # a request leaves...
    client.flushdb()  # ...and Redis forgets it
    assert leave(limiter, gate) == pytest.approx(0.5)  # the next still keeps its distance
    client.close()


def test_a_request_holds_its_permit_until_a_second_after_it_surely_arrived(
    make_limiter: Callable[[Clock], Limiter],
) -> None:
    clock = Clock()
    limiter = make_limiter(clock)
    gate = Gate("provider:permits", interval=0.01, permits=2, transit=0.2)
    assert limiter.admit(gate, "a") == pytest.approx(0.01)
    clock.now += 0.01
    assert limiter.admit(gate, "a") == 0.0  # at 0.01
    clock.now += 0.01
    assert limiter.admit(gate, "b") == 0.0  # at 0.02
    clock.now += 0.01
    # Both out, no answer yet: each has surely arrived by its departure plus the transit.
    assert limiter.admit(gate, "c") == pytest.approx(1.21 - 0.03)
    clock.now += 0.02
    limiter.done(gate, "a")  # a's answer at 0.05: a is held until 1.05
    clock.now += 0.5
    limiter.done(gate, "b")  # b's answer at 0.55, after its transit: b is still held until 1.22
    assert limiter.admit(gate, "c") == pytest.approx(1.05 - 0.55)
    clock.now += 0.5
    assert limiter.admit(gate, "c") == 0.0  # at 1.05
    assert limiter.admit(gate, "d") > 0.0


@pytest.mark.parametrize(("permits", "busiest"), [(20, 20), (1000, 21)])
def test_however_late_requests_travel_no_second_at_the_provider_holds_more_than_the_permits(
    make_limiter: Callable[[Clock], Limiter], permits: int, busiest: int
) -> None:
    """Requests leave every 50 ms (20 a second, no margin at all); most reach the provider in half
    a millisecond, one in ten up to 45 ms late. With the permits, the provider still never sees
    more than 20 in a second; spaced departures alone (permits=1000) put 21 in one."""
    clock = Clock()
    limiter = make_limiter(clock)
    gate = Gate("provider:travel", interval=0.05, permits=permits, tolerance=0.002, transit=0.05)
    randomness = random.Random(7)
    arrivals: list[float] = []
    answers: list[tuple[float, str]] = []  # (when the answer is back, ticket)
    for step in range(10_000):  # ten seconds, one eager sender trying every millisecond
        clock.now += 0.001
        while answers and answers[0][0] <= clock.now:
            limiter.done(gate, heapq.heappop(answers)[1])
        if limiter.admit(gate, ticket := str(step)) == 0.0:
            late = randomness.uniform(0.01, 0.045) if randomness.random() < 0.1 else 0.0005
            arrivals.append(clock.now + late)
            heapq.heappush(answers, (clock.now + late + 0.001, ticket))
    assert busiest_second(sorted(arrivals)) == busiest
    assert len(arrivals) >= 0.97 * 20 * 10  # the budget still used
