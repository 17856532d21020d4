"""``dialer quickstart``: the example campaign end to end in one process, against a simulator."""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlmodel import select

from campaigns.spec import Window, parse_campaign, parse_duration
from dialer import db
from dialer.errors import ConfigurationError
from dialer.export import contact_results, write_table
from dialer.importer import import_contacts, write_rejects
from dialer.models import Contact, utcnow
from dialer.operations import Progress, check_provider_can, create_campaign, get_campaign
from dialer.providers import get_provider
from dialer.runner import TIME_SCALE, run_campaign
from dialer.settings import Settings
from dialer.simulators.base import Script

QUICK_RETRY = "3s"


def example_file(name: str) -> Path:
    return Path(str(resources.files("dialer") / "examples" / name))


SURVEY_CALLEES = {"6": Script("answered", answers=("0",)), "7": Script("answered", answers=("9",))}
"""In the survey's demo, callees whose numbers end so press 0 (to speak to someone) and 9 (to stop
these calls); the others behave as the simulator's table says, pressing the same key each time."""


def run_quickstart(
    *,
    provider: str,
    directory: Path,
    console: Console,
    render: Callable[[Progress], Table],
    example: str | None = None,
) -> Progress:
    """Create, import, run and export the shipped example campaign for ``provider`` (or the
    ``example`` named, ``survey``: the call flow with three questions, on Vonage)."""
    get_provider(provider)
    if example not in (None, "survey"):
        raise ConfigurationError(f"no example campaign {example!r} (known: survey)")
    if example == "survey" and provider != "vonage":
        raise ConfigurationError(
            "the survey example records a comment, which only Vonage does: drop --provider"
        )
    source = f"{example or provider}.toml"
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / "quickstart.db"
    for stale in directory.glob("quickstart.db*"):
        stale.unlink()
    url = f"sqlite:///{database.resolve()}"  # one engine per directory, wherever the process runs
    db.upgrade(url)

    spec = parse_campaign(example_file(source).read_text())
    # The demo runs now, whatever the hour, and retries within seconds instead of the file's minutes.
    spec = spec.model_copy(
        update={
            "name": f"quickstart-{example or provider}",
            "window": Window.always(),
            "retry": spec.retry.model_copy(update={"delay": parse_duration(QUICK_RETRY)}),
        }
    )
    check_provider_can(spec, source=f"examples/{source}")
    console.print(
        f"quickstart: the {source} example campaign; for the demo the calling window is ignored"
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
    scripts = {}
    if example == "survey":
        with db.session_scope(url) as session:
            phones = session.exec(select(Contact.phone)).all()
        scripts = {phone: SURVEY_CALLEES[phone[-1]] for phone in phones if phone[-1] in SURVEY_CALLEES}
    final = run_campaign(
        spec.name,
        settings=settings,
        console=console,
        render=render,
        simulate=True,
        time_scale=TIME_SCALE,
        scripts=scripts,
        # Its database is the quickstart's own, not the one DIALER_DATABASE_URL names.
        again=f"DIALER_DATABASE_URL={shlex.quote(url)} dialer run {spec.name} --simulate",
    )
    out = directory / "results.csv"
    with db.session_scope(url) as session:
        write_table(contact_results(session, get_campaign(session, spec.name)), out)
    console.print(f"\nfinished in {time.monotonic() - started:.1f}s; results in {out}")
    shutil.copy(example_file(source), directory / source)
    return final
