"""The XLSX writer, read back by openpyxl (and each part parsed as XML)."""

from __future__ import annotations

import math
import re
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree

import openpyxl
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from dialer.sheet import _letters, write_sheet


def _read(path: Path) -> list[tuple[object, ...]]:
    """The sheet's rows, text as Excel reads it: openpyxl leaves the ``_xHHHH_`` escapes of inline
    strings (ECMA-376 Part 1, 22.9.2.19 ST_Xstring) as they are written, so they are undone here."""
    book = openpyxl.load_workbook(path, read_only=True)
    try:
        assert book.sheetnames == ["results"]
        return [
            tuple(_ESCAPE.sub(lambda m: chr(int(m[1], 16)), v) if isinstance(v, str) else v for v in row)
            for row in book["results"].iter_rows(values_only=True)
        ]
    finally:
        book.close()


_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def test_every_type_becomes_its_cell_and_every_part_is_well_formed_xml(tmp_path: Path) -> None:
    when = datetime(2026, 12, 4, 20, 15, 7, 250_000)
    table = pa.table(
        {
            "text": ["a & b <c>", "bell\x07 tab\t", "_x0041_ stays", "  spaces  ", "", None],
            "count": pa.array([1, -2, 3_000_000_000, 0, None, 7], pa.int64()),
            "ratio": pa.array([0.5, math.nan, math.inf, -1.25, None, 3.0]),
            "flag": pa.array([True, False, None, True, False, True]),
            "at": pa.array([when, None, when, when, when, when], pa.timestamp("us")),
        }
    )
    path = tmp_path / "results.xlsx"
    write_sheet(table, path)
    with zipfile.ZipFile(path) as package:
        for part in package.namelist():
            ElementTree.fromstring(package.read(part))  # raises on anything malformed
    rows = _read(path)
    assert rows[0] == ("text", "count", "ratio", "flag", "at")
    assert rows[1] == ("a & b <c>", 1, 0.5, True, when)
    assert rows[2] == ("bell\x07 tab\t", -2, None, False, None)  # NaN has no cell
    assert rows[3] == ("_x0041_ stays", 3_000_000_000, None, None, when)
    assert rows[4] == ("  spaces  ", 0, -1.25, True, when)
    assert rows[5] == (None, None, None, False, when)  # empty text is a blank cell
    assert rows[6] == (None, 7, 3, True, when)
    book = openpyxl.load_workbook(path)
    assert book["results"]["E2"].number_format == 'yyyy-mm-dd hh:mm:ss "UTC"'
    assert book["results"]["A1"].font.b and book["results"].freeze_panes == "A2"


def test_columns_past_z_and_a_header_with_markup(tmp_path: Path) -> None:
    assert [_letters(n) for n in (0, 25, 26, 51, 52, 701, 702)] == ["A", "Z", "AA", "AZ", "BA", "ZZ", "AAA"]
    names = [f"c{n}" for n in range(29)] + ["<b>&"]
    path = tmp_path / "wide.xlsx"
    write_sheet(pa.table({name: [str(n)] for n, name in enumerate(names)}), path)
    assert _read(path) == [tuple(names), tuple(str(n) for n in range(30))]


def test_an_empty_table_is_a_header_alone(tmp_path: Path) -> None:
    path = tmp_path / "empty.xlsx"
    write_sheet(pa.table({"phone": pa.array([], pa.string())}), path)
    assert _read(path) == [("phone",)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12), max_size=8))
def test_any_text_reads_back_as_written(texts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.xlsx"
        write_sheet(pa.table({"text": pa.array(texts, pa.string())}), path)
        assert [row[0] for row in _read(path)[1:]] == [text or None for text in texts]
