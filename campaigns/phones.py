"""Phone numbers: normalisation to E.164 and the time zones a number may ring in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import NamedTuple

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumberDesc
from phonenumbers import timezone as number_timezones
from phonenumbers.phonenumberutil import _GEO_MOBILE_COUNTRIES
from phonenumbers.tzdata import TIMEZONE_DATA as _TIMEZONES

_MIN_NSN, _MAX_NSN = 2, 17
"""phonenumbers' bounds on a national significant number's length."""
_SEPARATORS = re.compile(r"[\s\-.()]+")


class InvalidPhone(ValueError):
    """A value that is not a callable phone number; the message says why."""


def normalise(raw: str, region: str | None = None) -> str:
    """Return ``raw`` in E.164 (``+14155550100``); national formats need a default ``region``.

    An extension (``x123``, ``ext. 123``) is not part of the number: see :meth:`Normaliser.number`.
    """
    return phonenumbers.format_number(_parse(raw, region), phonenumbers.PhoneNumberFormat.E164)


def _parse(raw: str, region: str | None) -> phonenumbers.PhoneNumber:
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
    return number


def area(e164: str) -> tuple[int, str]:
    """A number's country calling code and area code (``(1, "415")`` for +14155550100; the area
    is empty for numbers without one, such as most mobiles outside North America)."""
    number = phonenumbers.parse(e164)
    national = phonenumbers.national_significant_number(number)
    return number.country_code or 0, national[: phonenumbers.length_of_geographical_area_code(number)]


def is_e164(value: str) -> bool:
    """True when ``value`` is a valid number written exactly in E.164 (``+`` and digits only)."""
    try:
        return normalise(value) == value
    except InvalidPhone:
        return False


class Number(NamedTuple):
    """A contact's number: E.164, the zones it may ring in, and the extension written after it."""

    e164: str
    zones: tuple[str, ...]
    extension: str = ""


class Normaliser:
    """:func:`normalise` for a whole file: the same answers, about twenty times faster.

    ``phonenumbers`` spends some 60 µs on each number. The usual shapes (``+44 20 7946 0000``,
    ``0044…``, ``(415) 555-0100`` with a region) are decided here with the same metadata compiled
    into one pattern per region, following ``phonenumbers.parse`` and ``is_valid_number`` step by
    step. Whatever this shortcut is not certain of goes to :func:`normalise`; either way a number
    gets the same answer and a rejection the same reason.
    """

    def __init__(self, region: str | None = None) -> None:
        self.region = region.upper() if region else None
        self._home = _plan_for_region(self.region) if self.region else None

    def __call__(self, raw: str) -> str:
        return self.fast(raw) or self.slow(raw)

    def slow(self, raw: str) -> str:
        return normalise(raw, self.region)

    def fast(self, raw: str) -> str | None:
        """The E.164 form, or :class:`InvalidPhone`, where the shortcut is sure; None where it is not."""
        found = self._claimed(raw)
        return None if found is None else "+" + found[0] + found[1]

    def number(self, raw: str) -> Number:
        """The E.164 form, :func:`zones_of` it and the extension, the number's region worked out once."""
        found = self._claimed(raw)
        if found is None:
            parsed = _parse(raw, self.region)
            e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            return Number(e164, zones_of(e164), parsed.extension or "")
        code, national_number, check = found
        return Number("+" + code + national_number, _zones(code, national_number, check))

    def _claimed(self, raw: str) -> tuple[str, str, _RegionCheck] | None:
        """Country code, national number and the region that claims it; None where not sure."""
        text = raw.strip()
        if text.startswith("00"):
            text = "+" + text[2:]
        text = _SEPARATORS.sub("", text)
        if text.startswith("+"):
            digits = text[1:]
            if not (digits.isascii() and digits.isdigit()):
                return None
            code = _country_code(digits)
            plan = _plan_for_code(code) if code else None
            if plan is None:
                return None
            national = digits[len(plan.code) :]
        elif self._home is not None and text.isascii() and text.isdigit():
            plan = self._home
            if (plan.idd is not None and plan.idd.match(text)) or text.startswith(plan.code):
                return None
            national = text
        else:
            return None
        national_number = plan.strip_prefix(national)
        if national_number is None or not _MIN_NSN <= len(national_number) <= _MAX_NSN:
            return None
        check = _claiming(plan.code, national_number)
        if check is None:
            # parse would have given this national number, which is_valid_number refuses
            raise InvalidPhone("not a valid number for its country")
        return plan.code, national_number, check


@dataclass(frozen=True)
class _ParsePlan:
    """What ``phonenumbers.parse`` does with a number's digits, for one region's metadata."""

    code: str
    idd: re.Pattern[str] | None
    national_prefix: re.Pattern[str] | None
    transforms: bool
    general: re.Pattern[str]
    lengths: frozenset[int]

    def strip_prefix(self, number: str) -> str | None:
        """The number without its national prefix, or None where parse's choice is not obvious."""
        match = self.national_prefix.match(number) if self.national_prefix else None
        if match is None:
            return number
        if self.transforms and (not match.groups() or match.groups()[-1] is not None):
            return None
        stripped = number[match.end() :]
        # parse keeps the stripped form when it is a possible number in its own right.
        if len(stripped) in self.lengths and self.general.fullmatch(stripped):
            return stripped
        return None


def _plan(metadata: PhoneMetadata) -> _ParsePlan:
    general = metadata.general_desc
    assert general is not None, "every region has a general description"
    return _ParsePlan(
        code=str(metadata.country_code),
        idd=re.compile(metadata.international_prefix) if metadata.international_prefix else None,
        national_prefix=(
            re.compile(metadata.national_prefix_for_parsing) if metadata.national_prefix_for_parsing else None
        ),
        transforms=bool(metadata.national_prefix_transform_rule),
        general=re.compile(general.national_number_pattern or "(?!)"),
        lengths=frozenset(general.possible_length) - frozenset(general.possible_length_local_only or ()),
    )


@cache
def _plan_for_region(region: str) -> _ParsePlan | None:
    metadata = PhoneMetadata.metadata_for_region(region, None)
    return _plan(metadata) if metadata is not None else None


@cache
def _plan_for_code(code: str) -> _ParsePlan | None:
    """The plan of the code's main region; None for non-geographic codes, left to phonenumbers."""
    regions = COUNTRY_CODE_TO_REGION_CODE[int(code)]
    return _plan_for_region(regions[0]) if regions[0] != "001" else None


_CODES = frozenset(str(code) for code in COUNTRY_CODE_TO_REGION_CODE)


def _country_code(digits: str) -> str | None:
    """The leading country code (codes form a prefix-free set)."""
    for size in (1, 2, 3):
        if digits[:size] in _CODES:
            return digits[:size]
    return None


_TYPES = (  # any order gives the same verdict; the common types first answer soonest
    "fixed_line",
    "mobile",
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)


def _desc_pattern(desc: PhoneNumberDesc | None) -> str | None:
    """``_is_number_matching_desc`` as one pattern: the listed lengths, then the full pattern."""
    if desc is None or not desc.national_number_pattern:
        return None
    pattern = desc.national_number_pattern
    lengths = [length for length in desc.possible_length if length > 0]
    if desc.possible_length and not lengths:
        return None  # (-1,): no numbers of this type
    guard = "(?=(?:" + "|".join(rf"\d{{{length}}}" for length in lengths) + r")\Z)" if lengths else ""
    return f"{guard}(?:{pattern})"


_SPECIAL_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)
"""The types ``_number_type_helper`` tries before fixed line and mobile, in its order."""


def _compiled(pattern: str | None) -> re.Pattern[str] | None:
    return re.compile(pattern) if pattern else None


@dataclass(frozen=True)
class _RegionCheck:
    region: str
    leading_digits: re.Pattern[str] | None
    valid: re.Pattern[str]
    """Full match means ``_number_type_helper`` would not answer UNKNOWN."""
    special: re.Pattern[str] | None
    """Full match: a premium, toll-free, shared-cost, VoIP, personal, pager, UAN or voicemail number."""
    fixed_line: re.Pattern[str] | None
    mobile: re.Pattern[str] | None
    same_mobile_and_fixed: bool

    def geographic(self, national_number: str, code: int) -> bool:
        """``is_number_type_geographical(number_type(...))`` for a number valid in this region."""
        if self.special is not None and self.special.fullmatch(national_number):
            return False
        if self.fixed_line is not None and self.fixed_line.fullmatch(national_number):
            return True  # fixed line, or fixed line or mobile
        mobile = not self.same_mobile_and_fixed and self.mobile is not None
        return mobile and code in _GEO_MOBILE_COUNTRIES and self.mobile.fullmatch(national_number) is not None  # type: ignore[union-attr]


@cache
def _region_checks(code: str) -> tuple[_RegionCheck, ...]:
    checks = []
    for region in COUNTRY_CODE_TO_REGION_CODE[int(code)]:
        metadata = PhoneMetadata.metadata_for_region(region, None)
        if metadata is None:
            continue
        types = [
            name for name in _TYPES if not (name == "mobile" and metadata.same_mobile_and_fixed_line_pattern)
        ]
        alternatives = [p for p in (_desc_pattern(getattr(metadata, name)) for name in types) if p]
        general = _desc_pattern(metadata.general_desc)
        valid = f"(?=(?:{general})\\Z)(?:{'|'.join(alternatives)})" if general and alternatives else "(?!)"
        leading = re.compile(metadata.leading_digits) if metadata.leading_digits else None
        special = [p for p in (_desc_pattern(getattr(metadata, name)) for name in _SPECIAL_TYPES) if p]
        checks.append(
            _RegionCheck(
                region=region,
                leading_digits=leading,
                valid=re.compile(valid),
                special=re.compile("|".join(f"(?:{p})" for p in special)) if special else None,
                fixed_line=_compiled(_desc_pattern(metadata.fixed_line)),
                mobile=_compiled(_desc_pattern(metadata.mobile)),
                same_mobile_and_fixed=bool(metadata.same_mobile_and_fixed_line_pattern),
            )
        )
    return tuple(checks)


def _claiming(code: str, national_number: str) -> _RegionCheck | None:
    """The region ``region_code_for_number`` names for a number, if it is valid there (None:
    ``is_valid_number`` refuses it; the first region that claims the number decides)."""
    checks = _region_checks(code)
    if len(checks) == 1:
        return checks[0] if checks[0].valid.fullmatch(national_number) else None
    for check in checks:
        if check.leading_digits is not None:
            if check.leading_digits.match(national_number):
                return check if check.valid.fullmatch(national_number) else None
        elif check.valid.fullmatch(national_number):
            return check
    return None


def zones_of(e164: str) -> tuple[str, ...]:
    """:func:`time_zones` for a valid E.164 number, the same answer some twenty times faster.

    It follows phonenumbers step by step: the region that claims the number, whether its type is
    geographical (then the longest known prefix of the number gives its zones) or not (then its
    country's), and for +1 numbers the narrowing to the number's own region.
    """
    digits = e164[1:]
    code = _country_code(digits)
    check = _claiming(code, digits[len(code) :]) if code else None
    if code is None or check is None:
        return time_zones(e164)  # not a number the shortcut knows: ask phonenumbers itself
    return _zones(code, digits[len(code) :], check)


def _zones(code: str, national_number: str, check: _RegionCheck) -> tuple[str, ...]:
    """:func:`zones_of` a valid number, once the region that claims it is known."""
    prefix: str | None = code
    if check.geographic(national_number, int(code)):
        digits = code + national_number
        prefix = next((digits[:n] for n in _prefix_lengths(code) if digits[:n] in _TIMEZONES), None)
    return _zones_of_prefix(prefix, code, check.region)


@cache
def _prefix_lengths(code: str) -> tuple[int, ...]:
    """The lengths, longest first, of the time-zone prefixes a number of country ``code`` can have."""
    lengths = {len(key) for key in _TIMEZONES if key.startswith(code) or code.startswith(key)}
    return tuple(sorted(lengths, reverse=True))


@cache
def _zones_of_prefix(prefix: str | None, code: str, region: str) -> tuple[str, ...]:
    zones = _TIMEZONES.get(prefix, ()) if prefix else ()
    return _narrowed(tuple(zone for zone in zones if zone != number_timezones.UNKNOWN_TIMEZONE), code, region)


def _narrowed(zones: tuple[str, ...], code: str, region: str | None) -> tuple[str, ...]:
    """A +1 number's zones within its own region (see :func:`time_zones`), sorted."""
    if code == "1" and region and len(zones) > 1:
        countries = _zone_countries()
        zones = tuple(zone for zone in zones if countries.get(zone, region) == region) or zones
    return tuple(sorted(zones))


def time_zones(e164: str) -> tuple[str, ...]:
    """Every IANA zone the number may be in; empty when the number says nothing usable.

    A +1 number whose prefix says nothing more (a US toll-free number gets all 42 zones of the
    North American plan, the Caribbean's and Guam's included) is narrowed to the zones of its own
    region: every country of that plan has its own area codes. Elsewhere a plan may be shared
    (Australian mobiles ring on Cocos Island too), so every zone of the prefix counts.
    """
    number = phonenumbers.parse(e164)
    zones = tuple(
        zone
        for zone in number_timezones.time_zones_for_number(number)
        if zone != number_timezones.UNKNOWN_TIMEZONE
    )
    return _narrowed(zones, str(number.country_code), phonenumbers.region_code_for_number(number))


@cache
def _zone_countries() -> dict[str, str]:
    """Each IANA zone's country, from the tz database's ``zone.tab`` (shipped by ``tzdata``)."""
    table = resources.files("tzdata").joinpath("zoneinfo", "zone.tab").read_text(encoding="utf-8")
    rows = (line.split("\t") for line in table.splitlines() if line and not line.startswith("#"))
    return {row[2]: row[0] for row in rows}
