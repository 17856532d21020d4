from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from dialer.embedded import BackgroundServer
from dialer.simulators.base import Simulation, busiest_second


@pytest.mark.parametrize(
    ("times", "most"),
    [
        ([], 0),
        ([5.0], 1),
        ([0.0, 0.5, 0.999], 3),
        ([0.0, 0.5, 1.0], 2),  # a window is [t, t + 1): 1.0 starts the next one
        ([3.0, 0.0, 0.9, 1.8, 2.7], 2),  # order does not matter
        ([0.0, 0.0505 * 19, 0.0505 * 20, 0.0505 * 21], 3),
        ([i * 0.0505 for i in range(100)], 20),  # 19.8 a second, never 21 in one window
        ([i * 0.049 for i in range(100)], 21),
    ],
)
def test_the_busiest_second_counts_requests_in_any_sliding_window(times: list[float], most: int) -> None:
    assert busiest_second(times) == most


def test_admission_keeps_any_second_to_the_limit() -> None:
    sim = Simulation(provider="vonage", rate_limit=3)
    answers = [sim.admit(now=moment) for moment in (0.0, 0.2, 0.4, 0.6, 1.0, 1.1, 1.2, 1.3)]
    assert answers == [True, True, True, False, True, False, True, False]
    assert sim.throttled == 3


def test_the_simulator_counts_requests_and_placements_cheaply() -> None:
    sim = Simulation(provider="vonage", rate_limit=3)
    sim.requests += [1.0, 1.2]
    sim.place("+12125550106", "call-1")
    with BackgroundServer(Starlette(routes=sim.routes())) as server:
        assert httpx.get(f"{server.url}/_simulator/count").json() == {"placements": 1, "requests": 2}
        assert httpx.get(f"{server.url}/_simulator/log").json()["busiest_second"] == 2
