"""Phone numbers: normalisation to E.164 and the time zones a number may ring in."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import NamedTuple

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
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

    def numbers(self, raw: list[str]) -> Numbers:
        """:meth:`number` of a column of values: the same answers, worked out a column at a time.

        The shapes :meth:`fast` takes are decided by Arrow, whose RE2 runs phonenumbers' patterns
        (none needs more than RE2 has) some ten times faster than Python's ``re`` runs them one
        value at a time; whatever the column path is not sure of goes to :meth:`number`.
        """
        column = _Column(len(raw))
        values = pa.array(raw, pa.string())
        cleaned = _without(values, _SEPARATOR_CHARACTERS)
        international = pc.starts_with(pc.utf8_ltrim(values, characters=_SPACES), "00")
        cleaned = pc.if_else(
            international, pc.binary_join_element_wise("+", pc.utf8_slice_codeunits(cleaned, 2), ""), cleaned
        )
        rows = np.flatnonzero(_mask(pc.match_substring_regex(cleaned, r"^\+[0-9]+$")))
        digits = pc.utf8_slice_codeunits(cleaned.take(rows), 1)
        codes = _country_codes(digits)
        for code in pc.unique(codes.drop_null()).to_pylist():
            plan = _plan_for_code(code)
            if plan is not None:
                mine = _mask(pc.equal(codes, code).fill_null(False))
                column.settle(plan, pc.utf8_slice_codeunits(digits.filter(mine), len(code)), rows[mine])
        home = self._home
        if home is not None:
            national = _mask(pc.match_substring_regex(cleaned, "^[0-9]+$"))
            national &= ~_mask(pc.starts_with(cleaned, home.code))
            if home.idd is not None:
                national &= ~_mask(pc.match_substring_regex(cleaned, f"^(?:{home.idd.pattern})"))
            rows = np.flatnonzero(national)
            column.settle(home, cleaned.take(rows), rows)
        return column.finished(raw, self.number)

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
            raise InvalidPhone(_INVALID)
        return plan.code, national_number, check


class Numbers(NamedTuple):
    """:meth:`Normaliser.numbers` of a column: each value's E.164 form (None where it is refused),
    zones (space-separated) and extension; and, by position, why each refused value is refused."""

    e164: list[str | None]
    zones: list[str]
    extensions: list[str]
    refused: dict[int, str]


_SPACES = " \t\n\v\f\r"
_SEPARATOR_CHARACTERS = _SPACES + "-.()"
"""The separators of ``_SEPARATORS`` a column's values may hold (the others go one by one)."""
_INVALID = "not a valid number for its country"


class _Column:
    """The numbers of a column as they are settled, a group of rows at a time."""

    def __init__(self, count: int) -> None:
        self.e164 = np.full(count, None, dtype=object)
        self.zones = np.full(count, "", dtype=object)
        self.invalid = np.zeros(count, dtype=bool)

    def settle(self, plan: _ParsePlan, national: pa.Array, rows: np.ndarray) -> None:
        """Decide ``rows``, whose digits after ``plan``'s country code are ``national``, as
        :meth:`Normaliser._claimed` and :func:`_zones` would; leave those it is not sure of."""
        if plan.national_prefix is not None:
            prefix = f"^(?:{plan.national_prefix.pattern})"
            has = _mask(pc.match_substring_regex(national, prefix))
            if has.any():
                keep = ~has
                if not plan.transforms:
                    stripped = pc.replace_substring_regex(national, prefix, "", max_replacements=1)
                    lengths = pc.utf8_length(stripped)
                    possible = _mask(
                        pc.is_in(lengths, value_set=pa.array(sorted(plan.lengths), lengths.type))
                    )
                    possible &= _mask(pc.match_substring_regex(stripped, f"^(?:{plan.general.pattern})$"))
                    keep |= has & possible
                    national = pc.if_else(pa.array(has), stripped, national)
                national, rows = national.filter(pa.array(keep)), rows[keep]
        lengths = pc.utf8_length(national)
        size = lengths.to_numpy()
        keep = (size >= _MIN_NSN) & (size <= _MAX_NSN)
        national, lengths, rows = national.filter(pa.array(keep)), lengths.filter(pa.array(keep)), rows[keep]
        checks = _region_checks(plan.code)
        undecided = np.ones(len(rows), dtype=bool)
        for check in checks:
            left = np.flatnonzero(undecided)
            if not len(left):
                break
            digits, sizes = national.take(left), lengths.take(left)
            valid = check.valid_column(digits, sizes)
            if check.leading_digits is None or len(checks) == 1:
                claims = valid
            else:
                claims = _mask(pc.match_substring_regex(digits, f"^(?:{check.leading_digits.pattern})"))
                self.invalid[rows[left[claims & ~valid]]] = True
            undecided[left[claims]] = False
            mine = claims & valid
            self._found(plan.code, check, digits.filter(pa.array(mine)), rows[left[mine]])
        self.invalid[rows[undecided]] = True

    def _found(self, code: str, check: _RegionCheck, national: pa.Array, rows: np.ndarray) -> None:
        """Numbers valid in ``check``'s region: their E.164 form and zones (see :func:`_zones`)."""
        if not len(rows):
            return
        self.e164[rows] = pc.binary_join_element_wise("+" + code, national, "").to_numpy(zero_copy_only=False)
        geographic = check.geographic_column(national, pc.utf8_length(national), int(code))
        prefixes = pa.nulls(len(rows), pa.string())
        if geographic.any():
            digits = pc.binary_join_element_wise(code, national, "")
            for size in reversed(_prefix_lengths(code)):  # the longest known prefix wins
                candidate = pc.utf8_slice_codeunits(digits, 0, size)
                prefixes = pc.if_else(pc.is_in(candidate, value_set=_zone_prefixes()), candidate, prefixes)
        prefixes = pc.if_else(pa.array(geographic), prefixes, code)
        encoded = prefixes.dictionary_encode()
        zones = [
            " ".join(_zones_of_prefix(prefix, code, check.region))
            for prefix in encoded.dictionary.to_pylist()
        ]
        zones.append("")  # for a geographic number with no known prefix
        indices = encoded.indices.fill_null(len(zones) - 1).to_numpy()
        self.zones[rows] = np.array(zones, dtype=object)[indices]

    def finished(self, raw: list[str], number: Callable[[str], Number]) -> Numbers:
        """The column's numbers, those not settled here worked out one by one by ``number``."""
        e164, zones = self.e164.tolist(), self.zones.tolist()
        extensions = [""] * len(raw)
        refused = dict.fromkeys(np.flatnonzero(self.invalid).tolist(), _INVALID)
        for row in np.flatnonzero((self.e164 == None) & ~self.invalid).tolist():  # noqa: E711
            try:
                found = number(raw[row])
            except InvalidPhone as error:
                refused[row] = str(error)
                continue
            e164[row], zones[row], extensions[row] = found.e164, " ".join(found.zones), found.extension
        return Numbers(e164, zones, extensions, refused)


def _country_codes(digits: pa.Array) -> pa.Array:
    """:func:`_country_code` of a column (null where there is none)."""
    codes = pa.nulls(len(digits), pa.string())
    for size in (3, 2, 1):  # codes form a prefix-free set: at most one size matches
        prefix = pc.utf8_slice_codeunits(digits, 0, size)
        codes = pc.if_else(pc.is_in(prefix, value_set=_code_column()), prefix, codes)
    return codes


@cache
def _code_column() -> pa.Array:
    return pa.array(sorted(_CODES), pa.string())


@cache
def _zone_prefixes() -> pa.Array:
    return pa.array(sorted(_TIMEZONES), pa.string())


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


@dataclass(frozen=True)
class _Desc:
    """A number description of the metadata: the lengths it allows (any, when none are listed) and
    the pattern a national number must match in full."""

    lengths: tuple[int, ...]
    pattern: str

    @property
    def python(self) -> str:
        """``_is_number_matching_desc`` as one pattern for ``fullmatch``: the lengths, then the pattern."""
        guard = "(?=(?:" + "|".join(rf"\d{{{n}}}" for n in self.lengths) + r")\Z)" if self.lengths else ""
        return f"{guard}(?:{self.pattern})"

    def column(self, digits: pa.Array, lengths: pa.Array) -> np.ndarray:
        """The same verdict for a column of national numbers (and their lengths), by Arrow's RE2."""
        found = _mask(pc.match_substring_regex(digits, f"^(?:{self.pattern})$"))
        if self.lengths:
            found &= _mask(pc.is_in(lengths, value_set=pa.array(self.lengths, lengths.type)))
        return found


def _desc(desc: PhoneNumberDesc | None) -> _Desc | None:
    if desc is None or not desc.national_number_pattern:
        return None
    lengths = tuple(length for length in desc.possible_length if length > 0)
    if desc.possible_length and not lengths:
        return None  # (-1,): no numbers of this type
    return _Desc(lengths, desc.national_number_pattern)


def _any(descs: Sequence[_Desc], digits: pa.Array, lengths: pa.Array) -> np.ndarray:
    """Where any of ``descs`` matches (each tried only where none before it did)."""
    matched = np.zeros(len(digits), dtype=bool)
    for desc in descs:
        left = np.flatnonzero(~matched)
        if not len(left):
            break
        indices = pa.array(left)
        matched[left] = desc.column(digits.take(indices), lengths.take(indices))
    return matched


def _without(values: pa.Array, characters: str) -> pa.Array:
    """``values`` (strings) without any of the ASCII ``characters``: a byte never stands for an
    ASCII character inside a longer UTF-8 sequence, so they are dropped byte by byte."""
    offsets = np.frombuffer(values.buffers()[1], np.int32)[values.offset : values.offset + len(values) + 1]
    data = np.frombuffer(values.buffers()[2] or b"", np.uint8)
    dropped = np.zeros(256, dtype=bool)
    dropped[list(characters.encode("ascii"))] = True
    keep = ~dropped[data]
    kept_before = np.zeros(len(data) + 1, dtype=np.int32)
    np.cumsum(keep, out=kept_before[1:])
    return pa.StringArray.from_buffers(
        len(values), pa.py_buffer(kept_before[offsets]), pa.py_buffer(data[keep]), null_count=0
    )


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)


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


@dataclass(frozen=True)
class _RegionDescs:
    general: _Desc | None
    types: tuple[_Desc, ...]
    """Every type a valid number may have (mobile left out where it is the fixed lines' pattern)."""
    special: tuple[_Desc, ...]
    fixed_line: _Desc | None
    mobile: _Desc | None


def _compiled(desc: _Desc | None) -> re.Pattern[str] | None:
    return re.compile(desc.python) if desc else None


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
    descs: _RegionDescs
    """The same, as descriptions for a column of numbers."""

    def valid_column(self, digits: pa.Array, lengths: pa.Array) -> np.ndarray:
        """``valid`` for a column of national numbers."""
        general, types = self.descs.general, self.descs.types
        if general is None or not types:
            return np.zeros(len(digits), dtype=bool)
        valid: np.ndarray = general.column(digits, lengths) & _any(types, digits, lengths)
        return valid

    def geographic_column(self, digits: pa.Array, lengths: pa.Array, code: int) -> np.ndarray:
        """:meth:`geographic` for a column of numbers valid in this region."""
        descs = self.descs
        fixed = descs.fixed_line.column(digits, lengths) if descs.fixed_line else np.zeros(len(digits), bool)
        if not self.same_mobile_and_fixed and descs.mobile is not None and code in _GEO_MOBILE_COUNTRIES:
            fixed |= descs.mobile.column(digits, lengths)
        geographic: np.ndarray = fixed & ~_any(descs.special, digits, lengths)
        return geographic

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
        descs = _RegionDescs(
            general=_desc(metadata.general_desc),
            types=tuple(filter(None, (_desc(getattr(metadata, name)) for name in types))),
            special=tuple(filter(None, (_desc(getattr(metadata, name)) for name in _SPECIAL_TYPES))),
            fixed_line=_desc(metadata.fixed_line),
            mobile=_desc(metadata.mobile),
        )
        alternatives = [desc.python for desc in descs.types]
        general = descs.general.python if descs.general else None
        valid = f"(?=(?:{general})\\Z)(?:{'|'.join(alternatives)})" if general and alternatives else "(?!)"
        leading = re.compile(metadata.leading_digits) if metadata.leading_digits else None
        special = [desc.python for desc in descs.special]
        checks.append(
            _RegionCheck(
                region=region,
                leading_digits=leading,
                valid=re.compile(valid),
                special=re.compile("|".join(f"(?:{p})" for p in special)) if special else None,
                fixed_line=_compiled(descs.fixed_line),
                mobile=_compiled(descs.mobile),
                same_mobile_and_fixed=bool(metadata.same_mobile_and_fixed_line_pattern),
                descs=descs,
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
