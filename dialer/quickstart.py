"""``dialer quickstart``: the example campaign end to end in one process, against a simulator."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from campaigns.spec import Window, parse_campaign, parse_duration
from dialer import db
from dialer.export import contact_results, write_table
from dialer.importer import import_contacts, write_rejects
from dialer.models import utcnow
from dialer.operations import Progress, check_provider_can, create_campaign, get_campaign
from dialer.providers import get_provider
from dialer.runner import TIME_SCALE, run_campaign
from dialer.settings import Settings

QUICK_RETRY = "3s"


def example_file(name: str) -> Path:
    return Path(str(resources.files("dialer") / "examples" / name))


def run_quickstart(
    *, provider: str, directory: Path, console: Console, render: Callable[[Progress], Table]
) -> Progress:
    """Create, import, run and export the shipped example campaign for ``provider``."""
    get_provider(provider)
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / "quickstart.db"
    for stale in directory.glob("quickstart.db*"):
        stale.unlink()
    url = f"sqlite:///{database.resolve()}"  # one engine per directory, wherever the process runs
    db.upgrade(url)

    spec = parse_campaign(example_file(f"{provider}.toml").read_text())
    # The demo runs now, whatever the hour, and retries within seconds instead of the file's minutes.
    spec = spec.model_copy(
        update={
            "name": f"quickstart-{provider}",
            "window": Window.always(),
            "retry": spec.retry.model_copy(update={"delay": parse_duration(QUICK_RETRY)}),
        }
    )
    check_provider_can(spec, source=f"examples/{provider}.toml")
    console.print(
        f"quickstart: the {provider} example campaign; for the demo the calling window is ignored"
        f" and retries come after {QUICK_RETRY}"
    )

    settings = Settings(database_url=url)
    with db.session_scope(url) as session:
        campaign = create_campaign(session, spec)
        report = import_contacts(session, campaign=campaign, path=example_file("contacts.csv"), now=utcnow())
    line = f"imported {report.accepted} contacts"
    if report.rejects:
        write_rejects(report, directory / "rejects.csv")
        line += f", {len(report.rejects)} row(s) rejected (see {directory / 'rejects.csv'})"
    console.print(line)
    started = time.monotonic()
    final = run_campaign(
        spec.name, settings=settings, console=console, render=render, simulate=True, time_scale=TIME_SCALE
    )
    out = directory / "results.csv"
    with db.session_scope(url) as session:
        write_table(contact_results(session, get_campaign(session, spec.name)), out)
    console.print(f"\nfinished in {time.monotonic() - started:.1f}s; results in {out}")
    shutil.copy(example_file(f"{provider}.toml"), directory / f"{provider}.toml")
    return final
