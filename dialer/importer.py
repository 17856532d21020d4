"""Contact import: CSV in chunks, numbers to E.164, duplicates and DNC filtered, all or nothing.

Every row not taken is written to a rejects CSV with its row number (the line in the file, the
header being line 1), the value and the reason. A file that cannot be used at all raises
:class:`ImportFailed` naming the file, row and column, and nothing is written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from itertools import count
from pathlib import Path
from typing import IO, Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from sqlmodel import Session, col, select

from campaigns.phones import InvalidPhone, Normaliser
from dialer import db
from dialer.errors import ImportFailed
from dialer.models import Campaign, Contact, DncEntry, UTCDateTime
from dialer.providers import get_provider
from dialer.runtime import spec_of
from dialer.zones import GroupKey, group_ids, group_key

MAX_FIELD = 1000
"""Characters allowed in one field; longer ones are almost always a broken file."""
CHUNK_ROWS = 100_000
ZONE_COLUMN = "timezone"
_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
_DELIMITERS = ",;\t|"


_Accepted = tuple[str, str, str | None, int, GroupKey]
"""phone, variables as JSON, zone, row."""


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
    head = path.read_bytes()[:65536]
    if not head.strip():
        raise ImportFailed(f"{path}: the file is empty")
    if b"\0" in head:
        raise ImportFailed(f"{path}: this is a binary file, not a CSV")
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
    text = head.decode(encoding, errors="ignore")
    if delimiter is None:
        first_line = text.splitlines()[0] if text.splitlines() else ""
        try:
            delimiter = csv.Sniffer().sniff(text[:8192], delimiters=_DELIMITERS).delimiter
        except csv.Error:
            delimiter = (
                max(_DELIMITERS, key=first_line.count) if any(d in first_line for d in _DELIMITERS) else ","
            )
    return encoding, delimiter


def chunks(
    path: Path, encoding: str, delimiter: str, source: IO[bytes] | None = None
) -> Iterator[pd.DataFrame]:
    """The file as frames of text cells; ``source`` is the open file, for progress by bytes read."""
    try:
        with pd.read_csv(
            source or path,
            dtype=str,
            keep_default_na=False,
            encoding=encoding,
            sep=delimiter,
            chunksize=CHUNK_ROWS,
            skipinitialspace=True,
            on_bad_lines="error",
        ) as reader:
            yield from reader
    except pd.errors.EmptyDataError:
        raise ImportFailed(f"{path}: the file is empty") from None
    except pd.errors.ParserError as error:
        raise ImportFailed(f"{path}: not a readable CSV: {error}") from None
    except UnicodeDecodeError as error:
        raise ImportFailed(f"{path}: not {encoding} text (give --encoding): {error.reason}") from None


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
) -> ImportReport:
    """Read ``path`` into ``campaign``'s contacts inside the caller's transaction.

    While this thread reads, checks and normalises a chunk, a writer thread stores the one before.
    """
    if not path.is_file():
        raise ImportFailed(f"{path}: no such file")
    spec = spec_of(campaign)
    phone_column = phone_column or spec.phone_column
    region = region or spec.region
    encoding, delimiter = sniff(path, encoding, delimiter)
    report = ImportReport(file=path)
    assert campaign.id is not None
    known = set(session.exec(select(col(Contact.phone)).where(col(Contact.campaign_id) == campaign.id)).all())
    blocked = set(
        session.exec(
            select(col(DncEntry.phone)).where(
                (col(DncEntry.campaign_id) == campaign.id) | (col(DncEntry.campaign_id).is_(None))
            )
        ).all()
    )
    size = path.stat().st_size

    normalise = Normaliser(region)
    undialable = get_provider(campaign.provider).check_number

    def prepared_chunks(source: IO[bytes]) -> Generator[_Prepared]:
        first_row = 2
        for chunk in chunks(path, encoding, delimiter, source):
            if first_row == 2:
                _check_header(path, list(chunk.columns), phone_column, spec.required_columns())
            yield _prepare(chunk, path, first_row, phone_column, normalise, source.tell())
            first_row += len(chunk)

    first_row: dict[str, int] = {}
    rows_seen = 0
    with (
        path.open("rb") as source,
        closing(prepared_chunks(source)) as prepared_file,
        _contact_writer(session, campaign.id, now) as write,
    ):
        for prepared in prepared_file:
            report.rejects.extend(prepared.rejects)
            accepted = []
            for row, raw, phone, zone, variables in zip(
                count(prepared.first_row), prepared.raw, prepared.phones, prepared.zones, prepared.variables
            ):
                if phone is None:
                    continue
                if phone in first_row:
                    report.rejects.append(Reject(row, raw, f"duplicate of row {first_row[phone]}"))
                    continue
                first_row[phone] = row
                if phone in known:
                    report.rejects.append(Reject(row, raw, "already in the campaign"))
                elif phone in blocked:
                    report.rejects.append(Reject(row, raw, "on the do-not-call list"))
                elif undialable is not None and (reason := undialable(phone)):
                    report.rejects.append(Reject(row, raw, reason))
                else:
                    accepted.append((phone, variables, zone, row, group_key(phone, zone)))
            rows_seen += len(prepared.raw)
            write(accepted)
            report.accepted += len(accepted)
            if progress is not None:
                progress(prepared.read_to, size)
    if rows_seen == 0:
        raise ImportFailed(f"{path}: the file has a header but no rows")
    report.rejects.sort(key=lambda reject: reject.row)
    return report


@dataclass(frozen=True)
class _Prepared:
    """One chunk, checked and normalised; ``phones`` holds None where ``rejects`` says why."""

    first_row: int
    raw: list[str]
    phones: list[str | None]
    zones: list[str | None]
    variables: list[str]
    rejects: list[Reject]
    read_to: int


def _prepare(
    chunk: pd.DataFrame, path: Path, first_row: int, phone_column: str, normalise: Normaliser, read_to: int
) -> _Prepared:
    """Everything about a chunk that needs no database: lengths, numbers, zones, variables as JSON."""
    _check_lengths(path, chunk, first_row=first_row)
    raw = chunk[phone_column].tolist()
    zones = chunk[ZONE_COLUMN].tolist() if ZONE_COLUMN in chunk.columns else [""] * len(raw)
    phones: list[str | None] = []
    rejects = []
    for row, value, zone in zip(count(first_row), raw, zones):
        try:
            phone: str | None = normalise(value)
        except InvalidPhone as error:
            phone = None
            rejects.append(Reject(row, value, f"invalid phone number: {error}"))
        else:
            if zone and not _is_zone(zone):
                phone = None
                rejects.append(Reject(row, zone, f"unknown time zone in column {ZONE_COLUMN!r}"))
        phones.append(phone)
    variables = _as_json_lines(chunk.drop(columns=[phone_column]))
    return _Prepared(first_row, raw, phones, [z or None for z in zones], variables, rejects, read_to)


def _check_lengths(path: Path, chunk: pd.DataFrame, *, first_row: int) -> None:
    lengths = chunk.apply(lambda column: column.str.len())
    too_long = lengths > MAX_FIELD
    if too_long.to_numpy().any():
        position, column = next(
            (position, column)
            for position, row in enumerate(too_long.itertuples(index=False))
            for column, over in zip(chunk.columns, row, strict=True)
            if over
        )
        raise ImportFailed(
            f"{path}: row {first_row + position}, column {column!r}: field is "
            f"{lengths[column].iloc[position]} characters long (at most {MAX_FIELD})"
        )


def _as_json_lines(table: pd.DataFrame) -> list[str]:
    """Each row's cells as one JSON object, written by pandas in one go."""
    if table.columns.empty:
        return ["{}"] * len(table)
    text: str = table.to_json(orient="records", lines=True, force_ascii=False)
    return text.split("\n")[: len(table)]


_COLUMNS = (
    "campaign_id",
    "phone",
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
    Each batch is written by one background thread while the caller reads the next (the database
    drivers let go of the GIL while they work); a batch waits for the one before it, and leaving
    the block waits for the last, so an error surfaces here and the session is idle afterwards.
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
            (campaign_id, phone, variables, zone, group_id(key), row, "pending", 0, when, when)
            for phone, variables, zone, row, key in accepted
        ]
        if copy_rows:
            with driver.cursor() as cursor, cursor.copy(f"COPY contact ({names}) FROM STDIN") as copy:
                for values in rows:
                    copy.write_row(values)
        else:
            driver.executemany(
                f"INSERT INTO contact ({names}) VALUES ({', '.join('?' * len(_COLUMNS))})", rows
            )

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
    writer.writerow(["row", "value", "reason"])
    writer.writerows((reject.row, reject.value, reject.reason) for reject in report.rejects)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    report.rejects_file = path
