from __future__ import annotations

from datetime import UTC, datetime

import pytest

from campaigns.phones import time_zones
from campaigns.spec import Window
from campaigns.window import is_open, next_open, zones_for

WEEKDAYS = Window(start="09:00", end="20:00", days=("mon", "tue", "wed", "thu", "fri"))


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_a_new_york_number_waits_for_9am_local_not_utc() -> None:
    zones = time_zones("+12125550100")
    now = utc(2026, 11, 23, 12, 0)  # Monday 07:00 in New York
    assert not is_open(WEEKDAYS, zones, now)
    assert next_open(WEEKDAYS, zones, now) == utc(2026, 11, 23, 14, 0)


def test_friday_evening_waits_for_monday() -> None:
    zones = ("Europe/Berlin",)
    friday_late = utc(2026, 11, 27, 19, 30)  # 20:30 in Berlin
    assert next_open(WEEKDAYS, zones, friday_late) == utc(2026, 11, 30, 8, 0)


def test_spring_forward_opens_at_local_9am_on_the_new_offset() -> None:
    # US DST begins Sunday 2026-03-08; on Monday 9:00 New York is 13:00 UTC, not 14:00.
    zones = ("America/New_York",)
    assert next_open(WEEKDAYS, zones, utc(2026, 3, 7, 12, 0)) == utc(2026, 3, 9, 13, 0)
    assert not is_open(WEEKDAYS, zones, utc(2026, 3, 9, 12, 59))


def test_fall_back_opens_at_local_9am_on_the_new_offset() -> None:
    # EU clocks go back Sunday 2026-10-25: Monday 9:00 in London is 09:00 UTC.
    assert next_open(WEEKDAYS, ("Europe/London",), utc(2026, 10, 24, 12, 0)) == utc(2026, 10, 26, 9, 0)


def test_an_australian_mobile_waits_until_every_zone_it_may_be_in_is_open() -> None:
    zones = time_zones("+61412345678")
    assert "Australia/Perth" in zones and "Australia/Sydney" in zones
    window = Window(start="09:00", end="20:00", days=("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    sydney_ten_am = utc(2026, 11, 22, 23, 0)  # 10:00 in Sydney, 07:00 in Perth
    assert not is_open(window, zones, sydney_ten_am)
    opening = next_open(window, zones, sydney_ten_am)
    assert is_open(window, zones, opening)
    # The prefix also covers the Cocos Islands (UTC+6:30), the westernmost: 09:00 there is 02:30 UTC.
    assert opening == utc(2026, 11, 23, 2, 30)


@pytest.mark.parametrize(
    ("contact_zone", "campaign_zone", "expected"),
    [
        ("Asia/Tokyo", "Europe/Paris", ("Asia/Tokyo",)),
        (None, "Europe/Paris", ("Europe/Paris",)),
        (None, None, ("America/Los_Angeles",)),
    ],
)
def test_a_contact_or_campaign_zone_overrides_the_number(
    contact_zone: str | None, campaign_zone: str | None, expected: tuple[str, ...]
) -> None:
    window = Window(timezone=campaign_zone)
    assert zones_for(window, contact_zone=contact_zone, number_zones=time_zones("+14155550100")) == expected


def test_the_window_end_is_exclusive() -> None:
    zones = ("UTC",)
    assert is_open(WEEKDAYS, zones, utc(2026, 11, 23, 19, 59))
    assert not is_open(WEEKDAYS, zones, utc(2026, 11, 23, 20, 0))


@pytest.mark.parametrize(
    ("number", "zones"),
    [
        ("+12125550100", ("America/New_York",)),
        ("+19075550100", ("America/Adak", "America/Anchorage")),  # Alaska: its two zones
        ("+14165550100", ("America/Toronto",)),
    ],
)
def test_a_number_rings_in_the_zones_of_its_prefix(number: str, zones: tuple[str, ...]) -> None:
    assert time_zones(number) == zones


def test_a_us_toll_free_number_is_read_in_us_zones_only() -> None:
    zones = time_zones("+18005550100")  # its prefix names only +1: all 42 zones of the plan
    assert "America/New_York" in zones and "Pacific/Honolulu" in zones and "America/Adak" in zones
    assert not {"Pacific/Guam", "America/Toronto", "America/Puerto_Rico", "Atlantic/Bermuda"} & set(zones)
    window = Window(start="09:00", end="20:00", days=("mon", "tue", "wed", "thu", "fri"))
    # 09:00 in Adak (UTC-10) is 19:00 UTC; Guam (UTC+10), no longer counted, would push it to 23:00.
    assert next_open(window, zones, utc(2026, 11, 23, 12, 0)) == utc(2026, 11, 23, 19, 0)


def test_shared_plans_keep_every_zone() -> None:
    assert "Indian/Cocos" in time_zones("+61412345678")  # an Australian mobile may be on Cocos Island
