"""Pacing against a provider's limit, on the deployed system, as the provider's simulator sees it.

    python bench/pacing.py [--limits 1 20] [--seconds 90] [--workers 2] [--margin 0.01]
                           [--delay 20 100 [--delayed provider redis postgres] --transit 0.15]
                           [--hosts]

For each limit: the Vonage simulator refusing more than ``limit`` calls in any second, the
receiver, ``--workers`` Celery worker processes and beat, Redis and a fresh PostgreSQL database,
and a campaign of ``limit * seconds`` contacts who all answer (so no retries). Prints, from the
simulator's own log of every create-call request:

- busiest second / limit: the most requests in any one-second window, over the limit (must be <= 1.00);
- utilisation: calls placed per second while placing, over the limit (goal >= 0.98);
- makespan / (contacts / limit): from ``campaign start`` returning to the last call placed (goal <= 1.03).

With ``--hosts``, each worker and beat run on a host of their own (tests/netns.py: a network
namespace with its own address and TCP stack, on a bridge), reaching the simulator, Redis and
PostgreSQL through tests/netdelay.py (delayed only as ``--delay`` says), as from other machines.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REDIS_URL, machine, postgres_database
from dialer.simulators import dev_credentials
from dialer.simulators.base import busiest_second
from tests import netns
from tests.workers.deployment import Deployment, deployment

CAMPAIGN = """
name = "pacing"
provider = "vonage"
caller_id = "+14155550100"

[message]
text = "Hello {first_name}, this is a reminder."

[retry]
max_attempts = 1

[window]
start = "00:00"
end = "24:00"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

[pacing]
max_concurrent = 10000
"""


def write_inputs(directory: Path, contacts: int, text: str = CAMPAIGN) -> tuple[Path, Path]:
    """The campaign, and contacts whose numbers end in 6 to 9: the simulator has them all answer."""
    campaign = directory / "pacing.toml"
    campaign.write_text(text)
    numbers = (n for n in range(10_000) if n % 10 >= 6)
    csv_file = directory / "contacts.csv"
    csv_file.write_text(
        "phone,first_name\n" + "".join(f"+1212555{next(numbers):04d},P{i}\n" for i in range(contacts))
    )
    return campaign, csv_file


def simulator_log(system: Deployment, part: str = "log") -> dict[str, Any]:
    """The simulator's log of every request and placement (``part="count"``: just how many)."""
    log: dict[str, Any] = httpx.get(f"{system.sim_url}/_simulator/{part}", timeout=120).json()
    return log


@contextmanager
def ready_campaign(
    contacts: int, campaign: str = CAMPAIGN, **options: Any
) -> Iterator[tuple[Deployment, str]]:
    """A fresh deployment (``deployment``'s ``options``) on a fresh PostgreSQL database, with a
    campaign (its TOML ``campaign``, named "pacing") of ``contacts`` answering numbers imported and
    not started: the system and the database's URL."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    with tempfile.TemporaryDirectory() as scratch, postgres_database() as url:
        directory = Path(scratch)
        campaign_file, csv_file = write_inputs(directory, contacts, campaign)
        with deployment(
            directory,
            provider="vonage",
            postgres_url=url,
            redis_url=REDIS_URL,
            credentials=dev_credentials(),
            **options,
        ) as system:
            system.dialer("db", "upgrade")
            system.dialer("campaign", "create", str(campaign_file))
            system.dialer("import", str(csv_file), "--campaign", "pacing")
            yield system, url


def run_campaign(
    *,
    contacts: int,
    rate: float,
    workers: int,
    threads: int = 16,
    settings: dict[str, str] | None = None,
    time_scale: float = 0.05,
    delay: tuple[float, float] | None = None,
    delayed: frozenset[str] = frozenset({"provider"}),
    hosts: bool = False,
) -> tuple[float, dict[str, Any]]:
    """A campaign of ``contacts`` answering numbers on a fresh deployment, until the simulator has
    placed every call: when ``campaign start`` returned (epoch seconds), and the simulator's log."""
    options: dict[str, Any] = {"settings": settings, "rate": rate, "workers": workers, "threads": threads}
    options |= {"time_scale": time_scale, "delay": delay, "delayed": delayed, "hosts": hosts}
    with ready_campaign(contacts, **options) as (system, _):
        system.dialer("campaign", "start", "pacing", "--wait", "0")  # timed from here
        started = time.time()
        deadline = time.monotonic() + 3 * contacts / min(rate, 1000) + 120
        while simulator_log(system, "count")["placements"] < contacts:
            if time.monotonic() > deadline or system.dead():
                raise SystemExit(f"the campaign stalled:\n{system.dead()}")
            time.sleep(0.2)
        return started, simulator_log(system)


def run(
    limit: float,
    seconds: float,
    workers: int,
    margin: float,
    *,
    transit: float | None = None,
    delay: tuple[float, float] | None = None,
    delayed: frozenset[str] = frozenset({"provider"}),
    hosts: bool = False,
) -> str:
    contacts = round(limit * seconds)
    settings = {"DIALER_PACING_MARGIN": str(margin)}
    if transit is not None:
        settings["DIALER_PACING_TRANSIT"] = str(transit)
    started, log = run_campaign(
        contacts=contacts,
        rate=limit,
        workers=workers,
        settings=settings,
        delay=delay,
        delayed=delayed,
        hosts=hosts,
    )
    placed = sorted(p["at"] for p in log["placements"])
    requests = sorted(log["requests"])
    busiest = busiest_second(requests)
    most = math.floor(limit)  # a second holding more than this many requests is over the limit
    over = sorted(
        {
            round(requests[i] - started, 1)
            for i in range(len(requests) - most)
            if requests[i + most] - requests[i] < 1.0
        }
    )
    utilisation = (len(placed) - 1) / (limit * (placed[-1] - placed[0]))
    makespan = placed[-1] - started
    network = "  workers on hosts of their own" if hosts else ""
    if delay is not None:
        network += f"  {'+'.join(sorted(delayed))} {delay[0]:g}-{delay[1]:g} ms away, transit {transit}"
    return (
        f"limit {limit:>4g}/s  {contacts:>5} contacts  {workers} workers  margin {margin:.2f}{network}:  "
        f"busiest second/limit {busiest / limit:.2f} ({busiest} requests, {log['throttled']} refused)  "
        f"utilisation {utilisation:.3f}  makespan/(contacts/limit) {makespan / (contacts / limit):.3f}"
        + (f"  (seconds over the limit start at {over} s)" if over else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limits", type=float, nargs="+", default=[1.0, 20.0])
    parser.add_argument("--seconds", type=float, default=90.0, help="the ideal length of each run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--margin", type=float, nargs="+", default=[0.01], help="DIALER_PACING_MARGIN")
    parser.add_argument(
        "--delay",
        type=float,
        nargs=2,
        metavar=("LOW_MS", "HIGH_MS"),
        help="put tests/netdelay.py between the workers and --delayed, each chunk this many ms late",
    )
    parser.add_argument(
        "--delayed", nargs="+", default=["provider"], choices=["provider", "redis", "postgres"]
    )
    parser.add_argument("--transit", type=float, help="DIALER_PACING_TRANSIT (default: the dialer's)")
    parser.add_argument(
        "--hosts",
        action="store_true",
        help="each worker (and beat) on a host of its own: a network namespace on a bridge (needs root)",
    )
    options = parser.parse_args()
    if options.hosts and (reason := netns.unavailable()):
        parser.error(f"--hosts: {reason}")
    print(machine())
    for margin in options.margin:
        for limit in options.limits:
            line = run(
                limit,
                options.seconds,
                options.workers,
                margin,
                transit=options.transit,
                delay=tuple(options.delay) if options.delay else None,
                delayed=frozenset(options.delayed),
                hosts=options.hosts,
            )
            print(line, flush=True)


if __name__ == "__main__":
    main()
