from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dialer.export import escape_cell, write_table


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("+14155550100", "+14155550100"),
        ("-12.5", "-12.5"),
        ("Ada", "Ada"),
        (3, 3),
    ],
)
def test_formula_cells_are_escaped_but_numbers_stay(value: object, safe: object) -> None:
    assert escape_cell(value) == safe


def test_a_written_csv_carries_the_escaped_cells(tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    write_table(pd.DataFrame({"phone": ["+14155550100"], "first_name": ["=1+1"]}), out)
    assert out.read_text().splitlines() == ["phone,first_name", "+14155550100,'=1+1"]
