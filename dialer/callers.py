"""Which caller ID a call goes out from: the campaign's pool, in turn or matched to the callee's
area, none used more than ``per_day`` times in 24 hours (carriers label numbers that dial too much
as spam)."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import col

from campaigns.phones import area
from campaigns.spec import CampaignSpec
from dialer.db import Db
from dialer.models import Attempt

DAY = timedelta(hours=24)


def preferred(spec: CampaignSpec, *, to: str, turn: int) -> list[str]:
    """The campaign's caller IDs for a call to ``to``, best first: the pool from the ``turn``-th on
    (``rotate``), or those of the callee's country and area code, then the campaign's ``caller_id``
    (``local``)."""
    pool = spec.caller_pool
    if spec.caller_ids.choose == "local":
        here = area(to)
        return [number for number in pool if area(number) == here and number != spec.caller_id] + [
            spec.caller_id
        ]
    start = turn % len(pool)
    return [*pool[start:], *pool[:start]]


def choose(
    db: Db, spec: CampaignSpec, *, to: str, turn: int, now: datetime
) -> tuple[str | None, datetime | None]:
    """The caller ID for this call, or (None, when one is free again) when every one it may use
    has made ``per_day`` calls in the last 24 hours."""
    candidates = preferred(spec, to=to, turn=turn)
    cap = spec.caller_ids.per_day
    if cap is None:
        return candidates[0], None
    used = dict(
        db.execute(
            sa.select(col(Attempt.caller_id), sa.func.count())
            .where(col(Attempt.caller_id).in_(candidates), col(Attempt.dispatched_at) > now - DAY)
            .group_by(col(Attempt.caller_id))
        ).all()
    )
    for number in candidates:
        if used.get(number, 0) < cap:
            return number, None
    oldest = db.scalar(
        sa.select(sa.func.min(col(Attempt.dispatched_at))).where(
            col(Attempt.caller_id).in_(candidates), col(Attempt.dispatched_at) > now - DAY
        )
    )
    return None, (oldest or now) + DAY
