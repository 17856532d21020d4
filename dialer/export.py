"""Results export: one row per contact (or per attempt), as CSV, XLSX or Parquet.

Rows are read by the database's ADBC driver straight into Arrow columns (no Python object per
value) and written by Arrow: a million results take seconds, not minutes.

CSV and XLSX are for spreadsheets: a text cell that starts with ``= + - @`` (or a tab or carriage
return) is prefixed with ``'`` so it is shown, never run, and timestamps are ISO-8601 UTC text.
Parquet is for programs: values are kept as they are, timestamps as UTC timestamps.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pyarrow import csv as pa_csv
from pyarrow import json as pa_json
from pyarrow import parquet as pq
from sqlmodel import Session, col

from dialer.errors import ConfigurationError
from dialer.files import write_atomically
from dialer.models import Attempt, Campaign, Contact, DtmfAnswer
from dialer.runtime import spec_of
from dialer.sheet import write_sheet

_FORMULA = r"^[=+\-@\t\r]"
_NUMBER = r"^[+-]?\d+(?:\.\d+)?$"
XLSX_MAX_ROWS = 1_048_576
"""Excel's sheet size, the header row included."""

_TYPES = {
    "attempts": pa.int64(),
    "attempt": pa.int64(),
    "duration": pa.int64(),
    "dtmf_valid": pa.bool_(),
    "opted_out": pa.bool_(),
    "transferred": pa.bool_(),
    "transfer_seconds": pa.int64(),
    "message_left": pa.bool_(),
}
"""Every exported column is text except these, and the timestamps (``*_at``)."""
_ONLY_IF_USED = ("extension",)
"""Columns left out of an export where every row's is empty."""


def _answers(campaign: Campaign, owner: Any, *, by_step: bool) -> sa.Subquery:
    """The answers of the campaign's contacts or attempts (``owner``: the answer's column that
    names them), ranked 1 for each owner's (each question's, ``by_step``): its valid one if
    any, else its latest."""
    return (
        sa.select(
            owner.label("owner"),
            col(DtmfAnswer.step),
            col(DtmfAnswer.digits),
            col(DtmfAnswer.choice),
            col(DtmfAnswer.valid),
            col(DtmfAnswer.recording),
            sa.func.row_number()
            .over(
                partition_by=[owner, *([col(DtmfAnswer.step)] if by_step else [])],
                order_by=(
                    col(DtmfAnswer.valid).desc(),
                    col(DtmfAnswer.received_at).desc(),
                    col(DtmfAnswer.id).desc(),
                ),
            )
            .label("rank"),
        )
        .join(Contact, col(Contact.id) == col(DtmfAnswer.contact_id))
        .where(col(Contact.campaign_id) == campaign.id)
        .subquery("answer")
    )


QUESTION_COLUMNS_TAKEN = frozenset(
    {"phone", "extension", "result", "attempts", "last_outcome", "last_reason", "duration", "price"}
    | {"last_called_at", "answered_at", "ended_at", "opted_out", "transferred", "transfer_to"}
    | {"transfer_outcome", "transfer_seconds", "attempt", "outcome", "reason", "provider"}
    | {"provider_call_id", "answered_by", "queued_at", "dispatched_at"}
)
"""The export's own columns: a question named like one is exported as ``answer_<name>``."""


def question_column(step: str) -> str:
    """The export's column of a flow's question: the step's name."""
    return f"answer_{step}" if step in QUESTION_COLUMNS_TAKEN else step


def _answer_columns(
    campaign: Campaign, owner: Any, attempt: Any, owned_by: Any
) -> tuple[sa.Subquery, sa.ColumnElement[bool], list[sa.Label[Any]]]:
    """The answers' columns of a contact's (or an attempt's) row, the subquery they come from
    and how it joins the row (``owned_by``: the row's own id; ``attempt``: the row's attempt).

    A campaign's ``[question]`` gives its keys, choice and validity. A flow gives one column per
    question (the choice's name, else the keys, or a recording's URL), whether the callee opted
    out, and the transfer's number, outcome and length."""
    flow = spec_of(campaign).flow
    if flow is None:
        answer = _answers(campaign, owner, by_step=False)
        columns = [
            answer.c.digits.label("dtmf_digits"),
            answer.c.choice.label("dtmf_choice"),
            answer.c.valid.label("dtmf_valid"),
        ]
        return answer, sa.and_(answer.c.owner == owned_by, answer.c.rank == 1), columns
    ranked = _answers(campaign, owner, by_step=True)
    value = sa.func.coalesce(ranked.c.choice, ranked.c.recording, ranked.c.digits)
    questions = flow.questions()
    answer = (
        sa.select(
            ranked.c.owner,
            *(sa.func.max(sa.case((ranked.c.step == step, value))).label(step) for step in questions),
        )
        .where(ranked.c.rank == 1)
        .group_by(ranked.c.owner)
        .subquery("answers")
    )
    columns = [answer.c[step].label(question_column(step)) for step in questions]
    columns += [
        sa.func.coalesce(col(attempt.opted_out), sa.false()).label("opted_out"),
        col(attempt.transfer_to).is_not(None).label("transferred"),
        col(attempt.transfer_to).label("transfer_to"),
        col(attempt.transfer_status).label("transfer_outcome"),
        col(attempt.transfer_seconds).label("transfer_seconds"),
    ]
    return answer, answer.c.owner == owned_by, columns


def contact_results(session: Session, campaign: Campaign) -> pa.Table:
    """One row per contact, in import order: phone, the CSV's own columns, result, attempts, the
    last attempt's outcome and timing, the contact's answers (:func:`_answer_columns`) and whether a
    message was left on its machine."""
    last = sa.orm.aliased(Attempt)
    answer, joined, answers = _answer_columns(campaign, col(DtmfAnswer.contact_id), last, col(Contact.id))
    table = _read(
        session,
        sa.select(
            col(Contact.phone),
            col(Contact.extension),
            (sa.cast(col(Contact.variables), sa.Text) + "\n").label("variables"),
            sa.func.coalesce(col(Contact.result), col(Contact.state)).label("result"),
            col(Contact.attempts),
            col(last.status).label("last_outcome"),
            col(last.reason).label("last_reason"),
            col(last.duration),
            col(last.price),
            col(last.dispatched_at).label("last_called_at"),
            col(last.answered_at),
            col(last.ended_at),
            *answers,
            *_message_left(
                campaign,
                sa.exists().where(col(Attempt.contact_id) == col(Contact.id), col(Attempt.message_left)),
            ),
        )
        .outerjoin(
            last, sa.and_(col(last.contact_id) == col(Contact.id), col(last.number) == col(Contact.attempts))
        )
        .outerjoin(answer, joined)
        .where(col(Contact.campaign_id) == campaign.id)
        .order_by(col(Contact.id)),  # import order, then file order
    )
    variables = _variables(table["variables"])
    first = [name for name in ("phone", "extension") if name in table.column_names]
    rest = table.drop_columns([*first, "variables"])
    ours = {*first, *rest.column_names}
    # A contact column named like one of ours is kept apart, under a name of its own.
    renamed = {
        name: _apart(name, ours | set(variables.column_names))
        for name in variables.column_names
        if name in ours
    }
    result = pa.table(
        [*(table[name] for name in first), *variables.columns, *rest.columns],
        names=[*first, *(renamed.get(name, name) for name in variables.column_names), *rest.column_names],
    )
    return result.replace_schema_metadata({RENAMED: json.dumps(renamed)}) if renamed else result


RENAMED = "dialer.renamed"
"""Schema metadata of a results table: the contact columns exported under another name, as JSON."""


def _apart(name: str, taken: set[str]) -> str:
    """A name for the contact column ``name`` that none of ``taken`` has: ``contact_<name>``, ..."""
    candidate = f"contact_{name}"
    while candidate in taken:
        candidate = f"contact_{candidate}"
    return candidate


def renamed_columns(table: pa.Table) -> dict[str, str]:
    """The contact columns :func:`contact_results` exported under another name (their old: new)."""
    metadata = table.schema.metadata or {}
    raw = metadata.get(RENAMED.encode())
    return dict(json.loads(raw)) if raw else {}


def attempt_results(session: Session, campaign: Campaign) -> pa.Table:
    """One row per attempt, by contact and attempt number, with its answers (:func:`_answer_columns`)."""
    answer, joined, answers = _answer_columns(campaign, col(DtmfAnswer.attempt_id), Attempt, col(Attempt.id))
    return _read(
        session,
        sa.select(
            col(Contact.phone),
            col(Contact.extension),
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
            *answers,
            *_message_left(campaign, sa.true() == col(Attempt.message_left)),
        )
        .join(Contact, col(Contact.id) == col(Attempt.contact_id))
        .outerjoin(answer, joined)
        .where(col(Attempt.campaign_id) == campaign.id)
        .order_by(col(Attempt.contact_id), col(Attempt.number)),
    )


def _message_left(campaign: Campaign, left: sa.ColumnElement[bool]) -> list[sa.Label[bool]]:
    """``message_left`` (``left``: whether a message was left on a machine), for a campaign that
    leaves one (``on_machine = "leave_message"``)."""
    return [left.label("message_left")] if spec_of(campaign).call.on_machine == "leave_message" else []


def _read(session: Session, query: sa.Select[*tuple[Any, ...]]) -> pa.Table:
    """The query's rows as Arrow columns of the exported types (:data:`_TYPES`); timestamps naive UTC.

    The database's own ADBC driver reads them on a connection of its own, so this sees what is
    committed. SQLite's driver guesses each column's type from its first batch: one batch holds
    every row, so a column empty at the start cannot meet text later.
    """
    engine = session.get_bind().engine
    url = engine.url
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    with _connect(url) as connection, connection.cursor() as cursor:
        if url.get_backend_name() == "sqlite":
            cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(2**30)})
        cursor.execute(sql)
        table = cursor.fetch_arrow_table()
    typed = pa.table(
        [pc.cast(table[name], _type(name)) for name in table.column_names], names=table.column_names
    )
    unused = [
        name
        for name in _ONLY_IF_USED
        if name in typed.column_names and not pc.any(pc.not_equal(typed[name], "")).as_py()
    ]
    return typed.drop_columns(unused)


def _type(name: str) -> pa.DataType:
    return pa.timestamp("us") if name.endswith("_at") else _TYPES.get(name, pa.string())


def _connect(url: sa.URL) -> Any:
    """An ADBC connection to the database at ``url`` (SQLite file or PostgreSQL)."""
    backend = url.get_backend_name()
    if backend == "sqlite" and url.database not in (None, "", ":memory:"):
        import adbc_driver_sqlite.dbapi

        return adbc_driver_sqlite.dbapi.connect(url.database)
    if backend == "postgresql":
        import adbc_driver_postgresql.dbapi

        return adbc_driver_postgresql.dbapi.connect(
            url.set(drivername="postgresql").render_as_string(hide_password=False)
        )
    raise ConfigurationError(f"cannot export from {url.render_as_string()}: use a SQLite file or PostgreSQL")


def _variables(lines: pa.ChunkedArray) -> pa.Table:
    """The contacts' own CSV columns, as text, from their JSON objects (one per line, newline included).

    The lines' characters already lie end to end in Arrow's data buffer: Arrow's JSON reader parses
    that buffer as it is. Its guesses (a column of dates becomes timestamps) are undone by reading
    again with every column named as text.
    """
    if len(lines) == 0:
        return pa.table({})
    text = lines.combine_chunks()
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=width)[text.offset : text.offset + len(text) + 1]
    data = text.buffers()[2][int(offsets[0]) : int(offsets[-1])]
    options = pa_json.ParseOptions(unexpected_field_behavior="infer")
    variables = pa_json.read_json(pa.BufferReader(data), parse_options=options)
    as_text = pa.schema([(name, pa.string()) for name in variables.column_names])
    if any(not (pa.types.is_string(kind) or pa.types.is_null(kind)) for kind in variables.schema.types):
        options = pa_json.ParseOptions(explicit_schema=as_text, unexpected_field_behavior="error")
        variables = pa_json.read_json(pa.BufferReader(data), parse_options=options)
    return variables.cast(as_text)  # columns no contact filled come as nulls of no type


def escape_formulas(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Prefix ``'`` to every text cell a spreadsheet would run as a formula; plain numbers
    (``+14155550100``, ``-12.5``) and other types stay as they are."""
    if not pa.types.is_string(column.type):
        return column
    formula = pc.and_(
        pc.match_substring_regex(column, _FORMULA), pc.invert(pc.match_substring_regex(column, _NUMBER))
    )
    return pc.if_else(formula, pc.binary_join_element_wise("'", column, ""), column)


def _iso(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Naive UTC timestamps as ISO-8601 text to the second (``2026-11-23T15:00:00Z``)."""
    text = pc.cast(pc.cast(column, pa.timestamp("s"), safe=False), pa.string())  # "2026-11-23 15:00:00"
    return pc.binary_join_element_wise(pc.replace_substring(text, " ", "T", max_replacements=1), "Z", "")


def _for_spreadsheets(table: pa.Table, *, dates: bool = False) -> pa.Table:
    """Formula cells escaped (the header's too); timestamps as ISO-8601 UTC text, unless ``dates``
    (a sheet's date cells)."""
    columns = [
        _iso(column) if pa.types.is_timestamp(column.type) and not dates else escape_formulas(column)
        for column in table.columns
    ]
    names = escape_formulas(pa.chunked_array([pa.array(table.column_names, pa.string())])).to_pylist()
    return pa.table(columns, names=names)


def _csv(table: pa.Table, path: Path, *, excel: bool = False) -> None:
    options = pa_csv.WriteOptions(quoting_style="needed")
    with path.open("wb") as out:
        if excel:
            out.write(codecs.BOM_UTF8)  # Excel on Windows reads UTF-8 only when the file says so
        pa_csv.write_csv(_for_spreadsheets(table), out, write_options=options)


def _xlsx(table: pa.Table, path: Path) -> None:
    """One sheet (:func:`dialer.sheet.write_sheet`): text always text, times real date cells."""
    write_sheet(_for_spreadsheets(table, dates=True), path)


def _parquet(table: pa.Table, path: Path) -> None:
    utc = [
        pc.cast(column, pa.timestamp("us", "UTC")) if pa.types.is_timestamp(column.type) else column
        for column in table.columns
    ]
    pq.write_table(pa.table(utc, names=table.column_names), path)


WRITERS: dict[str, Callable[[pa.Table, Path], None]] = {
    ".csv": _csv,
    ".xlsx": _xlsx,
    ".parquet": _parquet,
}


def write_table(table: pa.Table, path: Path, *, excel: bool = False) -> None:
    """Write ``table`` in the format its file extension names (.csv, .xlsx or .parquet); ``excel``:
    a CSV that Excel opens as UTF-8 (it starts with a byte-order mark)."""
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise ConfigurationError(
            f"{path}: unsupported export format {path.suffix!r} (use {', '.join(WRITERS)})"
        )
    if writer is _xlsx and table.num_rows >= XLSX_MAX_ROWS:
        raise ConfigurationError(
            f"{path}: {table.num_rows:,} rows do not fit in one Excel sheet "
            f"(at most {XLSX_MAX_ROWS - 1:,}): export to .csv or .parquet"
        )
    if excel and writer is not _csv:
        raise ConfigurationError(f"{path}: --excel is for .csv files (.xlsx is Excel's own already)")
    write_atomically(
        path, lambda partial: _csv(table, partial, excel=True) if excel else writer(table, partial)
    )
