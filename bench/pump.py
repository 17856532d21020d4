"""The pump's cost against the campaign's size, on PostgreSQL.

    python bench/pump.py [--sizes 10000 100000 1000000] [--rate 20] [--ticks 60]

For each size: a campaign whose contacts spread over many zones (Tokyo, Sydney and the rest of
Australia's mobiles on eight zones, Moscow and Russia's mobiles on many, London and the UK's four,
Berlin, Paris, São Paulo, and every US area code of the bench's list, some on several zones), the
contacts of the zones whose window is closed first in the file. The clock is set to 15:00 UTC on a
Monday: Asia and Australia are closed, Europe and the Americas open (window 09:00-20:00 local).
Then the pump runs tick after tick, each tick's claims counted as placed at once:

- ticks to the first call, and how long the first tick took;
- time per tick (median, p99) over ``--ticks`` ticks;
- calls lost at a window boundary: the clock jumps to the minute London's window closes, with
  other zones still open and due; budget left unused in the ticks after it (should be 0).

Prints one line per size. The goal: the time per tick does not grow with the campaign's size.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import phonenumbers
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import machine, postgres_database
from campaigns.spec import parse_campaign
from dialer import db
from dialer.importer import import_contacts
from dialer.operations import change_status, create_campaign
from dialer.pacing import LocalLimiter
from dialer.runtime import Runtime
from dialer.scheduler import LOOKAHEAD, pump
from dialer.settings import Settings
from dialer.simulators import dev_credentials

MONDAY_15_UTC = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
CLOSED = ["+8190", "+614", "+7912", "+7924"]  # Tokyo, Australian mobiles, Russian mobiles
OPEN = [
    *("+4479", "+4420", "+4930", "+331", "+5511"),
    *(f"+1{area}" for area in (212, 312, 415, 617, 713, 305, 206, 404, 503, 702, 808, 907)),
]
CAMPAIGN = """
name = "pump"
provider = "vonage"
caller_id = "+14155550100"

[message]
text = "Hello {first_name}."

[window]
start = "09:00"
end = "20:00"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

[pacing]
max_concurrent = 10000
"""


def numbers(prefixes: list[str], count: int, rng: random.Random) -> list[str]:
    """``count`` valid numbers under ``prefixes``, in turn."""
    found: list[str] = []
    seen: set[str] = set()
    while len(found) < count:
        prefix = prefixes[len(found) % len(prefixes)]
        candidate = prefix + "".join(rng.choice("0123456789") for _ in range(14 - len(prefix)))
        for length in (len(candidate), len(candidate) - 1, len(candidate) - 2):
            try:
                parsed = phonenumbers.parse(candidate[:length])
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(parsed) and candidate[:length] not in seen:
                seen.add(candidate[:length])
                found.append(candidate[:length])
                break
    return found


def write_csv(path: Path, size: int) -> None:
    rng = random.Random(size)
    closed = numbers(CLOSED, size * 4 // 5, rng)  # most of the file, and first
    opened = numbers(OPEN, size - len(closed), rng)
    with path.open("w") as out:
        out.write("phone,first_name\n")
        out.writelines(f"{phone},P{i}\n" for i, phone in enumerate([*closed, *opened]))


def run(size: int, rate: float, ticks: int, scratch: Path) -> str:
    csv_file = scratch / f"pump-{size}.csv"
    write_csv(csv_file, size)
    with postgres_database() as url:
        db.upgrade(url)
        with db.session_scope(url) as session:
            campaign = create_campaign(session, parse_campaign(CAMPAIGN))
            import_contacts(session, campaign=campaign, path=csv_file, now=MONDAY_15_UTC - timedelta(hours=1))
            change_status(session, name="pump", action="start", now=MONDAY_15_UTC)
        with db.get_engine(url).begin() as connection:
            connection.execute(sa.text("ANALYZE"))  # as autovacuum would, over a real campaign's hours
        credentials = dev_credentials()
        credentials["vonage"] = {**credentials["vonage"], "rate_limit": str(rate)}
        settings = Settings(database_url=url, **credentials)
        clock = [MONDAY_15_UTC]
        rt = Runtime(
            settings=settings,
            limiter=LocalLimiter(),
            http=httpx.Client(),
            enqueue=lambda attempt_id, countdown: None,
            clock=lambda: clock[0],
        )
        budget = math.ceil(rt.rate_limit("vonage") * LOOKAHEAD)

        def tick() -> tuple[int, float]:
            started = time.perf_counter()
            claimed = pump(rt)
            took = time.perf_counter() - started
            with db.get_engine(url).begin() as connection:  # every claim placed and finished at once
                connection.execute(sa.text("UPDATE attempt SET status = 'completed' WHERE status = 'queued'"))
                connection.execute(
                    sa.text("UPDATE contact SET state = 'done', result = 'reached' WHERE state = 'calling'")
                )
            clock[0] += timedelta(seconds=1)
            return claimed, took

        first = 0
        first_took = 0.0
        while True:
            first += 1
            claimed, took = tick()
            if first == 1:
                first_took = took
            if claimed or first > 1000:
                break
        times = [tick()[1] for _ in range(ticks)]
        clock[0] = MONDAY_15_UTC.replace(hour=20) - timedelta(seconds=2)  # London closes at 20:00
        lost = 0
        for _ in range(5):
            with db.get_engine(url).connect() as connection:  # the Americas are still open
                due = connection.execute(
                    sa.text("SELECT count(*) FROM contact WHERE state = 'pending' AND phone LIKE '+1%'")
                ).scalar_one()
            claimed, _ = tick()
            lost += min(budget, due) - claimed
        rt.http.close()
        db.get_engine(url).dispose()
    per_tick = sorted(times)
    return (
        f"{size:>9,} contacts: first call on tick {first} ({first_took * 1000:.0f} ms)  "
        f"per tick median {statistics.median(per_tick) * 1000:6.1f} ms  "
        f"p99 {per_tick[min(len(per_tick) - 1, round(0.99 * len(per_tick)))] * 1000:6.1f} ms  "
        f"calls lost at London's 20:00: {lost} of {5 * budget}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--rate", type=float, default=20.0, help="the account's calls per second")
    parser.add_argument("--ticks", type=int, default=30)
    options = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as scratch:
        for size in options.sizes:
            print(run(size, options.rate, options.ticks, Path(scratch)), flush=True)


if __name__ == "__main__":
    main()
