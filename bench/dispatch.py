"""Dispatch throughput with no rate limit, against a bare Celery no-op measured in the same run.

    python bench/dispatch.py [--contacts 3000] [--workers 2] [--threads 16 8]

1. The floor: ``--workers`` Celery workers (threads pool, ``--threads`` each, the dialer's
   acknowledgement and prefetch settings) run ``--contacts`` no-op tasks (each counts itself in
   Redis); tasks/s.
2. The dialer: the same number of workers, beat, the receiver and a Vonage simulator allowing
   10,000 calls/s, PostgreSQL; a campaign of ``--contacts`` numbers who all answer, slowly (their
   callbacks start 30 s after each call, so the receiver's work is not in the figure). Calls
   placed per second, from ``campaign start`` returning to the simulator accepting the last call.

Prints both and their ratio, for each number of threads: how much of Celery's own pace placing a
call keeps. The goal for a call's whole life is bench/lifecycle.py's (placing and recording).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import REDIS_URL, machine
from bench.noop_app import DONE, noop
from bench.pacing import run_campaign
from tests.workers.deployment import CELERY, wait_for_workers

ROOT = Path(__file__).resolve().parent.parent
UNLIMITED = 10_000


def noop_rate(tasks: int, workers: int, threads: int) -> float:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    pool = ["--pool", "threads", "-c", str(threads)]
    command = [*CELERY[:-1], "bench.noop_app", "worker", *pool, "-l", "warning"]
    running = [
        subprocess.Popen([*command, "-n", f"noop{number}@%h"], env=env, stdout=subprocess.DEVNULL)
        for number in range(workers)
    ]
    try:
        wait_for_workers(REDIS_URL, workers)
        started = time.perf_counter()
        for _ in range(tasks):
            noop.delay()
        while int(client.get(DONE) or 0) < tasks:
            time.sleep(0.01)
        return tasks / (time.perf_counter() - started)
    finally:
        for process in running:
            process.terminate()
        for process in running:
            process.wait(timeout=30)
        client.close()


def dispatch_rate(contacts: int, workers: int, threads: int) -> float:
    # The callees take their time (the first callback comes 30 s after a call is placed), so
    # this measures placing calls, not the receiver recording them on the same two cores.
    started, log = run_campaign(
        contacts=contacts, rate=UNLIMITED, workers=workers, threads=threads, time_scale=100
    )
    return contacts / (max(p["at"] for p in log["placements"]) - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", default=[16, 8], help="threads per worker")
    options = parser.parse_args()
    print(machine())
    for threads in options.threads:
        setting = f"{options.contacts} each, {options.workers} workers of {threads} threads"
        floor = noop_rate(options.contacts, options.workers, threads)
        print(f"bare Celery no-op      {floor:7.0f} tasks/s  ({setting})")
        calls = dispatch_rate(options.contacts, options.workers, threads)
        print(f"dialer, no rate limit  {calls:7.0f} calls/s")
        print(f"ratio                  {calls / floor:7.2f}", flush=True)


if __name__ == "__main__":
    main()
