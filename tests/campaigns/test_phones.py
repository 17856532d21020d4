from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import phonenumbers
import pytest

from campaigns.phones import InvalidPhone, Normaliser, normalise, time_zones, zones_of


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


def _answer(function: Callable[[str], str | None], raw: str) -> str | None:
    try:
        return function(raw)
    except InvalidPhone as error:
        return f"invalid: {error}"


def _corpus() -> Iterator[tuple[str, str | None]]:
    """Every region's example numbers, written the ways files write them, and slightly broken."""
    shuffle = random.Random(20261123)
    formats = (
        phonenumbers.PhoneNumberFormat.E164,
        phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        phonenumbers.PhoneNumberFormat.NATIONAL,
    )
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in phonenumbers.PhoneNumberType.values():
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            for number_format in formats:
                written = phonenumbers.format_number(example, number_format)
                digits = [i for i, c in enumerate(written) if c.isdigit()]
                position = shuffle.choice(digits[-6:])
                variants = [
                    written,
                    written.replace("+", "00", 1),
                    written[:position] + str((int(written[position]) + 1) % 10) + written[position + 1 :],
                    written[:position] + written[position + 1 :],
                    written + str(shuffle.randrange(10)),
                ]
                for raw in variants:
                    yield raw, region if number_format == phonenumbers.PhoneNumberFormat.NATIONAL else None
                    yield raw, shuffle.choice(("US", "GB", "DE", "FR", "IT", "AR", "BR", "AU", "IN"))


def test_the_normaliser_agrees_with_phonenumbers_everywhere() -> None:
    corpus = list(_corpus())
    assert len(corpus) > 20_000
    valid = quick = 0
    for raw, region in corpus:
        normaliser = Normaliser(region)
        expected = _answer(normaliser.slow, raw)
        assert expected is not None
        assert _answer(normaliser, raw) == expected, (raw, region)
        shortcut = _answer(normaliser.fast, raw)
        assert shortcut is None or shortcut == expected, (raw, region)
        valid += expected.startswith("+")
        quick += shortcut is not None and shortcut.startswith("+")
    # The shortcut is what makes a million-row import fast: it must carry most valid numbers.
    assert quick > 0.8 * valid


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("+1 (415) 555-2671", None),
        ("(212) 555-2671", "US"),
        ("0044 20 7946 0123", None),
        ("020 7946 0123", "GB"),
        ("+44 (0) 20 7946 0123", None),
        ("+49 30 12345678", None),
        ("01 23 45 67 89", "FR"),
    ],
)
def test_common_shapes_take_the_shortcut(raw: str, region: str | None) -> None:
    assert Normaliser(region).fast(raw) == normalise(raw, region)


def test_the_shortcut_refuses_an_invalid_number_with_phonenumbers_reason() -> None:
    with pytest.raises(InvalidPhone, match=r"^not a valid number for its country$"):
        Normaliser().fast("+1 011 555 0100")


@pytest.mark.parametrize(
    ("raw", "region", "number"),
    [
        ("(650) 253-0000 x123", "US", ("+16502530000", "123")),
        ("+1 650 253 0000 ext. 456", None, ("+16502530000", "456")),
        ("+44 20 7946 0018 #7", None, ("+442079460018", "7")),
        ("+1 650 253 0000", None, ("+16502530000", "")),
    ],
)
def test_an_extension_is_kept_apart_from_the_number(
    raw: str, region: str | None, number: tuple[str, str]
) -> None:
    found = Normaliser(region).number(raw)
    assert (found.e164, found.extension) == number
    assert normalise(raw, region) == number[0]


def test_zones_of_agrees_with_phonenumbers_for_every_valid_number() -> None:
    checked = 0
    for raw, region in _corpus():
        try:
            e164 = normalise(raw, region)
        except InvalidPhone:
            continue
        assert zones_of(e164) == time_zones(e164), e164
        assert Normaliser(region).number(raw)[:2] == (e164, zones_of(e164)), (raw, region)
        checked += 1
    assert checked > 5_000


def _one_by_one(normaliser: Normaliser, raw: str) -> tuple[str | None, str, str, str | None]:
    try:
        found = normaliser.number(raw)
    except InvalidPhone as error:
        return None, "", "", str(error)
    return found.e164, " ".join(found.zones), found.extension, None


def test_a_column_of_numbers_gets_the_answers_each_number_gets_alone() -> None:
    """``numbers`` decides a column by Arrow: every region's examples, odd shapes and random
    strings of digits and separators get exactly what ``number`` gives each, refusals included."""
    shuffle = random.Random(20261205)
    columns: dict[str | None, list[str]] = {}
    for raw, region in _corpus():
        columns.setdefault(region, []).append(raw)
    odd = ["", " ", "+", "00", "0 044 20 7946 0123", "00 +44", "+1 011 555 0100", "\x1c+14155550100"]
    odd += ["+1\u00a0415 555 0100", "(650) 253-0000 x123", "+999 1234", "+8001234567", "1 415 555 0100"]
    starts = ["+1", "+44", "0044", "+49", "+33", "+7", "+86", "+61", "0", "00", "1", "011", "", "+"]
    for region in (None, "US", "GB", "JE", "FR", "AR", "AU", "MX"):
        columns.setdefault(region, []).extend(odd)
        for _ in range(3000):
            body = "".join(shuffle.choice("0123456789" * 4 + " -().") for _ in range(shuffle.randint(0, 14)))
            columns[region].append(shuffle.choice(("", " ")) + shuffle.choice(starts) + body)
    checked = 0
    for region, raws in columns.items():
        normaliser = Normaliser(region)
        column = normaliser.numbers(raws)
        for position, raw in enumerate(raws):
            expected = _one_by_one(normaliser, raw)
            e164 = column.e164[position]
            got = (e164, "", "", column.refused.get(position))
            if e164 is not None:
                got = (e164, column.zones[position], column.extensions[position], None)
            assert got == expected, (raw, region)
            checked += 1
    assert checked > 60_000
