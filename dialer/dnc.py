"""The do-not-call list: numbers never to call, globally or in one campaign."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns.phones import InvalidPhone, normalise
from dialer.db import changed
from dialer.errors import ImportFailed
from dialer.importer import Reject, chunks, sniff
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
    session: Session, phones: Iterable[str], *, campaign_id: int | None, reason: str | None, now: datetime
) -> int:
    """Add numbers (already E.164); return how many were new."""
    wanted = set(phones)
    present = set(
        session.exec(select(DncEntry.phone).where(col(DncEntry.phone).in_(wanted), _scope(campaign_id)))
    )
    new = sorted(wanted - present)
    if new:
        session.execute(
            sa.insert(DncEntry),
            [{"phone": p, "campaign_id": campaign_id, "reason": reason, "added_at": now} for p in new],
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
    """Add every valid number of a CSV; return how many were new and the rows that were not numbers."""
    if not path.is_file():
        raise ImportFailed(f"{path}: no such file")
    encoding, delimiter = sniff(path, None, None)
    phones: list[str] = []
    rejects: list[Reject] = []
    seen = 0
    for chunk in chunks(path, encoding, delimiter):
        if phone_column not in chunk.columns:
            raise ImportFailed(
                f"{path}: row 1: no {phone_column!r} column (columns: {', '.join(chunk.columns)})"
            )
        for offset, value in enumerate(chunk[phone_column]):
            try:
                phones.append(normalise(value, region))
            except InvalidPhone as error:
                rejects.append(Reject(seen + offset + 2, value, f"invalid phone number: {error}"))
        seen += len(chunk)
    if seen == 0:
        raise ImportFailed(f"{path}: the file has a header but no rows")
    return add(session, phones, campaign_id=campaign_id, reason=reason, now=now), rejects
