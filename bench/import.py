"""Import a generated 1,000,000-row contact CSV into SQLite and PostgreSQL; time and peak memory.

    python bench/import.py [--rows 1000000]

Prints, for the same file: pandas' bare ``read_csv`` of it, then ``dialer import`` on each database
(wall time of the whole command and its peak resident memory, as the kernel reports it). Goals on the
2-core machine (issue 22): under 10 s each, and at most 5 times pandas' bare read.

The file looks like a CRM export: formatted US numbers, UK mobiles in international form, national
US numbers (imported with --region US), 1% junk and 2% repeated numbers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import campaign_file, dialer, machine, measure, postgres_database, write_contacts


def import_into(url: str, csv_file: Path, campaign: Path) -> str:
    env = {"DIALER_DATABASE_URL": url}
    measure(dialer("db", "upgrade"), env)
    measure(dialer("campaign", "create", str(campaign)), env)
    run = measure(dialer("import", str(csv_file), "--campaign", "bench", "--region", "US"), env)
    return f"{run.seconds:6.1f} s  {run.peak_mb:5.0f} MB   {run.output.strip().splitlines()[-1]}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    rows = parser.parse_args().rows
    print(machine())
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        csv_file = directory / "contacts.csv"
        write_contacts(csv_file, rows)
        print(f"{rows:,} rows, {csv_file.stat().st_size / 1e6:.0f} MB of CSV")
        bare = measure(
            [
                sys.executable,
                "-c",
                f"import pandas; pandas.read_csv({str(csv_file)!r}, dtype=str, keep_default_na=False)",
            ]
        )
        print(f"pandas read_csv     {bare.seconds:6.1f} s  {bare.peak_mb:5.0f} MB")
        campaign = campaign_file(directory)
        sqlite_url = f"sqlite:///{directory / 'bench.db'}"
        print(f"import, SQLite      {import_into(sqlite_url, csv_file, campaign)}")
        with postgres_database() as url:
            print(f"import, PostgreSQL  {import_into(url, csv_file, campaign)}")


if __name__ == "__main__":
    main()
