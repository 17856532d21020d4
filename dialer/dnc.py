"""The do-not-call list: numbers never to call, globally or in one campaign."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns.phones import InvalidPhone, Normaliser, normalise
from dialer.db import changed
from dialer.errors import ImportFailed
from dialer.files import not_a_file
from dialer.importer import Reject, header_names, rows, sniff
from dialer.models import DncEntry


def _scope(campaign_id: int | None) -> sa.ColumnElement[bool]:
    column = col(DncEntry.campaign_id)
    return column.is_(None) if campaign_id is None else column == campaign_id


def normalised(values: Iterable[str], region: str | None) -> list[str]:
    """Numbers in E.164; the first invalid one stops everything, named with its reason."""
    phones = []
    for value in values:
        try:
            phones.append(normalise(value, region))
        except InvalidPhone as error:
            raise ImportFailed(f"{value!r}: {error}") from None
    return phones


def add(
    session: Session,
    phones: Iterable[str],
    *,
    campaign_id: int | None,
    reason: str | None,
    now: datetime,
    source: str = "dnc add",
) -> int:
    """Add numbers (already E.164), saying where they came from; return how many were new."""
    wanted = set(phones)
    present = set(
        session.exec(select(DncEntry.phone).where(col(DncEntry.phone).in_(wanted), _scope(campaign_id)))
    )
    new = sorted(wanted - present)
    if new:
        session.execute(
            sa.insert(DncEntry),
            [
                {"phone": p, "campaign_id": campaign_id, "reason": reason, "source": source, "added_at": now}
                for p in new
            ],
        )
    return len(new)


def remove(session: Session, phones: Iterable[str], *, campaign_id: int | None) -> int:
    """Take numbers off the list; return how many were on it."""
    return changed(
        session, sa.delete(DncEntry).where(col(DncEntry.phone).in_(set(phones)), _scope(campaign_id))
    )


def entries(session: Session, *, campaign_id: int | None) -> list[DncEntry]:
    return list(session.exec(select(DncEntry).where(_scope(campaign_id)).order_by(col(DncEntry.phone))))


def import_file(
    session: Session,
    path: Path,
    *,
    campaign_id: int | None,
    phone_column: str,
    region: str | None,
    reason: str | None,
    now: datetime,
) -> tuple[int, list[Reject]]:
    """Add every number of a CSV; return how many were new, and the rows that were not numbers
    (each with its row number and reason; the others are added)."""
    if (why := not_a_file(path)) is not None:
        raise ImportFailed(f"{path}: {why}")
    encoding, delimiter = sniff(path, None, None)
    normalise = Normaliser(region)
    phones: list[str] = []
    rejects: list[Reject] = []
    seen = 0
    renames: dict[str, str] | None = None
    for part in rows(path, encoding, delimiter):
        rejects += part.refused
        if not len(part.frame.columns):
            continue
        if renames is None:
            renames = header_names(path, list(part.frame.columns), wanted=[phone_column])
            if phone_column not in [renames.get(c, c) for c in part.frame.columns]:
                raise ImportFailed(
                    f"{path}: row 1: no {phone_column!r} column (columns: {', '.join(part.frame.columns)})"
                )
        values = part.frame.rename(columns=renames)[phone_column]
        for number, value in zip(part.numbers, values, strict=True):
            try:
                phones.append(normalise(value))
            except InvalidPhone as error:
                rejects.append(Reject(number, value, f"invalid phone number: {error}"))
        seen += len(part.frame)
    if seen == 0 and not rejects:
        raise ImportFailed(f"{path}: the file has a header but no rows")
    added = add(
        session, phones, campaign_id=campaign_id, reason=reason, now=now, source=f"dnc import {path.name}"
    )
    return added, sorted(rejects)
