"""Zone groups: a campaign's contacts grouped by the time zones that decide their calling window.

A contact's zones are its own (a ``timezone`` column) or its number's (known at import, from the
number's prefix). Contacts with the same zones share a group, so the pump checks a window once per
group, not once per contact, and claims only from groups whose window is open: contacts whose
window is closed are not read at all, however many there are and wherever they sort.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from campaigns import window as windows
from campaigns.outcomes import ContactState
from campaigns.phones import zones_of
from campaigns.spec import Window
from dialer.models import Contact, ZoneGroup

GroupKey = tuple[str, bool]
"""``(zones, own)``: space-separated zone names, and whether they are the contact's own."""
GROUP_BATCH = 5000
"""Contacts grouped at most in one go by :func:`assign_groups`."""


def group_key(own_zone: str | None, number_zones: str) -> GroupKey:
    """The group of a contact: its own zone if it has one, else its number's zones (space-separated)."""
    return (own_zone, True) if own_zone else (number_zones, False)


def group_zones(window: Window, zones: str, own: bool) -> tuple[str, ...]:
    """The zones a group's window is checked in (a campaign zone overrides a number's, not a
    contact's own)."""
    return windows.zones_for(window, contact_zone=zones if own else None, number_zones=zones.split())


_UPSERT = (
    "INSERT INTO zonegroup (campaign_id, zones, own) VALUES ({0}, {0}, {0}) "
    "ON CONFLICT (campaign_id, zones, own) DO UPDATE SET own = excluded.own RETURNING id"
)


def group_ids(driver: Any, *, campaign_id: int, paramstyle: str) -> Callable[[GroupKey], int]:
    """A function giving a group key's id, creating the group where it is new, on the DB-API
    connection ``driver`` (so in its transaction); ids are remembered."""
    known: dict[GroupKey, int] = {}
    statement = _UPSERT.format("%s" if paramstyle == "format" else "?")

    def group_id(key: GroupKey) -> int:
        if key not in known:
            cursor = driver.cursor()
            try:
                cursor.execute(statement, (campaign_id, key[0], key[1]))
                known[key] = int(cursor.fetchone()[0])
            finally:
                cursor.close()
        return known[key]

    return group_id


def assign_groups(session: Session, *, campaign_id: int, limit: int = GROUP_BATCH) -> int:
    """Group up to ``limit`` of a campaign's waiting contacts that have no group yet (imported
    before groups existed, or written another way); return how many were grouped."""
    rows = session.execute(
        sa.select(col(Contact.id), col(Contact.phone), col(Contact.zone))
        .where(
            col(Contact.campaign_id) == campaign_id,
            # Waiting contacts only: those are the ones a claim reads, and (campaign, state, group)
            # is where the due index finds them without reading the campaign's every contact.
            col(Contact.state) == ContactState.PENDING,
            col(Contact.zone_group_id).is_(None),
        )
        .limit(limit)
    ).all()
    if not rows:
        return 0
    keys = {
        contact_id: group_key(zone, "" if zone else " ".join(zones_of(phone)))
        for contact_id, phone, zone in rows
    }
    ids = {key: _group_id(session, campaign_id=campaign_id, key=key) for key in set(keys.values())}
    table = Contact.__table__  # type: ignore[attr-defined]
    session.connection().execute(
        sa.update(table)
        .where(table.c.id == sa.bindparam("b_contact"))
        .values(zone_group_id=sa.bindparam("b_group")),
        [{"b_contact": contact_id, "b_group": ids[key]} for contact_id, key in keys.items()],
    )
    return len(rows)


def _group_id(session: Session, *, campaign_id: int, key: GroupKey) -> int:
    found = session.scalar(
        sa.select(col(ZoneGroup.id)).where(
            col(ZoneGroup.campaign_id) == campaign_id,
            col(ZoneGroup.zones) == key[0],
            col(ZoneGroup.own) == key[1],
        )
    )
    if found is not None:
        return int(found)
    with session.begin_nested():
        group = ZoneGroup(campaign_id=campaign_id, zones=key[0], own=key[1])
        session.add(group)
        session.flush()
    assert group.id is not None
    return group.id


def open_groups(session: Session, *, campaign_id: int, window: Window, now: datetime) -> Sequence[int]:
    """The campaign's groups whose window is open ``now``."""
    groups = session.execute(
        sa.select(col(ZoneGroup.id), col(ZoneGroup.zones), col(ZoneGroup.own)).where(
            col(ZoneGroup.campaign_id) == campaign_id
        )
    ).all()
    return [
        group_id
        for group_id, zones, own in groups
        if windows.is_open(window, group_zones(window, zones, own), now)
    ]
