"""Results export: one row per contact (or per attempt), as CSV, XLSX or Parquet.

CSV and XLSX are for spreadsheets: a text cell that starts with ``= + - @`` (or a tab or carriage
return) is prefixed with ``'`` so it is shown, never run, and timestamps are ISO-8601 UTC text.
Parquet is for programs: values are kept as they are, timestamps as UTC timestamps.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from pyarrow import csv as pa_csv
from pyarrow import json as pa_json
from sqlmodel import Session, col

from dialer.errors import ConfigurationError
from dialer.models import Attempt, Campaign, Contact, DtmfAnswer

_FORMULA = r"^[=+\-@\t\r]"
_NUMBER = r"^[+-]?\d+(?:\.\d+)?$"
XLSX_MAX_ROWS = 1_048_576
"""Excel's sheet size, the header row included."""


def escape_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """Prefix ``'`` to every text cell a spreadsheet would run as a formula; plain numbers
    (``+14155550100``, ``-12.5``) stay. One pass finds the few cells that start like a formula;
    only those are checked for being numbers."""
    escaped = {}
    for name, column in table.items():
        if column.dtype != object and not pd.api.types.is_string_dtype(column):
            continue
        try:
            suspects = column[column.str.match(_FORMULA, na=False)]
        except AttributeError:  # an object column without text
            continue
        formulas = suspects[~suspects.str.match(_NUMBER, na=False)]
        if not formulas.empty:
            escaped[name] = column.mask(column.index.isin(formulas.index), "'" + formulas.astype(str))
    return table.assign(**escaped) if escaped else table


def _times(table: pd.DataFrame) -> pd.DataFrame:
    """Timestamps (``*_at`` columns, stored as naive UTC) as UTC datetimes; durations as whole seconds."""
    for column in table.columns:
        if column == "duration":
            table[column] = table[column].astype("Int64")
        elif column.endswith("_at"):
            table[column] = pd.to_datetime(table[column], utc=True, format="ISO8601")
    return table


def _frame(session: Session, query: sa.Select[*tuple[Any, ...]]) -> pd.DataFrame:
    """The query's rows as a frame, read straight from the database driver.

    A million rows through the ORM's row objects cost some twenty seconds; raw tuples, about
    two. Values come as the driver gives them (timestamps as text on SQLite): see :func:`_times`.
    """
    connection = session.connection()
    sql = str(query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql)
        columns = [description[0] for description in cursor.description]
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return pd.DataFrame(rows, columns=columns)


def _variables(texts: pd.Series) -> pd.DataFrame:
    """The contacts' own CSV columns, from their JSON text, parsed by Arrow in one go."""
    if texts.empty:
        return pd.DataFrame(index=texts.index)
    lines = io.BytesIO("\n".join(texts.tolist()).encode())
    options = pa_json.ParseOptions(unexpected_field_behavior="infer")
    variables = pa_json.read_json(lines, parse_options=options).to_pandas()
    variables.index = texts.index
    return variables


def contact_results(session: Session, campaign: Campaign) -> pd.DataFrame:
    """One row per contact: phone, the CSV's own columns, result, attempts, last outcome, DTMF, timing."""
    last = sa.orm.aliased(Attempt)
    base = _frame(
        session,
        sa.select(
            col(Contact.id),
            col(Contact.phone),
            sa.cast(col(Contact.variables), sa.Text).label("variables"),
            col(Contact.state),
            col(Contact.result),
            col(Contact.attempts),
            col(last.status).label("last_outcome"),
            col(last.reason).label("last_reason"),
            col(last.duration),
            col(last.price),
            col(last.dispatched_at).label("last_called_at"),
            col(last.answered_at),
            col(last.ended_at),
        )
        .outerjoin(
            last, sa.and_(col(last.contact_id) == col(Contact.id), col(last.number) == col(Contact.attempts))
        )
        .where(col(Contact.campaign_id) == campaign.id)
        .order_by(col(Contact.id)),  # import order, then file order
    )
    # The contact's answer: its valid one if any, else its latest.
    answers = _frame(
        session,
        sa.select(
            col(DtmfAnswer.contact_id).label("id"),
            col(DtmfAnswer.digits).label("dtmf_digits"),
            col(DtmfAnswer.choice).label("dtmf_choice"),
            col(DtmfAnswer.valid).label("dtmf_valid"),
        )
        .join(Contact, col(Contact.id) == col(DtmfAnswer.contact_id))
        .where(col(Contact.campaign_id) == campaign.id)
        .order_by(col(DtmfAnswer.valid), col(DtmfAnswer.received_at)),
    ).drop_duplicates("id", keep="last")
    table = pd.concat(
        [
            base[["id", "phone"]],
            _variables(base["variables"]),
            base.drop(columns=["id", "phone", "variables"]),
        ],
        axis=1,
    )
    table = table.merge(answers, on="id", how="left")
    table["result"] = table["result"].fillna(table["state"])
    table["dtmf_valid"] = table["dtmf_valid"].astype("boolean")  # SQLite gives 0/1
    return _times(table.drop(columns=["id", "state"]))


def attempt_results(session: Session, campaign: Campaign) -> pd.DataFrame:
    """One row per attempt."""
    return _times(
        _frame(
            session,
            sa.select(
                col(Contact.phone),
                col(Attempt.number).label("attempt"),
                col(Attempt.status).label("outcome"),
                col(Attempt.reason),
                col(Attempt.provider),
                col(Attempt.provider_call_id),
                col(Attempt.answered_by),
                col(Attempt.duration),
                col(Attempt.price),
                col(Attempt.queued_at),
                col(Attempt.dispatched_at),
                col(Attempt.answered_at),
                col(Attempt.ended_at),
                col(DtmfAnswer.digits).label("dtmf_digits"),
                col(DtmfAnswer.choice).label("dtmf_choice"),
            )
            .join(Contact, col(Contact.id) == col(Attempt.contact_id))
            .outerjoin(DtmfAnswer, col(DtmfAnswer.attempt_id) == col(Attempt.id))
            .where(col(Attempt.campaign_id) == campaign.id)
            .order_by(col(Attempt.contact_id), col(Attempt.number)),
        )
    )


def _iso(column: pd.Series) -> pd.Series:
    """UTC timestamps as ISO-8601 text to the second (``2026-11-23T15:00:00Z``); missing stay missing."""
    seconds = column.dt.tz_localize(None).to_numpy("datetime64[s]")
    text = pd.Series(np.datetime_as_string(seconds, unit="s"), index=column.index, dtype="str") + "Z"
    return text.mask(column.isna())


def _for_spreadsheets(table: pd.DataFrame) -> pd.DataFrame:
    """Formula cells escaped, timestamps as ISO-8601 UTC text."""
    stamps = {
        name: _iso(column) for name, column in table.items() if isinstance(column.dtype, pd.DatetimeTZDtype)
    }
    return escape_formulas(table.assign(**stamps))


def _csv(table: pd.DataFrame, path: Path) -> None:
    arrow = pa.Table.from_pandas(_for_spreadsheets(table), preserve_index=False)
    pa_csv.write_csv(arrow, path, write_options=pa_csv.WriteOptions(quoting_style="needed"))


def _xlsx(table: pd.DataFrame, path: Path) -> None:
    """One sheet, streamed row by row; text is always written as text, never as a formula."""
    import xlsxwriter

    if len(table) >= XLSX_MAX_ROWS:
        raise ConfigurationError(
            f"{path}: {len(table):,} rows do not fit in one Excel sheet "
            f"(at most {XLSX_MAX_ROWS - 1:,}): export to .csv or .parquet"
        )
    safe = _for_spreadsheets(table).astype(object)
    options = {
        "constant_memory": True,
        "strings_to_formulas": False,
        "strings_to_urls": False,
        "strings_to_numbers": False,
    }
    with xlsxwriter.Workbook(str(path), options) as book:
        sheet = book.add_worksheet("results")
        sheet.write_row(0, 0, [str(name) for name in safe.columns], book.add_format({"bold": True}))
        for row, values in enumerate(safe.where(safe.notna(), None).itertuples(index=False), start=1):
            sheet.write_row(row, 0, values)


def _parquet(table: pd.DataFrame, path: Path) -> None:
    table.to_parquet(path, index=False)


WRITERS: dict[str, Callable[[pd.DataFrame, Path], None]] = {
    ".csv": _csv,
    ".xlsx": _xlsx,
    ".parquet": _parquet,
}


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write ``table`` in the format its file extension names (.csv, .xlsx or .parquet)."""
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise ConfigurationError(
            f"{path}: unsupported export format {path.suffix!r} (use {', '.join(WRITERS)})"
        )
    if not path.parent.is_dir():
        raise ConfigurationError(f"{path}: no such directory {str(path.parent)!r}")
    writer(table, path)
