"""The ``dialer`` command."""

from __future__ import annotations

import functools
import gc
import logging
import shlex
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click
import sqlalchemy as sa
from rich import progress as bars
from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlmodel import col, select

from campaigns.outcomes import CampaignStatus
from dialer import db, lease
from dialer.errors import DialerError, WriteFailed
from dialer.models import Campaign, utcnow
from dialer.operations import Progress, get_campaign, progress
from dialer.runtime import spec_of
from dialer.settings import Settings, get_settings

if TYPE_CHECKING:  # the importer is loaded only by the commands that read files
    from dialer.importer import ImportReport

console = Console(highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def _friendly(command: F) -> F:
    """Turn our errors (and a missing schema) into one line and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DialerError as error:
            raise click.ClickException(str(error)) from None
        except sa.exc.OperationalError as error:
            message = str(error.orig)
            if "no such table" in message or "does not exist" in message:
                message = "the database has no tables yet: run `dialer db upgrade`"
            raise click.ClickException(f"database: {message}") from None

    return cast(F, wrapper)


class _Group(click.Group):
    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Command]:  # type: ignore[override]
        decorator = super().command(*args, **kwargs)
        return lambda function: decorator(_friendly(function))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dialer")
@click.option("-v", "--verbose", is_flag=True, help="Log what the dialer does.")
def main(verbose: bool) -> None:
    """A bulk voice-campaign dialer: import contacts, call them through a provider, export results.

    Settings come from DIALER_* environment variables or a .env file (see the README).
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    click.get_current_context().call_on_close(db.dispose_engines)


def _settings() -> Settings:
    return get_settings()


_PROVIDER = click.Choice(["vonage", "cm", "routee", "cequens", "fractel"])
"""The providers a --provider option takes (checked against PROVIDERS by a test)."""


# -- database -------------------------------------------------------------------------------------


@main.group(cls=_Group, name="db")
def db_group() -> None:
    """Database schema."""


@db_group.command()
def upgrade() -> None:
    """Apply every migration to DIALER_DATABASE_URL (creating the tables in a new database)."""
    url = _settings().database_url
    shown = sa.make_url(url).render_as_string(hide_password=True)
    before, head = db.revisions(url)
    db.upgrade(url)
    if before is None:
        console.print(f"created the tables in {shown} (migration {head})", markup=False)
    elif before != head:
        console.print(f"migrated {shown} from {before} to {head}", markup=False)
    else:
        console.print(f"{shown} was up to date already ({head})", markup=False)


# -- campaigns ------------------------------------------------------------------------------------


@main.group(cls=_Group)
def campaign() -> None:
    """Create, list, start, pause, resume and cancel campaigns."""


@campaign.command("create")
@click.argument("file", type=click.Path(path_type=Path))
def campaign_create(file: Path) -> None:
    """Create a campaign from a TOML campaign FILE."""
    from dialer.operations import create_campaign, read_campaign_file

    settings = _settings()
    spec = read_campaign_file(file, settings)
    with db.session_scope(settings.database_url) as session:
        create_campaign(session, spec)
    console.print(
        f"created campaign {spec.name} ({spec.provider}); next: dialer import CSV --campaign {spec.name}"
    )


@campaign.command("update")
@click.argument("file", type=click.Path(path_type=Path))
def campaign_update(file: Path) -> None:
    """Change a paused campaign from its FILE: message, question, retry, window, pacing, call."""
    from dialer.operations import read_campaign_file, update_campaign

    settings = _settings()
    spec = read_campaign_file(file, settings)
    with db.session_scope(settings.database_url) as session:
        updated = update_campaign(session, spec=spec, settings=settings)
        again = lease.resume_command(updated)
    console.print(f"updated campaign {spec.name}; {again} carries it on", markup=False)


@campaign.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def campaign_delete(name: str, yes: bool) -> None:
    """Delete a campaign that is not running, with its contacts and results."""
    from dialer.operations import delete_campaign

    if not yes:
        click.confirm(f"Delete campaign {name!r} with its contacts and results?", abort=True)
    with db.session_scope(_settings().database_url) as session:
        contacts = delete_campaign(session, name=name)
    console.print(f"deleted campaign {name} and its {contacts} contact(s)")


@campaign.command("list")
def campaign_list() -> None:
    """List campaigns with their status and contact counts."""
    with db.session_scope(_settings().database_url) as session:
        campaigns = session.exec(select(Campaign).order_by(col(Campaign.id))).all()
        reports = [progress(session, c.name) for c in campaigns]
    if not reports:
        console.print("no campaigns yet: dialer campaign create FILE")
        return
    table = Table("name", "provider", "status", "contacts", "done")
    for report in reports:
        table.add_row(report.name, report.provider, report.status, str(report.contacts), str(report.done))
    console.print(table)


def _move(action: str, name: str, *, yes: bool = False) -> Campaign:
    from dialer.operations import MOVES, change_status, wait_for_sends

    settings = _settings()
    if action in ("start", "resume") and not yes:
        with db.session_scope(settings.database_url) as session:
            campaign = get_campaign(session, name)
            simulated, provider = campaign.simulated, campaign.provider
            movable = campaign.status in MOVES[action][0]
        # Asked before the transaction that moves it: an answer awaited must not hold the database.
        # (A campaign that cannot move is not asked about: the move says why.)
        question = f"campaign {name} has only been simulated so far: place real calls through {provider}?"
        if simulated and movable and not click.confirm(question, default=False):
            raise click.ClickException(f"campaign {name!r}: not {action}ed (it stays as it was)")
    with db.session_scope(settings.database_url) as session:
        if action in ("start", "resume"):  # for the workers: not while a `dialer run` dials the account
            now, provider = utcnow(), get_campaign(session, name).provider
            running = lease.holders(session, provider=provider, now=now, other_than=lease.WORKERS)
            if running:
                raise click.ClickException(
                    f"campaign {name!r}: {provider}'s account is being dialled by {running[0]}; the workers"
                    " would share its rate limit with it: stop that run first, or resume there"
                )
        moved = change_status(session, name=name, action=action, now=utcnow())
        if action in ("start", "resume"):
            lease.meant_for_workers(session, campaign=moved, now=utcnow())
    if moved.status in (CampaignStatus.PAUSED, CampaignStatus.CANCELLED):
        account = settings.provider_settings(moved.provider)
        left = wait_for_sends(
            settings.database_url,
            campaign_id=moved.id or 0,
            timeout=(account.answer_timeout or settings.http_timeout) + 5,
        )
        if left:
            raise click.ClickException(f"{left} call request(s) still on their way to the provider")
    console.print(f"campaign {moved.name} is {moved.status}")
    if moved.status == CampaignStatus.PAUSED:
        console.print(f"{lease.resume_command(moved)} resumes it", markup=False)
    return moved


_WAIT_FOR_WORKERS = click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds to wait for Celery workers to take the campaign (0: do not check).",
)


def _warn_without_workers(name: str, wait: float) -> None:
    """Say so when no worker or beat runs to call a campaign just started or resumed on them."""
    from dialer.health import missing_workers

    missing = missing_workers(_settings(), wait=wait) if wait else None
    if missing:
        why, commands = missing
        console.print(
            f"warning: {why}, so nothing is being called. Start each of these as its own process:",
            markup=False,
        )
        for command in commands:
            console.print(f"  {command}", markup=False)
        console.print(
            f"or pause it (`dialer campaign pause {name}`) and run it in one process: `dialer run {name}`",
            markup=False,
        )


_YES = click.option(
    "--yes", is_flag=True, help="Do not ask before the first real call of a campaign only simulated."
)


@campaign.command("start")
@click.argument("name")
@_WAIT_FOR_WORKERS
@_YES
def campaign_start(name: str, wait: float, yes: bool) -> None:
    """Start calling a campaign's contacts (on Celery workers; `dialer run` calls in one process)."""
    _move("start", name, yes=yes)
    _warn_without_workers(name, wait)


@campaign.command("try")
@click.argument("name")
@click.option(
    "--contact", "phone", help="The contact (its number) whose columns fill the texts (default: the first)."
)
@click.option(
    "--keys",
    help="The keys pressed at each question, in turn, comma-separated (an empty one: silence; "
    "'hangup': the callee hangs up). Without it, you type them.",
)
def campaign_try(name: str, phone: str | None, keys: str | None) -> None:
    """Walk the campaign's call in the terminal, as a contact would hear it, without calling anyone."""
    from dialer.trial import sample_contact, walk

    with db.session_scope(_settings().database_url) as session:
        campaign = get_campaign(session, name)
        to, variables = sample_contact(session, campaign, phone)
        spec = spec_of(campaign)
    given = None if keys is None else keys.split(",")

    def pressed(step: str, _: object, tries: int) -> str | None:
        if given is not None:
            typed = given.pop(0) if given else "hangup"
        else:
            again = f" (try {tries})" if tries > 1 else ""
            typed = click.prompt(
                f"keys for {step}{again}", default="", show_default=False, prompt_suffix="> "
            )
        return None if typed.strip() == "hangup" else typed.strip()

    console.print(
        f"a call of {name} to {to}; Enter alone is silence, 'hangup' puts the phone down", markup=False
    )
    walk(spec, to, variables, pressed, show=lambda line: console.print(line, markup=False))


@campaign.command("call")
@click.argument("name")
@click.option("--to", "to", required=True, help="Your own number (E.164), to receive the call.")
@click.option(
    "--contact", "phone", help="The contact (its number) whose columns fill the texts (default: the first)."
)
@click.option(
    "--simulate", is_flag=True, help="Call the provider's simulator instead, with throwaway credentials."
)
@click.option(
    "--keys", help="With --simulate: the keys the callee presses at each question, comma-separated."
)
@click.option("--yes", is_flag=True, help="Do not ask before placing a real call.")
def campaign_call(name: str, to: str, phone: str | None, simulate: bool, keys: str | None, yes: bool) -> None:
    """Place one call of the campaign to your own number, and print what it recorded.

    The call is the campaign's, made now (whatever the calling window) and never retried; its
    answers, opt-outs and transfers are kept apart from the campaign's results.
    """
    from campaigns.phones import InvalidPhone, normalise
    from dialer.runner import run_campaign
    from dialer.simulators.base import Script
    from dialer.trial import sample_contact, test_call_summary, test_campaign

    settings = _settings()
    if keys is not None and not simulate:
        raise click.ClickException("--keys is for --simulate: on a real call you press them yourself")
    with db.session_scope(settings.database_url) as session:
        campaign = get_campaign(session, name)
        try:
            number = normalise(to, spec_of(campaign).region)
        except InvalidPhone as error:
            raise click.ClickException(f"--to: {to!r} is not a number to call: {error}") from None
        _, variables = sample_contact(session, campaign, phone)
        if not simulate and not yes:
            click.confirm(f"Place a real call to {number} through {campaign.provider}?", abort=True)
        trial = test_campaign(session, name=name, to=number, variables=variables)
    scripts = {number: Script("answered", answers=tuple(keys.split(",")))} if keys is not None else {}
    try:
        run_campaign(
            trial.name,
            settings=settings,
            console=console,
            render=progress_table,
            simulate=simulate,
            scripts=scripts,
        )
    finally:
        with db.session_scope(settings.database_url) as session:
            for line in test_call_summary(session, get_campaign(session, trial.name)):
                console.print(line, markup=False)


@campaign.command("plan")
@click.argument("name")
def campaign_plan(name: str) -> None:
    """How long the campaign will take: contacts per time zone and when each zone's window opens, the
    pace (the account's rate, the concurrency cap) and the retries the policy will add."""
    from dialer.plan import MIN_SAMPLE, plan

    now = utcnow()
    with db.session_scope(_settings().database_url) as session:
        found = plan(session, name, settings=_settings(), now=now)
    retry = found.policy
    observed = (
        f"as in the last {found.observed} ended attempts"
        if found.observed >= MIN_SAMPLE
        else f"defaults until {MIN_SAMPLE} attempts have ended"
    )
    cap = f"the campaign's own cap {found.campaign_rate:g}/s" if found.campaign_rate else "no campaign cap"
    backoff = ", doubling each time" if retry.backoff == "exponential" else ""
    lines = [
        f"{found.name} ({found.provider}): {found.contacts_left:,} contacts left,"
        f" about {found.attempts_left:,.0f} calls with retries",
        f"pace: {found.calls_per_second:.3g} calls/s (the {found.provider} account allows"
        f" {found.account_rate:g}/s, {cap}; {found.concurrency} calls at once"
        f" of {found.call_seconds:.0f} s allow {found.concurrency / found.call_seconds:.3g}/s)",
        f"retries: up to {retry.max_attempts} attempts on {', '.join(retry.retry_on) or 'nothing'},"
        f" {_duration(retry.delay.total_seconds())} after the previous one{backoff};"
        f" {found.retry_share:.0%} of calls retried, {found.call_seconds:.0f} s per call ({observed})",
    ]
    if found.starts is not None:
        lines.append(
            f"starts: {found.starts.astimezone(UTC):%a %Y-%m-%d %H:%M} UTC"
            f" (in {_duration((found.starts - now).total_seconds())}): nothing is called before"
        )
    if found.ends is not None:
        expiring = (
            f"about {found.expiring:,.0f} contacts left then expire"
            if found.expiring >= 0.5
            else "every contact should be called by then"
        )
        lines.append(f"ends: {found.ends.astimezone(UTC):%a %Y-%m-%d %H:%M} UTC: {expiring}")
    for line in lines:
        console.print(line, markup=False)
    table = Table("time zones", "contacts", "window opens (UTC)")
    for zone in found.zones:
        if zone.never:
            opens = "never in all of them at once: not called"
        elif zone.opens is None:
            opens = "open now"
        else:
            opens = f"{zone.opens:%a %Y-%m-%d %H:%M} (in {_duration((zone.opens - now).total_seconds())})"
        table.add_row(" ".join(zone.zones), f"{zone.contacts:,}", opens)
    if found.zones:
        console.print(table)
    console.print(f"estimated finish: {_finish(found.finish, now)}", markup=False)


def _duration(seconds: float) -> str:
    """``seconds`` as an operator reads it: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    minutes = round(seconds / 60)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _finish(finish: datetime | None, now: datetime) -> str:
    from dialer.plan import HORIZON

    if finish is None:
        return f"not within {HORIZON.days} days"
    if finish <= now:
        return "nothing left to call"
    return f"{finish:%a %Y-%m-%d %H:%M} UTC (in {_duration((finish - now).total_seconds())})"


@campaign.command("pause")
@click.argument("name")
def campaign_pause(name: str) -> None:
    """Pause: no call is placed after this returns; calls in progress finish."""
    _move("pause", name)


@campaign.command("resume")
@click.argument("name")
@_WAIT_FOR_WORKERS
@_YES
def campaign_resume(name: str, wait: float, yes: bool) -> None:
    """Resume a paused campaign on the Celery workers (`dialer run NAME` resumes it in one process)."""
    _move("resume", name, yes=yes)
    _warn_without_workers(name, wait)


@campaign.command("cancel")
@click.argument("name")
def campaign_cancel(name: str) -> None:
    """Cancel: contacts not yet called are finished as cancelled."""
    _move("cancel", name)


@campaign.command("provider")
@click.argument("name")
@click.argument("provider")
def campaign_provider(name: str, provider: str) -> None:
    """Switch a (not running) campaign to another PROVIDER (vonage, cm, routee, cequens, fractel, or
    another account of one, as vonage.backup); contacts are kept."""
    from dialer.operations import set_provider

    settings = _settings()
    with db.session_scope(settings.database_url) as session:
        set_provider(session, name=name, provider=provider, settings=settings)
    console.print(f"campaign {name} now calls through {provider}")


@contextmanager
def _bytes_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (only on a terminal) fed with ``(bytes done, bytes in all)``."""
    errors = Console(stderr=True)
    columns = (*bars.Progress.get_default_columns(), bars.DownloadColumn(), bars.TransferSpeedColumn())
    with bars.Progress(*columns, console=errors, transient=True, disable=not errors.is_terminal) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


# -- import / export ------------------------------------------------------------------------------


@main.command("import")
@click.argument("csv_file", metavar="CSV", type=click.Path(path_type=Path))
@click.option("--campaign", "campaign_name", required=True, help="The campaign to add contacts to.")
@click.option(
    "--phone-column", help="The column holding phone numbers (default: the campaign's, else 'phone')."
)
@click.option("--region", help="Two-letter country for numbers written without +country code (e.g. US).")
@click.option("--encoding", help="The file's encoding (default: detected; UTF-8, cp1252, latin-1).")
@click.option("--delimiter", help="The field delimiter (default: detected among , ; tab |).")
@click.option(
    "--rejects",
    type=click.Path(path_type=Path),
    help="Where to write rejected rows (default: CSV.rejects.csv).",
)
@click.option(
    "--map",
    "renames",
    multiple=True,
    metavar='"HEADER=name"',
    help="Use the column HEADER as name (a placeholder, phone, timezone); may be repeated.",
)
@click.option(
    "--dry-run", is_flag=True, help="Say what would be imported and list the rejects; import nothing."
)
def import_command(
    csv_file: Path,
    campaign_name: str,
    phone_column: str | None,
    region: str | None,
    encoding: str | None,
    delimiter: str | None,
    rejects: Path | None,
    renames: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Import contacts from a CSV file into a campaign.

    Rows that cannot be used (a bad number, a repeat, a number on the do-not-call list) are listed
    with the reason in a rejects file, and every other row is imported; a file that cannot be read
    at all imports nothing.
    """
    from dialer.importer import import_contacts
    from dialer.operations import get_campaign

    if delimiter == "\\t":
        delimiter = "\t"
    mapping = {}
    for rename in renames:
        header, equals, name = rename.partition("=")
        if not equals or not header.strip() or not name.strip():
            raise click.BadParameter(f'{rename!r}: give "HEADER=name"', param_hint="--map")
        mapping[header.strip()] = name.strip()
    rejects_file, replace_rejects = _rejects_file(csv_file, rejects)
    with db.session_scope(_settings().database_url) as session, _bytes_bar(f"importing {csv_file}") as show:
        target = get_campaign(session, campaign_name)
        report = import_contacts(
            session,
            campaign=target,
            path=csv_file,
            now=utcnow(),
            phone_column=phone_column,
            region=region,
            encoding=encoding,
            delimiter=delimiter,
            progress=show,
            mapping=mapping,
            # Written before the import commits.
            rejects=rejects_file,
            replace_rejects=replace_rejects,
        )
        if dry_run:
            session.rollback()
    verb = "would import" if dry_run else "imported"
    line = f"{verb} {report.accepted} contact(s) into {campaign_name}"
    before = sum(reject.reason == "already in the campaign" for reject in report.rejects)
    if before:
        line += f"; {before} already in it (imported before)"
    if report.rejects_file is not None:
        others = len(report.rejects) - before
        line += f"; {others} row(s) rejected" if others else ""
        line += f", {_listed(report)}"
    console.print(line + ("; nothing imported (--dry-run)" if dry_run else ""), markup=False)


def _rejects_file(csv_file: Path, given: Path | None) -> tuple[Path, bool]:
    """Where a command lists the rows of ``csv_file`` it did not take, and whether it writes over a
    file there: the file the operator gave is replaced; ``CSV.rejects.csv`` never is (an earlier
    list is kept, the new one written beside it: ``CSV.rejects-2.csv``)."""
    return (given, True) if given else (csv_file.with_name(csv_file.stem + ".rejects.csv"), False)


def _listed(report: ImportReport) -> str:
    """Where the report's rejects were written, and whether they took a file's place there."""
    return f"listed in {report.rejects_file}" + (
        " (it replaced the file there)" if report.rejects_replaced else ""
    )


@main.command("export")
@click.argument("name")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="The file to write: .csv, .xlsx or .parquet.",
)
@click.option("--attempts", is_flag=True, help="One row per attempt instead of one per contact.")
@click.option(
    "--excel", is_flag=True, help="A CSV that Excel on Windows opens as UTF-8 (with a byte-order mark)."
)
def export_command(name: str, out: Path, attempts: bool, excel: bool) -> None:
    """Export a campaign's results."""
    from dialer.export import attempt_results, contact_results, renamed_columns, write_table
    from dialer.operations import get_campaign

    with db.session_scope(_settings().database_url) as session:
        target = get_campaign(session, name)
        table = attempt_results(session, target) if attempts else contact_results(session, target)
    write_table(table, out, excel=excel)
    for old, new in renamed_columns(table).items():
        console.print(f"the contacts' column {old!r} is exported as {new!r} ({old!r} is one of the results')")
    console.print(f"wrote {len(table)} row(s) to {out}")


# -- do-not-call list ----------------------------------------------------------------------------


@main.command()
@click.argument("name")
@click.option(
    "--out",
    "directory",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The directory the recordings go to, one file each (<number>-<attempt>-<step>.mp3).",
)
def recordings(name: str, directory: Path) -> None:
    """Fetch a campaign's recordings (its record steps) from the provider, with its credentials.

    Files fetched already are left as they are: run it again to fetch what came since.
    """
    from dialer.recordings import fetch_recordings
    from dialer.runtime import http_client

    settings = _settings()
    with db.session_scope(settings.database_url) as session, http_client(settings) as client:
        done = fetch_recordings(
            session,
            campaign=get_campaign(session, name),
            settings=settings,
            directory=directory,
            client=client,
        )
    for problem in done.failed:
        console.print(f"not fetched: {problem}", markup=False)
    console.print(
        f"fetched {len(done.written)} recording(s) into {directory}; {done.present} were there already",
        markup=False,
    )
    if done.failed:
        raise SystemExit(1)


@main.group(cls=_Group)
def dnc() -> None:
    """The do-not-call list: numbers never called, globally or in one campaign (--campaign)."""


def _campaign_id(session: Any, name: str | None) -> int | None:
    from dialer.operations import get_campaign

    return None if name is None else get_campaign(session, name).id


_scope_option = click.option(
    "--campaign", "campaign_name", help="Only this campaign (default: every campaign)."
)
_region_option = click.option("--region", help="Two-letter country for numbers without +country code.")


@dnc.command("add")
@click.argument("phones", nargs=-1, required=True)
@_scope_option
@_region_option
@click.option("--reason", help="Why (kept with the number).")
def dnc_add(
    phones: tuple[str, ...], campaign_name: str | None, region: str | None, reason: str | None
) -> None:
    """Add PHONES to the list."""
    from dialer import dnc as lists

    numbers = lists.normalised(phones, region)
    with db.session_scope(_settings().database_url) as session:
        added = lists.add(
            session, numbers, campaign_id=_campaign_id(session, campaign_name), reason=reason, now=utcnow()
        )
    console.print(f"added {added} number(s) ({len(numbers) - added} already listed)")


@dnc.command("remove")
@click.argument("phones", nargs=-1, required=True)
@_scope_option
@_region_option
def dnc_remove(phones: tuple[str, ...], campaign_name: str | None, region: str | None) -> None:
    """Take PHONES off the list."""
    from dialer import dnc as lists

    numbers = lists.normalised(phones, region)
    with db.session_scope(_settings().database_url) as session:
        removed = lists.remove(session, numbers, campaign_id=_campaign_id(session, campaign_name))
    console.print(f"removed {removed} number(s)")


@dnc.command("list")
@_scope_option
def dnc_list(campaign_name: str | None) -> None:
    """Show the list."""
    from dialer import dnc as lists

    with db.session_scope(_settings().database_url) as session:
        listed = lists.entries(session, campaign_id=_campaign_id(session, campaign_name))
    table = Table("phone", "reason", "source", "added (UTC)")
    for entry in listed:
        added = entry.added_at.strftime("%Y-%m-%d %H:%M")
        table.add_row(entry.phone, entry.reason or "", entry.source or "", added)
    console.print(table if listed else "the list is empty")


@dnc.command("import")
@click.argument("csv_file", metavar="CSV", type=click.Path(path_type=Path))
@_scope_option
@click.option(
    "--region", help="Two-letter country for numbers without +country code (default: the campaign's)."
)
@click.option(
    "--phone-column", default="phone", show_default=True, help="The column holding the numbers (any case)."
)
@click.option("--reason", help="Why (kept with every number).")
@click.option(
    "--rejects",
    type=click.Path(path_type=Path),
    help="Where to list the rows that are not numbers (default: CSV.rejects.csv).",
)
def dnc_import(
    csv_file: Path,
    campaign_name: str | None,
    region: str | None,
    phone_column: str,
    reason: str | None,
    rejects: Path | None,
) -> None:
    """Add every number of a CSV to the list; rows that are not numbers are listed with the reason."""
    from dialer import dnc as lists
    from dialer.importer import ImportReport, write_rejects
    from dialer.operations import get_campaign

    with db.session_scope(_settings().database_url) as session:
        target = get_campaign(session, campaign_name) if campaign_name else None
        if region is None and target is not None:
            region = spec_of(target).region
        added, refused = lists.import_file(
            session,
            csv_file,
            campaign_id=target.id if target else None,
            phone_column=phone_column,
            region=region,
            reason=reason,
            now=utcnow(),
        )
        listed = ImportReport(file=csv_file, rejects=refused)
        if refused:  # before the numbers are committed: a list that cannot be written adds nothing
            out, replace = _rejects_file(csv_file, rejects)
            try:
                write_rejects(listed, out, replace=replace)
            except WriteFailed as error:
                raise WriteFailed(
                    f"{error}; nothing was added (its rejected rows would go unlisted)"
                ) from None
    line = f"added {added} number(s) from {csv_file}"
    if listed.rejects_file is not None:
        line += f"; {len(refused)} row(s) are not phone numbers, {_listed(listed)}"
    console.print(line)


# -- status ---------------------------------------------------------------------------------------


ESTIMATE_EVERY = 15.0
"""Seconds between estimates of the finish with ``status --watch``."""


def _campaign_table(report: Progress) -> Table:
    """An empty two-column table titled with the campaign, its provider and its status."""
    table = Table(
        title=f"{report.name} ({report.provider}): {report.status}", show_header=False, title_justify="left"
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    return table


def progress_table(report: Progress) -> Table:
    table = _campaign_table(report)
    table.add_row("contacts", str(report.contacts))
    table.add_row("done", f"{report.done} ({report.done / report.contacts:.0%})" if report.contacts else "0")
    table.add_row("calls in progress", str(report.live_calls))
    if report.starts_at is not None:
        table.add_row(
            "starts", f"{report.starts_at.astimezone(UTC):%a %Y-%m-%d %H:%M} UTC: nothing is called before"
        )
    if report.ends_at is not None:
        table.add_row(
            "ends", f"{report.ends_at.astimezone(UTC):%a %Y-%m-%d %H:%M} UTC: contacts not reached expire"
        )
    if report.notify_url:
        pushed = report.notifications
        line = f"{pushed['delivered']:,} delivered to {report.notify_url}"
        line += f", {pushed['waiting']:,} waiting" if pushed["waiting"] else ""
        line += f", {pushed['failing']:,} failing" if pushed["failing"] else ""
        line += f", {pushed['given_up']:,} given up (`dialer notify replay`)" if pushed["given_up"] else ""
        line += f"; last error: {report.notify_error}" if report.notify_error else ""
        table.add_row("results pushed", line)
    if report.waiting_for_window:
        opens = (
            f"; the first window opens {report.window_opens:%Y-%m-%d %H:%M} UTC"
            if report.window_opens
            else ""
        )
        table.add_row("waiting for their window", f"{report.waiting_for_window}{opens}")
    for result, count in sorted(report.results.items()):
        table.add_row(f"  {result}", str(count))
    table.add_row("attempts", str(sum(report.attempts.values())))
    for status, count in sorted(report.attempts.items()):
        table.add_row(f"  {status}", str(count))
    for step, answers in report.answers.items():
        for answer, count in sorted(answers.items()):
            table.add_row(f"  {step}: {answer}", str(count))
    if report.runner:
        table.add_row("run by", report.runner)
    if report.unattended_since is not None:
        since = f" since {report.unattended_since:%Y-%m-%d %H:%M} UTC" if report.unattended_since else ""
        table.add_row(
            "note",
            f"marked running, but no process has run it{since} (a run killed, or no workers):"
            f" {report.resume} carries it on",
        )
    if report.reason:
        table.add_row("note", report.reason)
    return table


@main.command()
@click.argument("name")
@click.option("--watch", is_flag=True, help="Keep refreshing until the campaign stops running.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes with --watch.")
def status(name: str, watch: bool, interval: float) -> None:
    """Show a campaign's progress and its estimated finish (`dialer campaign plan NAME` explains it)."""
    from dialer.plan import plan

    settings = _settings()
    estimated_at, finish, running = -ESTIMATE_EVERY, "", False

    def read() -> Table:
        nonlocal estimated_at, finish, running
        with db.session_scope(settings.database_url) as session:
            report = progress(session, name)
            waiting = report.status in (CampaignStatus.DRAFT, CampaignStatus.RUNNING, CampaignStatus.PAUSED)
            if waiting and time.monotonic() - estimated_at >= ESTIMATE_EVERY:  # it reads every contact
                now, estimated_at = utcnow(), time.monotonic()
                finish = _finish(plan(session, name, settings=settings, now=now).finish, now)
        running = report.status == CampaignStatus.RUNNING
        table = progress_table(report)
        if waiting:
            table.add_row("estimated finish", finish)
        return table

    if not watch:
        console.print(read())
        return
    with Live(read(), console=console, auto_refresh=False) as live:
        while running:
            time.sleep(interval)
            live.update(read(), refresh=True)


@main.command()
@click.argument("name")
@click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write a self-contained HTML report with charts to this file.",
)
def report(name: str, html_file: Path | None) -> None:
    """Summarise a campaign's results: reach, DTMF answers, outcomes, attempts, talk time, cost."""
    from dialer.report import build_report, render_html

    with db.session_scope(_settings().database_url) as session:
        summary = build_report(session, name)
    counts = summary.progress
    table = _campaign_table(counts)
    for label, value in summary.summary():
        table.add_row(label, value)

    def most_first(counted: Mapping[str, int]) -> list[tuple[str, int]]:
        return sorted(counted.items(), key=lambda item: (-item[1], item[0]))

    sections = {
        "results": most_first(counts.results),
        "attempt outcomes": most_first(counts.attempts),
        **{f"answers to {step}": most_first(answers) for step, answers in counts.answers.items()},
        "from the answer to the end of the call": summary.funnel,  # in the call's order
        "contacts by attempts made": most_first({str(m): n for m, n in summary.attempts_per_contact.items()}),
    }
    for heading, rows in sections.items():
        if rows:
            table.add_section()
            table.add_row(heading, "")
            for key, count in rows:
                table.add_row(f"  {key}", f"{count:,}")
    for heading, texts in (
        ("by route", summary.route_rows()),
        ("answer rate by caller ID", summary.caller_id_rates()),
    ):
        if len(texts) > 1:  # one has nothing to be compared with
            table.add_section()
            table.add_row(heading, "")
            for key, text in texts:
                table.add_row(f"  {key}", text)
    console.print(table)
    if html_file is not None:
        from dialer.files import write_text

        write_text(html_file, render_html(summary))
        console.print(f"wrote {html_file}")


# -- results pushed ---------------------------------------------------------------------------------


@main.group(cls=_Group)
def notify() -> None:
    """Results pushed to a campaign's [notify] URL."""


@notify.command("send")
@click.argument("name")
def notify_send(name: str) -> None:
    """Deliver the campaign's results not yet delivered, trying again as they fail, until every one
    is delivered or given up (Ctrl-C stops; what is left stays to send)."""
    from dialer import notify as outbox
    from dialer.runtime import http_client

    settings = _settings()
    with db.session_scope(settings.database_url) as session:
        campaign = get_campaign(session, name)
    only = frozenset({campaign.id or 0})
    with http_client(settings) as http:
        while True:
            sent = outbox.deliver_due(settings, http, only=only)
            with db.session_scope(settings.database_url) as session:
                standing = outbox.standing(session, campaign_id=campaign.id)
                error = outbox.last_error(session, campaign_id=campaign.id or 0)
            if sent:
                console.print(
                    ", ".join(f"{count:,} {what}" for what, count in sorted(sent.items())), markup=False
                )
            if not standing["waiting"] and not standing["failing"]:
                break
            time.sleep(settings.tick_seconds)
    line = f"{standing['delivered']:,} result(s) of {name} delivered"
    if standing["given_up"]:
        line += f"; {standing['given_up']:,} given up after three days (last error: {error})"
        line += f": `dialer notify replay {name}` sends them again"
    console.print(line, markup=False)


@notify.command("replay")
@click.argument("name")
def notify_replay(name: str) -> None:
    """Send every finished contact's result of the campaign again (new events, delivered like the first)."""
    from dialer import notify as outbox

    with db.session_scope(_settings().database_url) as session:
        campaign = get_campaign(session, name)
        if not spec_of(campaign).notify.url:
            raise click.ClickException(f"campaign {name!r} has no [notify] url to send its results to")
        count = outbox.replay(session, campaign_id=campaign.id or 0, now=utcnow())
    console.print(
        f"{count:,} result(s) of {name} to send again: a run, the workers or"
        f" `dialer notify send {name}` send them",
        markup=False,
    )


# -- servers --------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Where the receiver listens (0.0.0.0: every address).",
)
@click.option("--port", default=8000, show_default=True, type=int, help="Where the receiver listens.")
@click.option(
    "--metrics-port", type=int, help="Serve Prometheus metrics at /metrics on this port (default: none)."
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Where the metrics listen.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Receiver processes sharing the port (about one per core).",
)
def serve(host: str, port: int, metrics_port: int | None, metrics_host: str, workers: int) -> None:
    """Run the webhook receiver (providers call DIALER_PUBLIC_URL/webhooks/...)."""
    import uvicorn

    from dialer import metrics
    from dialer.receiver import create_app
    from dialer.serving import uvicorn_options

    settings = _settings()
    # uvicorn's access log would write each callback's URL, and its token with it: the receiver
    # logs each callback itself, without the token.
    logging.getLogger("dialer.receiver").setLevel(logging.INFO)
    options: dict[str, Any] = {"host": host, "port": port, "log_level": "info", "access_log": False}
    options |= uvicorn_options(settings)  # what a connection may send, and for how long
    receiver_metrics = None
    if metrics_port is not None:
        # With several processes, each would count only its own callbacks: then the metrics are
        # what the database and Redis hold, served by this parent process.
        found, receiver_metrics = metrics.registry(settings, receiver=workers == 1)
        metrics.serve(found, host=metrics_host, port=metrics_port)
    if workers > 1:
        create_app(settings)  # settings no callback could be accepted with are refused here, once
        uvicorn.run("dialer.receiver:app_from_settings", factory=True, workers=workers, **options)
        return
    uvicorn.run(create_app(settings, receiver_metrics), **options)


@main.command()
@click.option(
    "--provider",
    default="vonage",
    show_default=True,
    type=_PROVIDER,
    help="Which provider's API to simulate.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the simulator listens.")
@click.option("--port", default=9000, show_default=True, type=int, help="Where the simulator listens.")
@click.option(
    "--rate-limit", type=float, help="Calls per second before 429 (default: the provider's documented limit)."
)
@click.option(
    "--time-scale", default=0.1, show_default=True, help="Multiply every simulated delay (1 = real time)."
)
def simulate(provider: str, host: str, port: int, rate_limit: float | None, time_scale: float) -> None:
    """Run a provider simulator: its real HTTP API, fake calls, realistic callbacks."""
    import uvicorn

    from dialer.simulators import simulator_app

    app = simulator_app(provider, _settings(), rate_limit=rate_limit, time_scale=time_scale)
    # It times every request it receives: no full collection should walk the start-up objects
    # (modules, the app) in the middle of that.
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level="info")


@main.command()
def providers() -> None:
    """List the providers with their capabilities and rate limits."""
    from dialer.providers import PROVIDERS, account_limit, get_provider

    settings = _settings()
    table = Table(
        "provider",
        "TTS",
        "SSML",
        "audio",
        "DTMF",
        "machine detection",
        "status look-up",
        "calls/s",
        "max calls",
    )
    for provider in map(get_provider, settings.routes(PROVIDERS)):  # each account its own row
        can = provider.capabilities
        account = settings.provider_settings(provider.name)
        limit = account_limit(provider.name, account)
        marks = [
            "yes" if flag else "-"
            for flag in (can.tts, can.ssml, can.audio, can.dtmf, can.machine_detection, provider.can_look_up)
        ]
        table.add_row(provider.name, *marks, f"{limit:g}", str(account.max_concurrent or "-"))
    console.print(table)


@main.command()
@click.option(
    "--mode",
    type=click.Choice(["run", "workers"]),
    help="How campaigns run here: `dialer run` in one process, or Celery workers with Redis"
    " (default: workers if DIALER_REDIS_URL is set, else run).",
)
def doctor(mode: str | None) -> None:
    """Check what running campaigns needs here: the database, the public URL and each provider's
    credentials (a request that places no call); on workers also Redis, the clock, workers, beat
    and the receiver. Exit code 1 if any fails."""
    from dialer.health import Mode, checks, chosen_mode
    from dialer.runtime import http_client

    settings = _settings()
    failed = False
    chosen = cast(Mode, mode) if mode else chosen_mode(settings)
    with http_client(settings) as http:
        for check in checks(settings, http=http, mode=chosen):
            failed |= check.state == "FAIL"
            console.print(
                f"{check.state:<4}  {check.name:<10}  {check.detail}", highlight=False, markup=False
            )
    if failed:
        raise SystemExit(1)


@main.command("dev-env")
@click.option(
    "--out",
    default=".env",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The settings file to write.",
)
@click.option(
    "--keys",
    default=".dialer",
    show_default=True,
    type=click.Path(path_type=Path),
    help="The directory for the Vonage private key (a file of its own, readable by you only).",
)
def dev_env(out: Path, keys: Path) -> None:
    """Write throwaway simulator credentials to a .env file (never use them with a real provider)."""
    from dialer.settings import environment
    from dialer.simulators import dev_credentials, simulator_urls

    if out.exists():
        raise click.ClickException(f"{out} exists already: move it away first")
    credentials = dev_credentials()
    keys.mkdir(parents=True, exist_ok=True)
    key_file = keys / "vonage-private.pem"
    key_file.write_text(credentials["vonage"].pop("private_key"))
    key_file.chmod(0o600)
    lines = ["# Local simulator credentials made by `dialer dev-env`; not for real providers."]
    lines.append(f"DIALER_VONAGE__PRIVATE_KEY={key_file}")
    simulated = "http://127.0.0.1:9000"  # where `dialer simulate` listens
    values = {name: fields | simulator_urls(name, simulated) for name, fields in credentials.items()}
    lines += [f"{name}={value}" for name, value in environment(values).items()]
    out.write_text("\n".join(lines) + "\n")
    out.chmod(0o600)
    console.print(f"wrote {out} and {key_file}")


@main.command()
@click.argument("name")
@click.option(
    "--simulate",
    is_flag=True,
    help="Call the provider's simulator (throwaway credentials, on this machine) instead of the provider.",
)
@click.option(
    "--time-scale",
    default=0.1,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="With --simulate: how long simulated calls take against real ones.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the receiver listens.")
@click.option("--port", default=8000, show_default=True, type=int, help="Where the receiver listens.")
@_YES
@click.option(
    "--ignore-window",
    is_flag=True,
    help="With --simulate: call whatever the campaign's window says (as the quickstart does).",
)
def run(
    name: str, simulate: bool, time_scale: float, host: str, port: int, yes: bool, ignore_window: bool
) -> None:
    """Run one campaign in this process until it is done: calls, callbacks, retries.

    No Redis or worker is needed (the database is DIALER_DATABASE_URL, SQLite by default). The
    provider calls back DIALER_PUBLIC_URL, which must lead to HOST:PORT here. Ctrl-C (or SIGTERM)
    pauses the campaign (no call is placed after the command returns); running it again resumes it.
    """
    from dialer.runner import run_campaign

    again = ["dialer", "run", name]
    if simulate:
        again += ["--simulate", *(["--time-scale", f"{time_scale:g}"] if time_scale != 0.1 else [])]
        again += ["--ignore-window"] if ignore_window else []
    again += ["--host", host] if host != "127.0.0.1" else []
    again += ["--port", str(port)] if port != 8000 else []
    run_campaign(
        name,
        settings=_settings(),
        console=console,
        render=progress_table,
        simulate=simulate,
        time_scale=time_scale,
        host=host,
        port=port,
        confirm=lambda question: yes or click.confirm(question, default=False),
        again=shlex.join(again),
        ignore_window=ignore_window,
    )


@main.command()
@click.option(
    "--provider",
    default="vonage",
    show_default=True,
    type=_PROVIDER,
    help="Which provider's simulator to run.",
)
@click.option(
    "--dir",
    "directory",
    default="quickstart",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where the demo's database, contacts and results go.",
)
@click.option(
    "--example",
    type=click.Choice(["survey"]),
    help="Run another example: survey (a call flow: three questions with a branch, a recorded comment,"
    " an opt-out and a transfer, on Vonage).",
)
def quickstart(provider: str, directory: Path, example: str | None) -> None:
    """Run the example campaign end to end against a simulator, in this process (no Redis/PostgreSQL)."""
    from dialer.quickstart import run_quickstart

    run_quickstart(
        provider=provider, directory=directory, console=console, render=progress_table, example=example
    )
