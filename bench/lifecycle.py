"""A call's whole life on the deployed system, beside the frameworks' floor measured in the same run.

    python bench/lifecycle.py [--contacts 3000] [--workers 2] [--threads 16] [--receivers 1 2]
                              [--time-scale 0.02]

1. The floor: a bare Celery no-op task (``--workers`` workers of ``--threads`` threads, the
   dialer's acknowledgement and prefetch settings), and bare Starlette answering POSTs (the same
   uvicorn settings as ``dialer serve``, 32 keep-alive connections). A call costs one task and
   six callbacks, so the floor is 1 / (1 / tasks per second + 6 / POSTs per second) calls/s.
2. The dialer: the Vonage simulator with no rate limit whose callees all answer, are found to be
   people and key an answer to the campaign's question, six callbacks a call (calls last
   ``--time-scale`` of their real time), ``dialer serve --workers N`` for each ``--receivers``,
   the Celery workers and beat, PostgreSQL and Redis, all on this machine. A campaign of
   ``--contacts`` numbers, from ``campaign start`` to the campaign completed, which happens when
   the last call's final callback is recorded.

Prints calls completed per second, the CPU seconds per call of each process (workers, receiver,
simulator, beat, PostgreSQL, Redis) and of the dialer's own (all but the simulator, which stands
in for the provider), callbacks delivered against those recorded, and the ratio to the floor.
Goal (issue "A call's whole life, fast"): >= 0.4. Beside it, the bound this box sets: the
simulator shares its CPUs, so even a dialer that cost nothing could complete no more than the
CPUs' count over the simulator's CPU seconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import cpu_seconds, machine
from bench.dispatch import UNLIMITED, noop_rate
from bench.pacing import CAMPAIGN, ready_campaign
from bench.webhooks import _calls, _database, _drive, _server, build
from dialer import db
from dialer.simulators import dev_credentials
from tests.workers.deployment import free_port

ROOT = Path(__file__).resolve().parent.parent
CALLBACKS_PER_CALL = 6
CAMPAIGN_WITH_QUESTION = (
    CAMPAIGN
    + """
[question]
prompt = "Press 1 to confirm or 2 to cancel."
pattern = "[12]"

[call]
on_machine = "leave_message"
"""
)
"""The pacing campaign asking its question, with machine detection: Vonage then sends six callbacks
for each call answered (started, ringing, answered, human, input, completed), as the floor counts."""


def _named(name: str) -> float:
    """CPU seconds of every process called ``name`` (PostgreSQL's backends, Redis)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if text.split("(", 1)[1].split(")", 1)[0] == name:
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def bare_posts(seconds: float) -> float:
    """Bare Starlette's POSTs per second over 32 keep-alive connections."""
    with tempfile.TemporaryDirectory() as scratch, _database("sqlite", scratch) as url:
        sample = build(_calls(url, 300), dev_credentials())
    port = free_port()
    with _server([sys.executable, str(ROOT / "bench" / "bare_receiver.py"), str(port)], port, {}):
        load = asyncio.run(_drive(port, sample, connections=32, seconds=seconds, rate=None))
    return load.done / load.seconds


def lifecycle(
    contacts: int, *, workers: int, threads: int, receivers: int, time_scale: float
) -> tuple[float, dict[str, float], str]:
    """Calls completed per second, each process's CPU milliseconds per call, and the line to print."""
    options = {"rate": UNLIMITED, "workers": workers, "threads": threads, "time_scale": time_scale}
    with ready_campaign(contacts, CAMPAIGN_WITH_QUESTION, **options, receivers=receivers) as (system, url):
        parts = {name: process.pid for name, process in system.running.items()}
        before = {name: cpu_seconds(pid) for name, pid in parts.items()}
        before |= {"postgresql": _named("postgres"), "redis": _named("redis-server")}
        system.dialer("campaign", "start", "pacing", "--wait", "0")
        started = time.perf_counter()
        deadline = time.monotonic() + contacts / 10 + 60
        while _status(url) != "completed":
            if time.monotonic() > deadline or system.dead():
                status = system.dialer("status", "pacing")
                logs = {
                    name: (system.directory / f"{name}.log").read_text()[-1500:]
                    for name in ("simulator", "receiver")
                }
                raise SystemExit(f"the campaign stalled:\n{status}\n{logs}\n{system.dead()}")
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        after = {name: cpu_seconds(pid) for name, pid in parts.items()}
        after |= {"postgresql": _named("postgres"), "redis": _named("redis-server")}
        log = httpx.get(f"{system.sim_url}/_simulator/log", timeout=120).json()
        with db.get_engine(url).connect() as connection:
            recorded = connection.execute(sa.text("SELECT count(*) FROM webhookevent")).scalar_one()
        db.get_engine(url).dispose()
    per_call = {name: (after[name] - before[name]) / contacts * 1000 for name in after}
    shares = ", ".join(f"{name} {ms:.2f}" for name, ms in sorted(per_call.items(), key=lambda kv: -kv[1]))
    rate, cpu = contacts / elapsed, sum(per_call.values())
    return (
        rate,
        per_call,
        (
            f"{rate:7.0f} calls/s  ({contacts} calls in {elapsed:.1f} s; callbacks delivered"
            f" {log['callbacks_delivered']}, recorded {recorded}, failed {log['callbacks_failed']})\n"
            f"        cpu ms per call: {shares}; all {cpu:.2f}"
            # The simulator stands in for the provider's machines: what the dialer itself costs.
            f"; the dialer's own {cpu - per_call['simulator']:.2f}"
        ),
    )


def _status(url: str) -> str:
    with db.get_engine(url).connect() as connection:
        return str(
            connection.execute(sa.text("SELECT status FROM campaign WHERE name = 'pacing'")).scalar_one()
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--receivers", type=int, nargs="+", default=[1, 2], help="dialer serve --workers")
    parser.add_argument("--time-scale", type=float, default=0.02)
    options = parser.parse_args()
    print(machine())
    tasks = noop_rate(options.contacts, options.workers, options.threads)
    posts = bare_posts(10)
    floor = 1 / (1 / tasks + CALLBACKS_PER_CALL / posts)
    print(f"floor: bare Celery no-op {tasks:.0f} tasks/s, bare Starlette {posts:.0f} POSTs/s")
    print(f"       one task and {CALLBACKS_PER_CALL} POSTs per call: {floor:.0f} calls/s", flush=True)
    for receivers in options.receivers:
        rate, per_call, line = lifecycle(
            options.contacts,
            workers=options.workers,
            threads=options.threads,
            receivers=receivers,
            time_scale=options.time_scale,
        )
        print(f"dialer, serve --workers {receivers}: {line}")
        print(f"        ratio to the floor {rate / floor:.3f}")
        # The simulator shares this box's CPUs: it alone bounds the run, whatever the dialer costs.
        cpus = os.cpu_count() or 1
        bound = cpus / per_call["simulator"] * 1000
        print(
            f"        bound: the simulator alone ({per_call['simulator']:.2f} ms a call on {cpus} CPUs)"
            f" leaves room for {bound:.0f} calls/s, {bound / floor:.3f} of the floor, were the dialer free;"
            f" the dialer reached {rate / bound:.3f} of that",
            flush=True,
        )


if __name__ == "__main__":
    main()
