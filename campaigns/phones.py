"""Phone numbers: normalisation to E.164 and the time zones a number may ring in."""

from __future__ import annotations

import phonenumbers
from phonenumbers import timezone as number_timezones


class InvalidPhone(ValueError):
    """A value that is not a callable phone number; the message says why."""


def normalise(raw: str, region: str | None = None) -> str:
    """Return ``raw`` in E.164 (``+14155550100``); national formats need a default ``region``."""
    text = raw.strip()
    if not text:
        raise InvalidPhone("empty")
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region.upper() if region else None)
    except phonenumbers.NumberParseException as error:
        if error.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise InvalidPhone("no country code (give a region for national numbers)") from None
        raise InvalidPhone("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("not a valid number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def time_zones(e164: str) -> tuple[str, ...]:
    """Every IANA zone the number may be in; empty when the number says nothing usable."""
    number = phonenumbers.parse(e164)
    zones = number_timezones.time_zones_for_number(number)
    return tuple(sorted(zone for zone in zones if zone != number_timezones.UNKNOWN_TIMEZONE))
