"""Contact import: CSV in chunks, numbers to E.164, duplicates and DNC filtered, all or nothing.

Every row not taken is written to a rejects CSV with its row number (the line in the file, the
header being line 1), the value and the reason. A file that cannot be used at all raises
:class:`ImportFailed` naming the file, row and column, and nothing is written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns.phones import InvalidPhone, normalise
from dialer.errors import ImportFailed
from dialer.models import Campaign, Contact, DncEntry
from dialer.runtime import spec_of

MAX_FIELD = 1000
"""Characters allowed in one field; longer ones are almost always a broken file."""
CHUNK_ROWS = 100_000
ZONE_COLUMN = "timezone"
_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
_DELIMITERS = ",;\t|"


@dataclass(frozen=True)
class Reject:
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


def chunks(path: Path, encoding: str, delimiter: str) -> Iterator[pd.DataFrame]:
    try:
        yield from pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            encoding=encoding,
            sep=delimiter,
            chunksize=CHUNK_ROWS,
            skipinitialspace=True,
            on_bad_lines="error",
        )
    except pd.errors.EmptyDataError:
        raise ImportFailed(f"{path}: the file is empty") from None
    except pd.errors.ParserError as error:
        raise ImportFailed(f"{path}: not a readable CSV: {error}") from None
    except UnicodeDecodeError as error:
        raise ImportFailed(f"{path}: not {encoding} text (give --encoding): {error.reason}") from None


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
) -> ImportReport:
    """Read ``path`` into ``campaign``'s contacts inside the caller's transaction."""
    if not path.is_file():
        raise ImportFailed(f"{path}: no such file")
    spec = spec_of(campaign)
    phone_column = phone_column or spec.phone_column
    region = region or spec.region
    encoding, delimiter = sniff(path, encoding, delimiter)
    report = ImportReport(file=path)
    known = set(session.exec(select(col(Contact.phone)).where(col(Contact.campaign_id) == campaign.id)).all())
    blocked = set(
        session.exec(
            select(col(DncEntry.phone)).where(
                (col(DncEntry.campaign_id) == campaign.id) | (col(DncEntry.campaign_id).is_(None))
            )
        ).all()
    )
    first_row: dict[str, int] = {}
    header_checked = False
    rows_seen = 0
    for chunk in chunks(path, encoding, delimiter):
        if not header_checked:
            _check_header(path, list(chunk.columns), phone_column, spec.required_columns())
            header_checked = True
        rows = []
        for offset, record in enumerate(chunk.to_dict("records")):
            row = rows_seen + offset + 2
            for column, value in record.items():
                if len(value) > MAX_FIELD:
                    raise ImportFailed(
                        f"{path}: row {row}, column {column!r}: field is {len(value)} characters long "
                        f"(at most {MAX_FIELD})"
                    )
            raw = record.pop(phone_column)
            try:
                phone = normalise(raw, region)
            except InvalidPhone as error:
                report.rejects.append(Reject(row, raw, f"invalid phone number: {error}"))
                continue
            zone = record.get(ZONE_COLUMN) or None
            if zone is not None and not _is_zone(zone):
                report.rejects.append(Reject(row, zone, f"unknown time zone in column {ZONE_COLUMN!r}"))
                continue
            if phone in first_row:
                report.rejects.append(Reject(row, raw, f"duplicate of row {first_row[phone]}"))
                continue
            first_row[phone] = row
            if phone in known:
                report.rejects.append(Reject(row, raw, "already in the campaign"))
                continue
            if phone in blocked:
                report.rejects.append(Reject(row, raw, "on the do-not-call list"))
                continue
            rows.append(
                {
                    "campaign_id": campaign.id,
                    "phone": phone,
                    "variables": record,
                    "zone": zone,
                    "row_number": row,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "updated_at": now,
                }
            )
        rows_seen += len(chunk)
        if rows:
            session.execute(sa.insert(Contact), rows)
            report.accepted += len(rows)
    if not header_checked:
        raise ImportFailed(f"{path}: the file is empty")
    if rows_seen == 0:
        raise ImportFailed(f"{path}: the file has a header but no rows")
    return report


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
