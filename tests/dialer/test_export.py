from __future__ import annotations

import os
import resource
import secrets
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import openpyxl
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from dialer import db, export
from dialer.errors import ConfigurationError, DialerError
from dialer.export import attempt_results, contact_results, write_table
from dialer.models import Campaign, Contact
from tests.dialer.factories import NOW, campaign_with_contacts


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1+1", "'\t=1+1"),
        ("+14155550100", "+14155550100"),
        ("-12.5", "-12.5"),
        ("Ada", "Ada"),
        (3, 3),
    ],
)
def test_formula_cells_are_escaped_but_numbers_stay(value: object, safe: object) -> None:
    column = pa.chunked_array([pa.array([value, None])])
    assert export.escape_formulas(column).to_pylist() == [safe, None]


def test_a_written_csv_carries_the_escaped_cells(tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    write_table(pa.table({"phone": ["+14155550100"], "first_name": ["=1+1"]}), out)
    assert out.read_text().splitlines() == ['"phone","first_name"', '"+14155550100","\'=1+1"']


def test_contact_results_hold_one_row_per_contact_with_its_last_attempt_and_answer(
    url: str, finished: Campaign
) -> None:
    with db.session_scope(url) as session:
        table = contact_results(session, finished).to_pandas()
    assert list(table.columns[:4]) == ["phone", "first_name", "note", "result"]
    rows = table.set_index("phone")
    assert rows.loc[
        "+12125550106", ["result", "attempts", "last_outcome", "duration", "dtmf_choice", "dtmf_valid"]
    ].tolist() == ["dtmf_answered", 2, "completed", 42, "confirm", True]
    assert rows.loc["+12125550106", "ended_at"] == pd.Timestamp(NOW + timedelta(minutes=2)).tz_localize(None)
    assert rows.loc["+12125550100", ["result", "last_outcome"]].tolist() == ["exhausted", "busy"]
    assert rows.loc["+12125550107", "result"] == "pending"
    assert pd.isna(rows.loc["+12125550107", "last_outcome"])


def test_each_format_round_trips_and_spreadsheets_never_see_a_formula(
    url: str, finished: Campaign, tmp_path: Path
) -> None:
    with db.session_scope(url) as session:
        table = contact_results(session, finished)
    for suffix in (".csv", ".xlsx", ".parquet"):
        write_table(table, tmp_path / f"results{suffix}")

    csv = pd.read_csv(tmp_path / "results.csv", dtype=str, keep_default_na=False)
    assert csv["first_name"].tolist() == ['\'=HYPERLINK("http://evil")', "Ben", "Cy"]
    assert csv["note"].tolist() == ["VIP", "", "'-"]
    assert csv["ended_at"].tolist() == ["2026-11-23T15:02:00Z", "2026-11-23T15:01:00Z", ""]

    book = openpyxl.load_workbook(tmp_path / "results.xlsx", read_only=True)
    cells = [list(row) for row in book["results"].iter_rows(values_only=True)]
    book.close()
    assert cells[0] == table.column_names
    assert [row[:4] for row in cells[1:]] == [
        ["+12125550106", '\'=HYPERLINK("http://evil")', "VIP", "dtmf_answered"],
        ["+12125550100", "Ben", None, "exhausted"],  # an empty text cell is a blank cell
        ["+12125550107", "Cy", "'-", "pending"],
    ]
    ended, naive = cells[0].index("ended_at"), NOW.replace(tzinfo=None)  # real date cells, in UTC
    assert [row[ended] for row in cells[1:]] == [
        naive + timedelta(minutes=2),
        naive + timedelta(minutes=1),
        None,
    ]

    parquet = pd.read_parquet(tmp_path / "results.parquet")
    assert parquet["first_name"].tolist()[0] == '=HYPERLINK("http://evil")'  # programs get the value
    assert parquet["ended_at"].iloc[0] == pd.Timestamp(NOW + timedelta(minutes=2))
    assert parquet["duration"].tolist()[0] == 42


def test_attempt_rows_list_every_attempt_in_order(url: str, finished: Campaign) -> None:
    with db.session_scope(url) as session:
        table = attempt_results(session, finished).to_pandas()
    assert table[["phone", "attempt", "outcome", "dtmf_choice"]].fillna("").values.tolist() == [
        ["+12125550106", 1, "busy", ""],
        ["+12125550106", 2, "completed", "confirm"],
        ["+12125550100", 1, "busy", ""],
    ]


def test_a_campaign_without_contacts_exports_an_empty_table(url: str, tmp_path: Path) -> None:
    from campaigns.spec import parse_campaign
    from dialer.operations import create_campaign
    from tests.e2e import campaign_text

    with db.session_scope(url) as session:
        campaign = create_campaign(session, parse_campaign(campaign_text("vonage", 60)))
        table = contact_results(session, campaign)
    assert table.num_rows == 0
    write_table(table, tmp_path / "empty.csv")
    assert (tmp_path / "empty.csv").read_text().startswith('"phone","result"')


def test_the_contacts_own_columns_are_exported_as_the_file_gave_them(url: str, tmp_path: Path) -> None:
    """Arrow's JSON reader would turn a column of date-like text into timestamps, and one in
    which only a later contact has a value must still come out: neither may change a value."""
    campaign = campaign_with_contacts(url, ["+12125550100", "+12125550101"])
    visits = [
        {"visit": "2026-12-01 10:00:00", "code": "007"},
        {"visit": "2026-12-02", "code": "1e3", "late": "=1"},
    ]
    with db.session_scope(url) as session:
        for contact, variables in zip(
            session.scalars(sa.select(Contact).order_by(col(Contact.id))), visits, strict=True
        ):
            contact.variables = variables
    with db.session_scope(url) as session:
        table = contact_results(session, campaign)
    assert table.select(["visit", "code", "late"]).to_pylist() == [
        {"visit": "2026-12-01 10:00:00", "code": "007", "late": None},
        {"visit": "2026-12-02", "code": "1e3", "late": "=1"},
    ]
    write_table(table, tmp_path / "results.csv")
    csv = pd.read_csv(tmp_path / "results.csv", dtype=str, keep_default_na=False)
    assert csv[["visit", "code", "late"]].values.tolist() == [
        ["2026-12-01 10:00:00", "007", ""],
        ["2026-12-02", "1e3", "'=1"],
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("results.json", "{path}: unsupported export format '.json' (use .csv, .xlsx, .parquet)"),
        ("missing/results.csv", "{path}: no such directory '{parent}'"),
    ],
)
def test_an_unusable_output_path_is_refused(tmp_path: Path, name: str, message: str) -> None:
    path = tmp_path / name
    with pytest.raises(DialerError) as caught:
        write_table(pa.table({"phone": ["+14155550100"]}), path)
    assert str(caught.value) == message.format(path=path, parent=path.parent)
    assert not path.exists()


def test_a_table_larger_than_a_sheet_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "XLSX_MAX_ROWS", 3)
    path = tmp_path / "big.xlsx"
    with pytest.raises(ConfigurationError, match=r"3 rows do not fit in one Excel sheet \(at most 2\)"):
        write_table(pa.table({"phone": ["+14155550100"] * 3}), path)
    assert not path.exists()


def test_a_header_that_is_a_formula_is_escaped_too(tmp_path: Path) -> None:
    out, xlsx = tmp_path / "results.csv", tmp_path / "results.xlsx"
    table = pa.table({"phone": ["+14155550100"], '=HYPERLINK("http://evil","x")': ["fine"]})
    write_table(table, out)
    write_table(table, xlsx)
    assert out.read_text().splitlines()[0] == '"phone","\'=HYPERLINK(""http://evil"",""x"")"'
    header = next(openpyxl.load_workbook(xlsx).active.iter_rows(values_only=True))
    assert header == ("phone", '\'=HYPERLINK("http://evil","x")')


def test_contact_columns_named_like_the_results_own_are_kept_apart(url: str, tmp_path: Path) -> None:
    campaign = campaign_with_contacts(url, ["+12125550106"])
    with db.session_scope(url) as session:
        session.execute(
            sa.update(Contact).values(
                variables={"result": "won the lottery", "attempts": "3 by hand", "note": "x"}
            )
        )
    with db.session_scope(url) as session:
        table = contact_results(session, campaign)
    out = tmp_path / "results.parquet"
    write_table(table, out)
    read = pd.read_parquet(out)  # refused the file before: two columns named "result"
    assert list(read.columns[:4]) == ["phone", "contact_result", "contact_attempts", "note"]
    assert read.loc[0, ["contact_result", "result", "attempts"]].tolist() == ["won the lottery", "pending", 0]
    assert export.renamed_columns(table) == {"result": "contact_result", "attempts": "contact_attempts"}


def test_an_excel_csv_starts_with_a_byte_order_mark(tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    write_table(pa.table({"phone": ["+14155550100"], "city": ["Zürich"]}), out, excel=True)
    assert out.read_bytes().startswith(b'\xef\xbb\xbf"phone"')
    assert pd.read_csv(out, encoding="utf-8-sig")["city"].tolist() == ["Zürich"]
    with pytest.raises(ConfigurationError, match=r"--excel is for \.csv files"):
        write_table(pa.table({"phone": ["+1"]}), tmp_path / "results.xlsx", excel=True)


def _limited(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child: writes past ``limit`` bytes fail as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".parquet"])
def test_an_export_that_cannot_be_written_leaves_the_previous_file_whole(
    url: str, finished: Campaign, tmp_path: Path, suffix: str
) -> None:
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / f"results{suffix}"
    env = {**os.environ, "DIALER_DATABASE_URL": url}
    command = [sys.executable, "-m", "dialer", "export", "e2e", "--out", str(out)]
    assert subprocess.run(command, env=env, capture_output=True, check=False).returncode == 0
    before = out.read_bytes()
    with db.session_scope(url) as session:  # more rows than fit in what the disk has left
        contact = session.exec(select(Contact).where(col(Contact.campaign_id) == finished.id)).first()
        assert contact is not None
        contact.variables = contact.variables | {"note": secrets.token_hex(2000)}  # compressed too
    failed = subprocess.run(
        command, env=env, capture_output=True, text=True, check=False, preexec_fn=_limited(len(before) + 512)
    )
    assert failed.returncode == 1
    assert failed.stderr == f"Error: {out}: cannot be written: File too large\n"  # one line, no traceback
    assert out.read_bytes() == before
    assert [path.name for path in out.parent.iterdir()] == [out.name]  # no partial file left
