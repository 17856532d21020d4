"""Calling-window arithmetic in the callee's local time.

A number whose prefix spans several zones is callable only when the window is open in all of them
(the most restrictive reading); a contact or campaign zone overrides the number's zones.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from campaigns.spec import Window

_HORIZON_DAYS = 8


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def zones_for(window: Window, *, contact_zone: str | None, number_zones: Iterable[str]) -> tuple[str, ...]:
    """The zones a contact's window is checked in: its own, else the campaign's, else its number's."""
    if contact_zone:
        return (contact_zone,)
    if window.timezone:
        return (window.timezone,)
    zones = tuple(number_zones)
    return zones or ("UTC",)


def _open_in(window: Window, zone: str, now: datetime) -> bool:
    local = now.astimezone(_zone(zone))
    minute = local.hour * 60 + local.minute
    return local.weekday() in window.weekdays and window.start_minute <= minute < window.end_minute


def is_open(window: Window, zones: Iterable[str], now: datetime) -> bool:
    """True when ``now`` (aware) lies inside the window in every one of ``zones``."""
    return all(_open_in(window, zone, now) for zone in zones)


def next_open(window: Window, zones: Iterable[str], now: datetime) -> datetime:
    """The earliest instant at or after ``now`` when the window is open in every zone.

    The open set is an intersection of daily intervals, so it starts either at ``now`` or at one
    zone's local opening time; those are the only candidates to check.
    """
    zones = tuple(zones)
    if is_open(window, zones, now):
        return now
    candidates = []
    for zone in zones:
        local_now = now.astimezone(_zone(zone))
        for day in range(_HORIZON_DAYS):
            date = (local_now + timedelta(days=day)).date()
            opening = datetime(date.year, date.month, date.day, tzinfo=_zone(zone)) + timedelta(
                minutes=window.start_minute
            )
            # Wall-clock arithmetic: re-read the local time so a DST change that day is respected.
            opening = opening.replace(tzinfo=None).replace(tzinfo=_zone(zone)).astimezone(UTC)
            if opening > now:
                candidates.append(opening)
    for candidate in sorted(candidates):
        if is_open(window, zones, candidate):
            return candidate
    raise ValueError(f"the window {window.start}-{window.end} on {window.days} never opens in all of {zones}")
