"""Contact import: CSV in chunks, numbers to E.164, duplicates and DNC filtered.

Every row not taken is written to a rejects CSV with its row number as a spreadsheet shows it
(the header is row 1, blank rows count), the value and the reason: a bad number, a repeat, a
number on the do-not-call list, a field too long, a row with more fields than the header, an
empty cell a ``{placeholder}`` would speak (unless the campaign's ``[defaults]`` fills it). The
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
import json
import multiprocessing
import re
import signal
import traceback
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import IO, Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlmodel import Session, col

from campaigns.phones import InvalidPhone, Normaliser
from campaigns.spec import CampaignSpec
from dialer import db
from dialer.arrowtext import LARGE, joined, literal
from dialer.entry import READ_ASIDE
from dialer.errors import DialerError, ImportFailed, WriteFailed
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
FIRST_CHUNK_ROWS = 10_000
ZONE_COLUMN = "timezone"
_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
_DELIMITERS = ",;\t|"
_BAD_LINE = re.compile(r"Skipping line (\d+): expected (\d+) fields, saw (\d+)")


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
    rejects_replaced: bool = False
    """Whether the rejects file took the place of a file that was at its path."""


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


def rows(
    path: Path,
    encoding: str,
    delimiter: str,
    source: IO[bytes] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Generator[Rows, None, None]:
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
            chunksize=chunk_rows,
            skipinitialspace=True,
            skip_blank_lines=False,  # blank rows are counted, as a spreadsheet counts them
            on_bad_lines="warn",
        ) as reader:
            following = 2  # the header is row 1
            bad: set[int] = set()
            first = True
            while True:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", pd.errors.ParserWarning)
                    # A short first chunk: whoever stores the rows starts on them sooner.
                    frame = (
                        reader.get_chunk(min(chunk_rows, FIRST_CHUNK_ROWS)) if first else next(reader, None)
                    )
                    first = False
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
                if not isinstance(frame.index, pd.RangeIndex):
                    # pandas took the extra fields of the first row for an index: every row is shifted
                    raise ImportFailed(
                        f"{path}: row 2: more fields than the header's {len(frame.columns)}, so every"
                        " row would be read shifted: fix that row (a delimiter outside quotes?) or the header"
                    )
                if max(bad, default=0) < following:
                    numbers = list(range(following, following + len(frame)))
                    following += len(frame)
                else:
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
    rejects: Path | None = None,
    replace_rejects: bool = True,
) -> ImportReport:
    """Read ``path`` into ``campaign``'s contacts inside the caller's transaction (roll it back for
    a dry run: the report says what would have been imported).

    The rows not taken are listed at ``rejects`` (None: nowhere) before this returns, so before
    the caller commits: a list that cannot be written raises, and the rollback keeps nothing, rather
    than rows imported with their rejects lost. ``replace_rejects``: write over a file there (one
    the operator named); else beside it, never over it (see :func:`write_rejects`).

    A big file is read, checked, normalised and admitted by a process of its own (see
    :func:`_read_aside`) while this one stores each chunk it hands over.
    """
    if (why := not_a_file(path)) is not None:
        raise ImportFailed(f"{path}: {why}")
    if rejects is not None and replace_rejects and _same_file(rejects, path):
        raise ImportFailed(f"{path}: --rejects names the file being imported: give another name")
    spec = spec_of(campaign)
    phone_column = phone_column or spec.phone_column
    encoding, delimiter = sniff(path, encoding, delimiter)
    assert campaign.id is not None
    lines = sa.select(col(Contact.phone), col(Contact.extension)).where(
        col(Contact.campaign_id) == campaign.id
    )
    blocked = sa.select(col(DncEntry.phone)).where(
        (col(DncEntry.campaign_id) == campaign.id) | (col(DncEntry.campaign_id).is_(None))
    )
    # The route in use, then the others the campaign may move to: a contact must suit each.
    routes = (campaign.provider, *(route for route in spec.routes if route != campaign.provider))
    file = _File(
        path,
        encoding,
        delimiter,
        phone_column,
        mapping,
        spec,
        routes,
        region or spec.region,
        known=frozenset(_line(phone, extension) for phone, extension in session.execute(lines)),
        blocked=frozenset(session.scalars(blocked)),
        chunk_rows=CHUNK_ROWS,
    )
    report = ImportReport(file=path)
    size = path.stat().st_size
    with _read_aside(file, size) as parts, _contact_writer(session, campaign.id, now) as write:
        for part in parts:
            if isinstance(part, _Finished):
                if part.rows == 0 and not part.rejects:
                    raise ImportFailed(f"{path}: the file has a header but no rows")
                report.rejects = sorted(part.rejects, key=lambda reject: reject.row)
                break
            try:
                write(part)
            except session.connection().dialect.loaded_dbapi.IntegrityError:
                # Another import into the campaign stored some of these numbers after this one
                # looked: this one's transaction is rolled back whole.
                raise ImportFailed(
                    f"{path}: another import into campaign {campaign.name!r} stored some of these numbers"
                    " while this one ran; nothing of this one was kept: run it again (it skips those)"
                ) from None
            report.accepted += len(part.rows)
            if progress is not None:
                progress(part.read_to, size)
    if rejects is not None and report.rejects:
        try:
            write_rejects(report, rejects, replace=replace_rejects)
        except WriteFailed as error:
            raise ImportFailed(
                f"{error}; nothing was imported (its rejected rows would go unlisted):"
                " give --rejects a file that can be written"
            ) from None
    return report


@dataclass(frozen=True)
class _File:
    """A file to read and the campaign it is for: plain data, which crosses to the reading process."""

    path: Path
    encoding: str
    delimiter: str
    phone_column: str
    mapping: dict[str, str] | None
    spec: CampaignSpec
    routes: tuple[str, ...]
    region: str | None
    known: frozenset[str]
    """The campaign's contacts, as :func:`_line` writes them."""
    blocked: frozenset[str]
    """The numbers on the do-not-call list."""
    chunk_rows: int = CHUNK_ROWS

    def source(self) -> _Source:
        """The file with the checks and normalising of its rows."""
        normalise = Normaliser(self.region)
        providers = tuple(map(get_provider, self.routes))
        checks = column_checks(self.spec, providers, normalise)
        required = self.spec.required_columns()
        return _Source(
            path=self.path,
            encoding=self.encoding,
            delimiter=self.delimiter,
            phone_column=self.phone_column,
            wanted=[self.phone_column, ZONE_COLUMN, *sorted(required | set(checks))],
            required=required,
            mapping=self.mapping,
            checks=checks,
            normalise=normalise,
            admission=_Admission(providers, self.known, self.blocked),
        )


@dataclass(frozen=True)
class _Source:
    """A file to read, and how its rows are checked and normalised."""

    path: Path
    encoding: str
    delimiter: str
    phone_column: str
    wanted: list[str]
    """Column names looked for among the headers, whatever their case and spaces."""
    required: set[str]
    mapping: dict[str, str] | None
    checks: Mapping[str, ColumnCheck]
    normalise: Normaliser
    admission: _Admission


@dataclass(frozen=True)
class _Chunk:
    """A chunk's rows to store, column by column (lists cross a pipe quickly; the variables, as
    JSON objects, cross as Arrow's buffers); each row's zone group by its position in
    ``group_keys``; and how far the file is read."""

    rows: list[int]
    phones: list[str]
    extensions: list[str]
    zones: list[str | None]
    groups: list[int]
    group_keys: list[GroupKey]
    variables: pa.Array
    read_to: int


@dataclass(frozen=True)
class _Finished:
    """The end of the file: the rows refused while reading it, and how many rows it has."""

    rejects: list[Reject]
    rows: int


@dataclass(frozen=True)
class _Failed:
    """Why reading stopped, for the importing process to raise."""

    error: BaseException


def _reading(file: _File) -> Generator[_Chunk | _Finished, None, None]:
    """The file in chunks of the rows to store (see :func:`_normalised`); then every row refused on
    the way, with its reason."""
    source = file.source()
    renames: dict[str, str] | None = None
    rejects: list[Reject] = []
    rows_read = 0
    with (
        source.path.open("rb") as stream,
        closing(rows(source.path, source.encoding, source.delimiter, stream, file.chunk_rows)) as chunks,
    ):
        for part in chunks:
            if renames is None and len(part.frame.columns):
                renames = header_names(
                    source.path, list(part.frame.columns), wanted=source.wanted, mapping=source.mapping
                )
                columns = [renames.get(column, column) for column in part.frame.columns]
                _check_header(source.path, columns, source.phone_column, source.required)
            frame = part.frame.rename(columns=renames or {})
            rejects.extend(part.refused)
            yield _normalised(frame, part.numbers, source, rejects, read_to=stream.tell())
            rows_read += len(frame)
    yield _Finished(_with_values(source.path, source.encoding, source.delimiter, rejects), rows_read)


def _normalised(
    frame: pd.DataFrame, row_numbers: list[int], source: _Source, rejects: list[Reject], *, read_to: int
) -> _Chunk:
    """The rows of a chunk to store: no field too long, the checked columns passed (kept
    normalised), the number and zone good, and admitted (see :class:`_Admission`); with their zone
    groups and variables. The other rows go to ``rejects``."""
    if not len(frame.columns) or not len(frame):
        return _Chunk([], [], [], [], [], [], pa.array([], LARGE), read_to)
    refused, checked = _checked(frame, source.checks)
    frame = frame.assign(**{column: pd.arrays.ArrowStringArray(values) for column, values in checked.items()})
    for position, why in _too_long(frame).items():
        refused[position] = (frame[source.phone_column].iat[position], why)
    raw = frame[source.phone_column].tolist()
    own_zones = (
        [zone.strip() for zone in frame[ZONE_COLUMN]] if ZONE_COLUMN in frame.columns else [""] * len(raw)
    )
    found = source.normalise.numbers(raw)
    unknown = {zone for zone in set(own_zones) if zone and not _is_zone(zone)}
    good: list[int] = []
    for position, (row, value, e164, zone) in enumerate(
        zip(row_numbers, raw, found.e164, own_zones, strict=True)
    ):
        if position in refused:
            rejects.append(Reject(row, *refused[position]))
        elif e164 is None:
            rejects.append(Reject(row, value, f"invalid phone number: {found.refused[position]}"))
        elif zone in unknown:
            rejects.append(Reject(row, zone, f"unknown time zone in column {ZONE_COLUMN!r}"))
        else:
            good.append(position)
    admitted = source.admission.taken(
        *_at(good, row_numbers, raw, found.e164, found.extensions), rejects=rejects
    )
    taken = [good[position] for position in admitted]
    rows, phones, extensions, contact_zones, phone_zones = _at(
        taken, row_numbers, found.e164, found.extensions, own_zones, found.zones
    )
    # A group for each own zone, or else each number's zones: the group key, worked out once.
    group_index: dict[tuple[str, str], int] = {}
    groups = [
        group_index.setdefault(key, len(group_index)) for key in zip(contact_zones, phone_zones, strict=True)
    ]
    variables = frame.drop(columns=[source.phone_column])
    if ZONE_COLUMN in variables.columns:
        variables = variables.assign(**{ZONE_COLUMN: own_zones})
    return _Chunk(
        rows,
        phones,
        extensions,
        [zone or None for zone in contact_zones],
        groups,
        [group_key(own, zones) for own, zones in group_index],
        _json_objects(variables, taken),
        read_to,
    )


def _at(positions: list[int], *columns: list[Any]) -> list[list[Any]]:
    """Each column's values at ``positions``."""
    return [[column[position] for position in positions] for column in columns]


@dataclass
class _Admission:
    """Which of a file's good numbers become contacts: each the first of its number (with its
    extension) in the file, not in the campaign already, not on the do-not-call list, and one
    every route of the campaign can dial; the rest are rejected, saying why."""

    providers: tuple[Provider, ...]
    """The campaign's routes, the one in use first."""
    known: frozenset[str]
    """The campaign's contacts, as :func:`_line` writes them."""
    blocked: frozenset[str]
    """The numbers on the do-not-call list."""
    first_row: dict[str, int] = field(default_factory=dict)
    """The row of each number (with its extension) seen so far."""

    def taken(
        self,
        rows: list[int],
        raws: list[str],
        phones: list[str],
        extensions: list[str],
        *,
        rejects: list[Reject],
    ) -> list[int]:
        """The positions of the rows to store, given as columns (row numbers, values as written,
        E.164 numbers, extensions); the other rows go to ``rejects``."""
        cannot = next((p for p in self.providers if not p.capabilities.extensions), None)
        cannot_say = f"{_route(cannot, self.providers)} cannot dial one (Vonage can)" if cannot else ""
        checks = [p.check_number for p in self.providers if p.check_number is not None]
        first_row, known, blocked, reject = self.first_row, self.known, self.blocked, rejects.append
        taken = []
        for position, (row, value, phone, extension) in enumerate(
            zip(rows, raws, phones, extensions, strict=True)
        ):
            if extension and cannot is not None:
                reject(
                    Reject(
                        row,
                        value,
                        f"extension {extension}: {cannot_say}",
                    )
                )
                continue
            line = _line(phone, extension) if extension else phone
            first = first_row.setdefault(line, row)
            if first != row:
                reject(Reject(row, value, f"duplicate of row {first}"))
            elif line in known:
                reject(Reject(row, value, "already in the campaign"))
            elif phone in blocked:
                reject(Reject(row, value, "on the do-not-call list"))
            elif checks and (reason := next(filter(None, (check(phone) for check in checks)), None)):
                reject(Reject(row, value, reason))
            else:
                taken.append(position)
        return taken


def _with_values(path: Path, encoding: str, delimiter: str, rejects: list[Reject]) -> list[Reject]:
    """Rejects without a value (a row with more fields than the header, an empty cell) with their
    row's text instead, as the file has it (read again at the end, beside the storing of the last
    chunk: they are few)."""
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


@contextmanager
def _read_aside(file: _File, size: int) -> Iterator[Iterator[_Chunk | _Finished]]:
    """:func:`_reading`, for a file of :data:`READ_ASIDE` bytes or more in a process of its own, its
    chunks handed over through a pipe as each is ready: it reads the next while this process stores
    one, and waits while it is a chunk ahead. A smaller file is read here, in turn with storing.

    Normalising numbers and storing them each take a core (Python holds one at a time, and
    SQLite's inserts give it up for every row, which costs more than it gains in a thread). The
    process comes from a fork server that has imported this module and nothing else: a plain fork
    of this process would take along its threads and its connections (kombu's after-fork hook
    closed a Redis connection this process was still using); the ``dialer`` command starts the
    server as it starts, when it imports a big file (:mod:`dialer.entry`). Two reading processes, each
    normalising every other chunk, were no faster on two cores (bench/RESULTS.md, Import).
    """
    if size < READ_ASIDE or "forkserver" not in multiprocessing.get_all_start_methods():
        with closing(_reading(file)) as parts:
            yield parts
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    receiver, sender = context.Pipe(duplex=False)
    reader = context.Process(target=_read_into, args=(file, sender), name="import-reader", daemon=True)
    reader.start()
    sender.close()
    try:
        yield _received(receiver, reader, file.path)
    finally:
        receiver.close()  # a reader still sending stops at once (a broken pipe)
        reader.join(timeout=5)
        if reader.is_alive():
            reader.terminate()
            reader.join()


def _read_into(file: _File, sender: Connection) -> None:
    """The reading process: :func:`_reading` into ``sender``, ending with its error if it fails."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the importing process's to handle
    try:
        for part in _reading(file):
            sender.send(part)
    except BrokenPipeError:
        return  # the importing process stopped listening: it is leaving
    except BaseException as error:  # every failure is the importing process's to raise
        if not isinstance(error, DialerError):
            error.add_note("in the process reading the file:\n" + traceback.format_exc())
        try:
            sender.send(_Failed(error))
        except BrokenPipeError:
            return
        except Exception:  # an error that does not pickle: its words and where it came from
            sender.send(_Failed(RuntimeError(traceback.format_exc())))


def _received(receiver: Connection, reader: BaseProcess, path: Path) -> Iterator[_Chunk | _Finished]:
    while True:
        try:
            part: _Chunk | _Finished | _Failed = receiver.recv()
        except EOFError:
            reader.join()
            raise ImportFailed(
                f"{path}: the process reading the file ended (exit code {reader.exitcode})"
            ) from None
        if isinstance(part, _Failed):
            raise part.error
        yield part
        if isinstance(part, _Finished):
            return


Check = Callable[[str], tuple[str, str | None]]
"""A column's value as kept (normalised), and why the row cannot be imported (None: it can)."""
ColumnCheck = Callable[[pa.Array], tuple[pa.Array, dict[int, str]]]
"""A check of a whole column of stripped values: the values as kept, and the rows (by position)
that cannot be imported, with why."""


def column_checks(
    spec: CampaignSpec, providers: Sequence[Provider], normalise: Normaliser
) -> dict[str, ColumnCheck]:
    """The checks of the columns a flow takes something from besides its texts: each contact's
    language and voice (what every route accepts: ``providers``, the one in use first), and the
    numbers its transfers connect to."""
    flow = spec.call_flow
    checks: dict[str, ColumnCheck] = {}
    speaking = [provider for provider in providers if provider.languages is not None]
    if flow.language_column and speaking:

        def language(value: str) -> tuple[str, str | None]:
            silent = next((p for p in speaking if value and value not in (p.languages or ())), None)
            return value, None if silent is None else f"{_route(silent, providers)} does not speak it"

        checks[flow.language_column] = _each_distinct(language)
    voice_problems = [provider.voice_problem for provider in providers if provider.voice_problem is not None]
    if flow.voice_column and voice_problems:

        def voice(value: str) -> tuple[str, str | None]:
            return value, next(filter(None, (problem(value) for problem in voice_problems if value)), None)

        checks[flow.voice_column] = _each_distinct(voice)

    def number(value: str) -> tuple[str, str | None]:
        try:
            return normalise(value), None
        except InvalidPhone as error:
            return value, f"not a number to transfer to: {error}"

    for step in flow.steps.values():
        if step.to_column:
            checks[step.to_column] = _each_distinct(number)
    for column in flow.spoken_columns() - checks.keys():
        checks[column] = _spoken(column, spec.defaults.get(column))
    return checks


def _route(provider: Provider, providers: Sequence[Provider]) -> str:
    """A provider as a contact's rejection names it: the route in use by its title, another by its
    place among the campaign's routes."""
    return provider.title if provider is providers[0] else f"{provider.title} (the route {provider.name})"


def _each_distinct(check: Check) -> ColumnCheck:
    """``check`` as a column's: asked once for each distinct value."""

    def checked(values: pa.Array) -> tuple[pa.Array, dict[int, str]]:
        encoded = values.dictionary_encode()
        answers = [check(value) for value in encoded.dictionary.to_pylist()]
        indices = encoded.indices.to_numpy()
        bad = [index for index, (_, problem) in enumerate(answers) if problem is not None]
        problems = {
            position: answers[indices[position]][1] or ""
            for position in np.flatnonzero(np.isin(indices, bad)).tolist()
        }
        kept = pa.array([normal for normal, _ in answers], LARGE).take(encoded.indices)
        return kept, problems

    return checked


def _spoken(column: str, default: str | None) -> ColumnCheck:
    """The check of a placeholder's column: an empty cell takes the campaign's default, or is refused
    (the callee would hear "Hi , this is...")."""
    why = f"empty, and {{{column}}} is spoken: fill it in, or give the campaign defaults.{column}"

    def checked(values: pa.Array) -> tuple[pa.Array, dict[int, str]]:
        empty = pc.equal(values, "")
        if default is not None:
            return pc.if_else(empty, default, values), {}
        return values, dict.fromkeys(np.flatnonzero(empty.to_numpy(zero_copy_only=False)).tolist(), why)

    return checked


def _checked(
    chunk: pd.DataFrame, checks: Mapping[str, ColumnCheck]
) -> tuple[dict[int, tuple[str, str]], dict[str, pa.Array]]:
    """Apply ``checks`` to their columns, their values stripped as ``str.strip`` strips them: the
    rows (by position) that fail one, with the value and why; and the checked columns as kept."""
    failed: dict[int, tuple[str, str]] = {}
    kept: dict[str, pa.Array] = {}
    for column, check in checks.items():
        if column not in chunk.columns:
            continue
        values = pa.array(chunk[column], LARGE)
        kept[column], problems = check(pc.utf8_trim(values, characters=WHITESPACE))
        for position, problem in problems.items():
            if position not in failed:
                failed[position] = (values[position].as_py(), f"column {column!r}: {problem}")
    return failed, kept


WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""What ``str.strip`` strips (every character whose ``isspace()`` is true)."""


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


def _json_objects(table: pd.DataFrame, positions: list[int]) -> pa.Array:
    """The cells of the rows at ``positions`` as one JSON object each, written by Arrow a column
    at a time (pandas' ``to_json`` took a tenth of the import, every row one by one)."""
    table = table.take(positions)
    if table.columns.empty:
        return pa.array(["{}"] * len(table), LARGE)
    parts: list[pa.Array | pa.Scalar] = []
    for index, name in enumerate(table.columns):
        key = ("{" if index == 0 else ",") + json.dumps(str(name), ensure_ascii=False) + ":"
        parts += [literal(key), _json_strings(pa.array(table[name], type=LARGE))]
    parts.append(literal("}"))
    return pc.binary_join_element_wise(*parts, literal(""))


def _json_strings(values: pa.Array) -> pa.Array:
    """Each value as a JSON string (quoted, with ``"`` and ``\\`` escaped)."""
    values = values.fill_null("")
    if pc.any(pc.match_substring_regex(values, r"[\x00-\x1f]")).as_py():  # rare: let json escape them
        return pa.array([json.dumps(value, ensure_ascii=False) for value in values.to_pylist()], LARGE)
    escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise(literal('"'), escaped, literal('"'), literal(""))


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
def _contact_writer(session: Session, campaign_id: int, now: datetime) -> Iterator[Callable[[_Chunk], None]]:
    """Bulk insert into ``contact`` on the session's own connection (so in its transaction): a
    chunk's rows.

    PostgreSQL gets ``COPY``, its text written by Arrow a column at a time (psycopg's ``write_row``
    took a fifth of the import); SQLite a plain ``executemany``, the values every row shares
    written into the statement (each bound value costs every row). Both skip the ORM's per-row
    work: the one timestamp is converted once, as SQLAlchemy would store it, and the variables
    arrive as JSON. A chunk's zone groups are found (or made) before its rows are written.
    """
    connection = session.connection()
    stamp = UTCDateTime().dialect_impl(connection.dialect).bind_processor(connection.dialect)
    when = stamp(now) if stamp is not None else now
    driver: Any = connection.connection.driver_connection
    names = ", ".join(_COLUMNS)
    copy_rows = db.is_postgresql(session)
    group_id = group_ids(driver, campaign_id=campaign_id, paramstyle="format" if copy_rows else "qmark")
    shared = f"{int(campaign_id)}, 'pending', 0, {_quoted(str(when))}, {_quoted(str(when))}"
    insert = (
        "INSERT INTO contact (phone, extension, variables, zone, zone_group_id, row_number,"
        f" campaign_id, state, attempts, next_attempt_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, {shared})"
    )

    def write(chunk: _Chunk) -> None:
        ids = [group_id(key) for key in chunk.group_keys]
        if copy_rows:
            with driver.cursor() as cursor, cursor.copy(f"COPY contact ({names}) FROM STDIN") as copy:
                copy.write(_copy_text(chunk, ids, campaign_id=campaign_id, when=when))
            return
        rows = zip(
            chunk.phones,
            chunk.extensions,
            chunk.variables.to_pylist(),
            chunk.zones,
            map(ids.__getitem__, chunk.groups),
            chunk.rows,
            strict=True,
        )
        driver.executemany(insert, rows)

    yield write


def _quoted(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _copy_text(chunk: _Chunk, ids: list[int], *, campaign_id: int, when: object) -> memoryview:
    """The rows of ``chunk`` in COPY's text format, columns as :data:`_COLUMNS`.

    No value here holds a tab or a line break (numbers, extensions and zones are checked; JSON
    escapes control characters): only the backslashes of the variables are doubled."""

    def column(values: list[Any]) -> pa.Array:
        return pa.array(values).cast(LARGE)

    cells = [
        literal(str(campaign_id)),
        column(chunk.phones),
        column(chunk.extensions),
        pc.replace_substring(chunk.variables, "\\", "\\\\"),
        column(chunk.zones).fill_null("\\N"),
        column([ids[group] for group in chunk.groups]),
        column(chunk.rows),
        literal("pending"),
        literal("0"),
        literal(str(when)),
        literal(str(when)),
    ]
    lines = pc.binary_join_element_wise(*cells, literal("\t"))
    return joined(pc.binary_join_element_wise(lines, literal("\n"), literal("")))  # each line ended


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


def _same_file(one: Path, other: Path) -> bool:
    """Whether two paths lead to one file (a path that cannot be looked at is not; writing it says why)."""
    try:
        return one.exists() and one.samefile(other)
    except OSError:
        return False


def write_rejects(report: ImportReport, path: Path, *, replace: bool = True) -> None:
    """The report's rejects as CSV at ``path``, whole or not at all: over a file there (``replace``),
    else at the first unused ``NAME-2.csv``... beside it (an earlier import's list is kept)."""
    if replace and _same_file(path, report.file):  # a link to it, too
        raise WriteFailed(f"{path}: is the file being read: give --rejects another name")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["row (as a spreadsheet numbers it: the header is row 1)", "value", "reason"])
    writer.writerows((reject.row, reject.value, reject.reason) for reject in report.rejects)
    report.rejects_file, report.rejects_replaced = write_text(path, buffer.getvalue(), replace=replace)
