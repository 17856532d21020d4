from __future__ import annotations

import pytest

from campaigns.phones import InvalidPhone, normalise


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+1 (415) 555-0100", None, "+14155550100"),
        ("(415) 555-0100", "US", "+14155550100"),
        ("0044 7911 123456", None, "+447911123456"),
        ("07911 123456", "gb", "+447911123456"),
        ("+49 151 12345678", None, "+4915112345678"),
    ],
)
def test_numbers_are_normalised_to_e164(raw: str, region: str | None, e164: str) -> None:
    assert normalise(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("", None, "empty"),
        ("hello", "US", "not a phone number"),
        ("415 555 0100", None, "no country code"),
        ("+1 415 555", None, "not a valid number"),
    ],
)
def test_invalid_numbers_say_why(raw: str, region: str | None, reason: str) -> None:
    with pytest.raises(InvalidPhone, match=reason):
        normalise(raw, region)
