"""Results export: one row per contact (or per attempt), safe to open in a spreadsheet."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlmodel import Session, col

from dialer.errors import ConfigurationError
from dialer.models import Attempt, Campaign, Contact, DtmfAnswer

_FORMULA = re.compile(r"^[=+\-@\t\r]")
_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


def escape_cell(value: object) -> object:
    """Prefix ``'`` to text a spreadsheet would run as a formula; plain numbers (+1415…) stay."""
    if isinstance(value, str) and _FORMULA.match(value) and not _NUMBER.match(value):
        return "'" + value
    return value


def _tidy(table: pd.DataFrame) -> pd.DataFrame:
    """Whole seconds and ISO-8601 UTC timestamps, as a spreadsheet reads them."""
    for column in table.columns:
        if column == "duration":
            table[column] = table[column].astype("Int64")
        elif column.endswith("_at"):
            stamps = pd.to_datetime(table[column], utc=True)
            table[column] = stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ").where(stamps.notna(), None)
    return table


def contact_results(session: Session, campaign: Campaign) -> pd.DataFrame:
    """One row per contact: phone, the CSV's own columns, result, attempts, last outcome, DTMF, timing."""
    last = sa.orm.aliased(Attempt)
    rows = session.execute(
        sa.select(
            col(Contact.id),
            col(Contact.row_number),
            col(Contact.phone),
            col(Contact.variables),
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
        .order_by(col(Contact.row_number))
    ).all()
    base = pd.DataFrame(rows, columns=list(rows[0]._fields) if rows else [])
    if base.empty:
        return base
    answers = pd.DataFrame(
        session.execute(
            sa.select(
                col(DtmfAnswer.contact_id),
                col(DtmfAnswer.digits),
                col(DtmfAnswer.choice),
                col(DtmfAnswer.valid),
                col(DtmfAnswer.received_at),
            )
            .join(Contact, col(Contact.id) == col(DtmfAnswer.contact_id))
            .where(col(Contact.campaign_id) == campaign.id)
        ).all(),
        columns=["id", "dtmf_digits", "dtmf_choice", "dtmf_valid", "received_at"],
    )
    if not answers.empty:
        answers = (
            answers.sort_values(["dtmf_valid", "received_at"])
            .drop_duplicates("id", keep="last")
            .drop(columns="received_at")
        )
    variables = pd.DataFrame(base["variables"].tolist(), index=base.index)
    table = pd.concat(
        [base[["id", "phone"]], variables, base.drop(columns=["id", "phone", "variables"])], axis=1
    )
    table = (
        table.merge(answers, on="id", how="left")
        if not answers.empty
        else table.assign(dtmf_digits=None, dtmf_choice=None, dtmf_valid=None)
    )
    table["result"] = table["result"].fillna(table["state"])
    return _tidy(table.drop(columns=["id", "state", "row_number"]))


def attempt_results(session: Session, campaign: Campaign) -> pd.DataFrame:
    """One row per attempt."""
    rows = session.execute(
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
        .order_by(col(Contact.row_number), col(Attempt.number))
    ).all()
    return _tidy(pd.DataFrame(rows, columns=list(rows[0]._fields) if rows else []))


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write CSV (other formats follow the file's extension)."""
    safe = table.apply(
        lambda column: (
            column.map(escape_cell)
            if column.dtype == object or pd.api.types.is_string_dtype(column)
            else column
        )
    )
    suffix = path.suffix.lower()
    if suffix == ".csv":
        safe.to_csv(path, index=False)
    else:
        raise ConfigurationError(f"{path}: unsupported export format {suffix!r} (use .csv)")
