"""Export 1,000,000 finished contacts' results; time and peak memory of each format.

    python bench/export.py [--rows 1000000] [--postgres]

Fills a campaign with ``--rows`` contacts through ``dialer import`` (the file of bench/import.py),
then settles them in SQL: one attempt each (1 in 4 a second one), every third contact with a
DTMF answer. Then times ``dialer export`` per contact as CSV, Parquet and XLSX, and per attempt
as CSV (wall time of the whole command, and its peak resident memory). Goal: <= 10 s for CSV.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import campaign_file, dialer, machine, measure, postgres_database, write_contacts

_SETTLE = [
    # Every contact called once; every fourth one twice (busy, then answered).
    """INSERT INTO attempt (campaign_id, contact_id, number, provider, status, callback_token,
           provider_call_id, send_failures, duration, price, queued_at, dispatched_at, answered_at,
           ended_at, updated_at)
       SELECT campaign_id, id, 1, 'vonage', CASE WHEN id % 4 = 0 THEN 'busy' ELSE 'completed' END,
           'token-1-' || id, 'call-1-' || id, 0, CASE WHEN id % 4 = 0 THEN NULL ELSE 20 + id % 60 END,
           CASE WHEN id % 4 = 0 THEN NULL ELSE '0.01200000' END, :at, :at, :at, :at, :at
       FROM contact""",
    """INSERT INTO attempt (campaign_id, contact_id, number, provider, status, callback_token,
           provider_call_id, send_failures, duration, price, queued_at, dispatched_at, answered_at,
           ended_at, updated_at)
       SELECT campaign_id, id, 2, 'vonage', 'completed', 'token-2-' || id, 'call-2-' || id, 0, 31,
           '0.01200000', :at, :at, :at, :at, :at
       FROM contact WHERE id % 4 = 0""",
    """INSERT INTO dtmfanswer (attempt_id, contact_id, digits, choice, valid, received_at)
       SELECT attempt.id, contact_id, '1', 'confirm', TRUE, :at
       FROM attempt WHERE status = 'completed' AND contact_id % 3 = 0""",
    """UPDATE contact SET state = 'done', attempts = CASE WHEN id % 4 = 0 THEN 2 ELSE 1 END,
           result = CASE WHEN id % 3 = 0 THEN 'dtmf_answered' ELSE 'reached' END""",
]


def settle(url: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    at = datetime(2026, 11, 23, 15, 0, tzinfo=UTC).replace(tzinfo=None)
    with engine.begin() as connection:
        for statement in _SETTLE:
            connection.execute(sa.text(statement), {"at": at})
    if engine.dialect.name == "postgresql":
        # A real campaign's results arrive over hours while autovacuum keeps the planner's
        # statistics and the tables' visibility up to date; here they appeared in one second.
        # Without this the planner expects a few hundred attempts (and sorts a million on
        # disk), and the first read of each row pays for marking it visible.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("VACUUM ANALYZE"))
    engine.dispose()


def exports(url: str, directory: Path, rows: int) -> None:
    env = {"DIALER_DATABASE_URL": url}
    measure(dialer("db", "upgrade"), env)
    measure(dialer("campaign", "create", str(campaign_file(directory))), env)
    csv_file = directory / "contacts.csv"
    write_contacts(csv_file, rows)
    measure(dialer("import", str(csv_file), "--campaign", "bench", "--region", "US"), env)
    settle(url)
    for name, options in [
        ("results.csv", []),
        ("results.parquet", []),
        ("results.xlsx", []),
        ("attempts.csv", ["--attempts"]),
    ]:
        out = directory / name
        run = measure(dialer("export", "bench", "--out", str(out), *options), env)
        print(
            f"  {name:<16} {run.seconds:6.1f} s  {run.peak_mb:5.0f} MB  {out.stat().st_size / 1e6:5.0f} MB"
            f"   {run.output.strip().splitlines()[-1]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    options = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        print(f"SQLite, {options.rows:,} contacts:")
        exports(f"sqlite:///{directory / 'bench.db'}", directory, options.rows)
        if options.postgres:
            with postgres_database() as url:
                print(f"PostgreSQL, {options.rows:,} contacts:")
                exports(url, directory, options.rows)


if __name__ == "__main__":
    main()
