"""Contact import: CSV in chunks, numbers to E.164, duplicates and DNC filtered.

Every row not taken is written to a rejects CSV with its row number as a spreadsheet shows it
(the header is row 1, blank rows count), the value and the reason: a bad number, a repeat, a
number on the do-not-call list, a field too long, a row with more fields than the header. The
rest is imported. A file that cannot be used at all (no header, no phone column, not text) raises
:class:`ImportFailed` naming the file, row and column, and nothing is written.

Header names are matched forgivingly: ``Phone``, `` phone `` and ``PHONE`` are the phone column,
and ``First Name`` serves the placeholder ``{first_name}`` (letters lower-cased, every run of other
characters an underscore); ``--map "Header=name"`` renames a column outright.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import IO, Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns.phones import InvalidPhone, Normaliser
from campaigns.spec import CampaignSpec
from dialer import db
from dialer.errors import ImportFailed
from dialer.files import not_a_file, write_text
from dialer.models import Campaign, Contact, DncEntry, UTCDateTime
from dialer.providers import get_provider
from dialer.providers.base import Provider
from dialer.runtime import spec_of
from dialer.zones import GroupKey, group_ids, group_key

MAX_FIELD = 1000
"""Characters allowed in one field; a row with a longer one is rejected."""
MAX_HEADER = 64 * 1024
"""Bytes the header row may take: a longer first line is not a contact file's header."""
MAX_COLUMNS = 500
CHUNK_ROWS = 100_000
ZONE_COLUMN = "timezone"
_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
_DELIMITERS = ",;\t|"
_BAD_LINE = re.compile(r"Skipping line (\d+): expected (\d+) fields, saw (\d+)")


_Accepted = tuple[str, str, str, str | None, int, GroupKey]
"""phone, extension, variables as JSON, zone, row, zone group."""


class Reject(NamedTuple):
    """A row not taken (a tuple: a million of them stay small and cross processes quickly)."""

    row: int
    value: str
    reason: str


@dataclass
class ImportReport:
    file: Path
    accepted: int = 0
    rejects: list[Reject] = field(default_factory=list)
    rejects_file: Path | None = None


def sniff(path: Path, encoding: str | None, delimiter: str | None) -> tuple[str, str]:
    """The file's encoding and delimiter: given, or found from its start."""
    with path.open("rb") as source:
        head = source.read(max(65536, MAX_HEADER + 4))
    if not head.strip():
        raise ImportFailed(f"{path}: the file is empty")
    if encoding is None and head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        encoding = "utf-16"
    wide = encoding is not None and encoding.lower().replace("-", "").startswith(("utf16", "utf32"))
    if b"\0" in head and not wide:
        raise ImportFailed(f"{path}: this is a binary file, not a CSV (give --encoding if it is UTF-16)")
    if encoding is None:
        for candidate in _ENCODINGS:
            try:
                head.decode(candidate)
            except UnicodeDecodeError as error:
                # A multi-byte character cut at the sample's end is not a reason to give up.
                if error.start < len(head) - 4:
                    continue
            encoding = candidate
            break
    assert encoding is not None
    try:
        text = head.decode(encoding, errors="ignore")
    except LookupError:
        raise ImportFailed(f"{path}: unknown encoding {encoding!r}") from None
    header, newline, _ = text.partition("\n")
    if (not newline and len(head) > MAX_HEADER) or len(header.encode(encoding, errors="ignore")) > MAX_HEADER:
        raise ImportFailed(
            f"{path}: row 1: the header is longer than {MAX_HEADER // 1024} KB: not a contact file"
            " (or its lines do not end with a newline)"
        )
    if delimiter is None:
        first_line = text.splitlines()[0] if text.splitlines() else ""
        try:
            delimiter = csv.Sniffer().sniff(text[:8192], delimiters=_DELIMITERS).delimiter
        except csv.Error:
            delimiter = (
                max(_DELIMITERS, key=first_line.count) if any(d in first_line for d in _DELIMITERS) else ","
            )
    if header.count(delimiter) + 1 > MAX_COLUMNS:
        raise ImportFailed(f"{path}: row 1: {header.count(delimiter) + 1} columns (at most {MAX_COLUMNS})")
    return encoding, delimiter


@dataclass(frozen=True)
class Rows:
    """One chunk of the file: its rows (blank ones left out) and their numbers as a spreadsheet
    shows them, and the rows refused before they could be read (more fields than the header)."""

    frame: pd.DataFrame
    numbers: list[int]
    refused: list[Reject]


def rows(path: Path, encoding: str, delimiter: str, source: IO[bytes] | None = None) -> Iterator[Rows]:
    """The file in chunks of text cells; ``source`` is the open file, for progress by bytes read.

    Column names come stripped of surrounding spaces, cells too (``skipinitialspace`` and trailing).
    """
    try:
        with pd.read_csv(
            source or path,
            dtype=str,
            keep_default_na=False,
            encoding=encoding,
            sep=delimiter,
            chunksize=CHUNK_ROWS,
            skipinitialspace=True,
            skip_blank_lines=False,  # blank rows are counted, as a spreadsheet counts them
            on_bad_lines="warn",
        ) as reader:
            following = 2  # the header is row 1
            bad: set[int] = set()
            while True:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", pd.errors.ParserWarning)
                    frame = next(reader, None)
                refused = []
                for warning in caught:
                    for match in _BAD_LINE.finditer(str(warning.message)):
                        row, expected, saw = (int(group) for group in match.groups())
                        bad.add(row)
                        reason = f"{saw} fields where the header has {expected} (a delimiter outside quotes?)"
                        refused.append(Reject(row, "", reason))
                if frame is None:
                    if refused:
                        yield Rows(pd.DataFrame(columns=[]), [], refused)
                    return
                numbers = []
                for _ in range(len(frame)):
                    while following in bad:
                        following += 1
                    numbers.append(following)
                    following += 1
                frame.columns = [str(name).strip() for name in frame.columns]
                blank = (frame.apply(lambda column: column.str.strip()) == "").all(axis=1).to_numpy()
                if blank.any():
                    frame = frame[~blank]
                    numbers = [number for number, empty in zip(numbers, blank, strict=True) if not empty]
                yield Rows(frame, numbers, refused)
    except pd.errors.EmptyDataError:
        raise ImportFailed(f"{path}: the file is empty") from None
    except pd.errors.ParserError as error:
        raise ImportFailed(f"{path}: not a readable CSV: {error}") from None
    except UnicodeDecodeError as error:
        line = _undecodable_line(path, encoding)
        where = f"line {line}: " if line else ""
        raise ImportFailed(
            f"{path}: {where}not {encoding} text ({error.reason}): give --encoding (cp1252? latin-1?)"
        ) from None


def _undecodable_line(path: Path, encoding: str) -> int | None:
    """The first line of the file that is not ``encoding`` text (1 is the header)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    with path.open("rb") as source:
        for number, line in enumerate(source, start=1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError:
                return number
    return None


def _slug(name: str) -> str:
    """A header as a placeholder name: lower case, every run of other characters one underscore."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def header_names(
    path: Path, columns: list[str], *, wanted: list[str], mapping: dict[str, str] | None = None
) -> dict[str, str]:
    """How to rename the file's columns: ``mapping`` first (header -> name), then each ``wanted``
    name the file lacks to the one column whose :func:`_slug` is the same."""
    renames: dict[str, str] = {}
    for header, name in (mapping or {}).items():
        found = [column for column in columns if column.strip() == header.strip()]
        if not found:
            raise ImportFailed(
                f"{path}: row 1: --map names {header!r}, which is not a column ({', '.join(columns)})"
            )
        renames[found[0]] = name
    names = [renames.get(column, column) for column in columns]
    for name in wanted:
        if name in names:
            continue
        matches = [
            column for column, current in zip(columns, names, strict=True) if _slug(current) == _slug(name)
        ]
        if len(matches) > 1:
            raise ImportFailed(
                f"{path}: row 1: columns {', '.join(map(repr, matches))} could each be {name!r}: use --map"
            )
        if matches:
            renames[matches[0]] = name
            names = [renames.get(column, column) for column in columns]
    return renames


Progress = Callable[[int, int], None]
"""Told ``(bytes read, file size)`` after each chunk."""


def import_contacts(
    session: Session,
    *,
    campaign: Campaign,
    path: Path,
    now: datetime,
    phone_column: str | None = None,
    region: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    progress: Progress | None = None,
    mapping: dict[str, str] | None = None,
) -> ImportReport:
    """Read ``path`` into ``campaign``'s contacts inside the caller's transaction (roll it back for
    a dry run: the report says what would have been imported).

    While this thread reads, checks and normalises a chunk, a writer thread stores the one before.
    """
    if (why := not_a_file(path)) is not None:
        raise ImportFailed(f"{path}: {why}")
    spec = spec_of(campaign)
    phone_column = phone_column or spec.phone_column
    region = region or spec.region
    encoding, delimiter = sniff(path, encoding, delimiter)
    report = ImportReport(file=path)
    assert campaign.id is not None
    lines = sa.select(col(Contact.phone), col(Contact.extension)).where(
        col(Contact.campaign_id) == campaign.id
    )
    known = {_line(phone, extension) for phone, extension in session.execute(lines)}
    blocked = set(
        session.exec(
            select(col(DncEntry.phone)).where(
                (col(DncEntry.campaign_id) == campaign.id) | (col(DncEntry.campaign_id).is_(None))
            )
        ).all()
    )
    size = path.stat().st_size

    normalise = Normaliser(region)
    provider = get_provider(campaign.provider)
    undialable = provider.check_number

    renames: dict[str, str] | None = None
    checks = column_checks(spec, provider, normalise)
    wanted = [phone_column, ZONE_COLUMN, *sorted(spec.required_columns() | set(checks))]

    def prepared_chunks(source: IO[bytes]) -> Generator[_Prepared]:
        nonlocal renames
        for part in rows(path, encoding, delimiter, source):
            if renames is None and len(part.frame.columns):
                renames = header_names(path, list(part.frame.columns), wanted=wanted, mapping=mapping)
                _check_header(
                    path,
                    [renames.get(c, c) for c in part.frame.columns],
                    phone_column,
                    spec.required_columns(),
                )
            frame = part.frame.rename(columns=renames or {})
            yield _prepare(frame, part.numbers, part.refused, phone_column, normalise, source.tell(), checks)

    first_row: dict[str, int] = {}
    """The row of each number (with its extension) seen so far."""
    rows_seen = 0
    with (
        path.open("rb") as source,
        closing(prepared_chunks(source)) as prepared_file,
        _contact_writer(session, campaign.id, now) as write,
    ):
        for prepared in prepared_file:
            report.rejects.extend(prepared.rejects)
            accepted = []
            for row, raw, phone, extension, zone, group, variables in zip(
                prepared.numbers,
                prepared.raw,
                prepared.phones,
                prepared.extensions,
                prepared.zones,
                prepared.groups,
                prepared.variables,
                strict=True,
            ):
                if phone is None or group is None:
                    continue
                if extension and not provider.capabilities.extensions:
                    why = f"extension {extension}: {provider.title} cannot dial one (Vonage can)"
                    report.rejects.append(Reject(row, raw, why))
                    continue
                line = _line(phone, extension)
                if line in first_row:
                    report.rejects.append(Reject(row, raw, f"duplicate of row {first_row[line]}"))
                    continue
                first_row[line] = row
                if line in known:
                    report.rejects.append(Reject(row, raw, "already in the campaign"))
                elif phone in blocked:
                    report.rejects.append(Reject(row, raw, "on the do-not-call list"))
                elif undialable is not None and (reason := undialable(phone)):
                    report.rejects.append(Reject(row, raw, reason))
                else:
                    accepted.append((phone, extension, variables, zone, row, group))
            rows_seen += len(prepared.raw)
            write(accepted)
            report.accepted += len(accepted)
            if progress is not None:
                progress(prepared.read_to, size)
    if rows_seen == 0 and not report.rejects:
        raise ImportFailed(f"{path}: the file has a header but no rows")
    report.rejects = _with_values(path, encoding, delimiter, report.rejects)
    report.rejects.sort(key=lambda reject: reject.row)
    return report


def _with_values(path: Path, encoding: str, delimiter: str, rejects: list[Reject]) -> list[Reject]:
    """The rows refused before they could be read, with their text (read again: they are rare)."""
    missing = {reject.row for reject in rejects if not reject.value}
    if not missing:
        return rejects
    texts: dict[int, str] = {}
    with path.open(encoding=encoding, newline="", errors="replace") as source:
        for number, fields in enumerate(csv.reader(source, delimiter=delimiter), start=1):
            if number in missing:
                texts[number] = delimiter.join(fields)[:200]
                if len(texts) == len(missing):
                    break
    return [
        reject._replace(value=texts.get(reject.row, "")) if not reject.value else reject for reject in rejects
    ]


@dataclass(frozen=True)
class _Prepared:
    """One chunk, checked and normalised; ``phones`` holds None where ``rejects`` says why."""

    numbers: list[int]
    raw: list[str]
    phones: list[str | None]
    extensions: list[str]
    zones: list[str | None]
    groups: list[GroupKey | None]
    variables: list[str]
    rejects: list[Reject]
    read_to: int


Check = Callable[[str], tuple[str, str | None]]
"""A column's value as kept (normalised), and why the row cannot be imported (None: it can)."""


def column_checks(spec: CampaignSpec, provider: Provider, normalise: Normaliser) -> dict[str, Check]:
    """The checks of the columns a flow takes something from besides its texts: each contact's
    language and voice (what the provider accepts), and the numbers its transfers connect to."""
    flow = spec.call_flow
    checks: dict[str, Check] = {}
    if flow.language_column and provider.languages is not None:
        languages = provider.languages

        def language(value: str) -> tuple[str, str | None]:
            return value, None if not value or value in languages else f"{provider.title} does not speak it"

        checks[flow.language_column] = language
    if flow.voice_column and (voice_problem := provider.voice_problem) is not None:
        checks[flow.voice_column] = lambda value: (value, voice_problem(value) if value else None)

    def number(value: str) -> tuple[str, str | None]:
        try:
            return normalise(value), None
        except InvalidPhone as error:
            return value, f"not a number to transfer to: {error}"

    for step in flow.steps.values():
        if step.to_column:
            checks[step.to_column] = number
    return checks


def _prepare(
    chunk: pd.DataFrame,
    numbers: list[int],
    refused: list[Reject],
    phone_column: str,
    normalise: Normaliser,
    read_to: int,
    checks: Mapping[str, Check] | None = None,
) -> _Prepared:
    """Everything about a chunk that needs no database: lengths, numbers, zones, the columns
    ``checks`` name (kept normalised), variables as JSON."""
    checked = _checked(chunk, checks or {})
    raw = chunk[phone_column].tolist() if len(chunk.columns) else []
    zones = [zone.strip() for zone in chunk[ZONE_COLUMN]] if ZONE_COLUMN in chunk.columns else [""] * len(raw)
    too_long = _too_long(chunk)
    phones: list[str | None] = []
    extensions: list[str] = []
    groups: list[GroupKey | None] = []
    rejects = list(refused)
    for index, (row, value, zone) in enumerate(zip(numbers, raw, zones, strict=True)):
        phone: str | None = None
        extension = ""
        group: GroupKey | None = None
        if index in too_long:
            rejects.append(Reject(row, value, too_long[index]))
        elif index in checked:
            rejects.append(Reject(row, *checked[index]))
        else:
            try:
                e164, number_zones, extension = normalise.number(value)
            except InvalidPhone as error:
                rejects.append(Reject(row, value, f"invalid phone number: {error}"))
            else:
                if zone and not _is_zone(zone):
                    rejects.append(Reject(row, zone, f"unknown time zone in column {ZONE_COLUMN!r}"))
                else:
                    phone, group = e164, group_key(e164, zone, number_zones)
        phones.append(phone)
        extensions.append(extension)
        groups.append(group)
    frame = chunk.drop(columns=[phone_column]) if len(chunk.columns) else chunk
    if ZONE_COLUMN in frame.columns:
        frame = frame.assign(**{ZONE_COLUMN: zones})
    variables = _as_json_lines(frame)
    return _Prepared(
        numbers, raw, phones, extensions, [z or None for z in zones], groups, variables, rejects, read_to
    )


def _checked(chunk: pd.DataFrame, checks: Mapping[str, Check]) -> dict[int, tuple[str, str]]:
    """Apply ``checks`` to their columns (their values normalised in place); the rows (by position)
    that fail one, with the value and why."""
    failed: dict[int, tuple[str, str]] = {}
    for column, check in checks.items():
        if column not in chunk.columns:
            continue
        kept = []
        for index, value in enumerate(chunk[column].tolist()):
            normal, problem = check(value.strip())
            kept.append(normal)
            if problem is not None and index not in failed:
                failed[index] = (value, f"column {column!r}: {problem}")
        chunk[column] = kept
    return failed


def _line(phone: str, extension: str) -> str:
    """A number with its extension, in RFC 3966's way (``+16502530000;ext=123``): one key per contact."""
    return f"{phone};ext={extension}" if extension else phone


def _too_long(chunk: pd.DataFrame) -> dict[int, str]:
    """The rows (by position) with a field longer than :data:`MAX_FIELD`, and why."""
    if not len(chunk.columns):
        return {}
    lengths = chunk.apply(lambda column: column.str.len())
    over = (lengths > MAX_FIELD).to_numpy()
    reasons = {}
    for position in over.any(axis=1).nonzero()[0].tolist():
        column = chunk.columns[over[position].nonzero()[0][0]]
        reasons[position] = (
            f"column {column!r} is {lengths[column].iloc[position]:,} characters long (at most {MAX_FIELD:,})"
        )
    return reasons


def _as_json_lines(table: pd.DataFrame) -> list[str]:
    """Each row's cells as one JSON object, written by pandas in one go."""
    if table.columns.empty:
        return ["{}"] * len(table)
    text: str = table.to_json(orient="records", lines=True, force_ascii=False)
    return text.split("\n")[: len(table)]


_COLUMNS = (
    "campaign_id",
    "phone",
    "extension",
    "variables",
    "zone",
    "zone_group_id",
    "row_number",
    "state",
    "attempts",
    "next_attempt_at",
    "updated_at",
)


@contextmanager
def _contact_writer(
    session: Session, campaign_id: int, now: datetime
) -> Iterator[Callable[[list[_Accepted]], None]]:
    """Bulk insert into ``contact`` on the session's own connection (so in its transaction).

    PostgreSQL gets ``COPY``; SQLite a plain ``executemany``. Both skip the ORM's per-row work: the
    one timestamp is converted once, as SQLAlchemy would store it, and the variables arrive as JSON.

    On PostgreSQL each batch is written by one background thread while the caller reads the next
    (psycopg lets go of the GIL while it sends); a batch waits for the one before it, and leaving
    the block waits for the last, so an error surfaces here and the session is idle afterwards.
    SQLite's ``executemany`` lets go of the GIL for every row and must win it back from the reading
    thread each time, which made the two threads slower than one: it writes in the caller's thread.
    """
    connection = session.connection()
    stamp = UTCDateTime().dialect_impl(connection.dialect).bind_processor(connection.dialect)
    when = stamp(now) if stamp is not None else now
    driver: Any = connection.connection.driver_connection
    names = ", ".join(_COLUMNS)
    copy_rows = db.is_postgresql(session)

    group_id = group_ids(driver, campaign_id=campaign_id, paramstyle="format" if copy_rows else "qmark")

    def write(accepted: list[_Accepted]) -> None:
        rows = [
            (campaign_id, phone, extension, variables, zone, group_id(key), row, "pending", 0, when, when)
            for phone, extension, variables, zone, row, key in accepted
        ]
        if copy_rows:
            with driver.cursor() as cursor, cursor.copy(f"COPY contact ({names}) FROM STDIN") as copy:
                for values in rows:
                    copy.write_row(values)
        else:
            driver.executemany(
                f"INSERT INTO contact ({names}) VALUES ({', '.join('?' * len(_COLUMNS))})", rows
            )

    if not copy_rows:
        yield write
        return
    previous: list[Future[None]] = []

    def hand_over(accepted: list[_Accepted]) -> None:
        if previous:
            previous.pop().result()
        previous.append(writer.submit(write, accepted))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="contact-writer") as writer:
        yield hand_over
        if previous:
            previous.pop().result()


def _check_header(path: Path, columns: list[str], phone_column: str, required: set[str]) -> None:
    if phone_column not in columns:
        raise ImportFailed(
            f"{path}: row 1: no {phone_column!r} column (columns: {', '.join(columns)}; give --phone-column)"
        )
    missing = sorted(required - set(columns))
    if missing:
        raise ImportFailed(
            f"{path}: row 1: the message needs column(s) {', '.join(missing)}, which the file lacks"
        )


@cache
def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def write_rejects(report: ImportReport, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row (as a spreadsheet numbers it: the header is row 1)", "value", "reason"])
    writer.writerows((reject.row, reject.value, reject.reason) for reject in report.rejects)
    write_text(path, buffer.getvalue())
    report.rejects_file = path
