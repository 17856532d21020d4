"""Who runs a campaign: a lease in the database, renewed while its holder runs, lapsing when it dies.

``dialer run`` holds its campaign's lease for as long as it runs, renewing it every tick; the
deployment's scheduler (beat) holds the lease of every campaign it pumps, as ``workers``. A lease
not renewed for :data:`LEASE_SECONDS` has lapsed: its holder stopped (or was killed) and anyone
may take it. A ``dialer run`` on this host whose process is gone has lapsed at once (a service
restarted after a crash does not wait for it).

The account's rate limit is held per process in ``dialer run`` (no Redis), and shared through Redis
by the workers, so the lease is also the account's: while a ``dialer run`` holds a campaign of an
account, no other ``dialer run`` and no worker dials for that account, and while workers run one,
no ``dialer run`` does.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns.outcomes import CampaignStatus
from dialer.db import Db, changed
from dialer.errors import InvalidState, LeaseLost
from dialer.models import Campaign, UTCDateTime

LEASE_SECONDS = 15.0
"""How long a lease lasts without being renewed (a run renews it every tick, beat every pump)."""
SEND_WINDOW = 5.0
"""A call is claimed only under a lease with at least this long left, and its request leaves
within half of it or not at all (the other half is for connecting and sending; see
:mod:`dialer.dispatch`): a holder stalled past its lease (stopped, swapped out, suspended) places
no call after another has taken the campaign over."""
WORKERS = "the deployment's workers"
"""The holder name of campaigns the Celery deployment runs."""


def this_process() -> str:
    """The holder name of this process's ``dialer run``."""
    return f"dialer run on {socket.gethostname()} (pid {os.getpid()})"


_RUN = re.compile(r"dialer run on (?P<host>.+) \(pid (?P<pid>\d+)\)")


def _gone(holder: str) -> bool:
    """Whether ``holder`` is a ``dialer run`` of this host whose process no longer exists."""
    match = _RUN.fullmatch(holder)
    if match is None or match["host"] != socket.gethostname():
        return False
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # another user's process: alive
    return False


def _drop_gone(session: Db, *, provider: str, now: datetime) -> None:
    """Release the live-looking leases on ``provider``'s campaigns of runs here that have died."""
    names = session.execute(
        sa.select(col(Campaign.runner)).where(col(Campaign.provider) == provider, _live(now)).distinct()
    ).scalars()
    for name in [name for name in names if name and _gone(name)]:
        session.execute(
            sa.update(Campaign)
            .where(col(Campaign.runner) == name)
            .values(runner=None, runner_seen=None, runner_since=None)
        )


@dataclass(frozen=True)
class Holder:
    """Who holds a campaign's lease, since when, and the campaign."""

    name: str
    since: datetime
    campaign: str

    def __str__(self) -> str:
        return f"{self.name} since {self.since:%Y-%m-%d %H:%M:%S} UTC (campaign {self.campaign})"


def _live(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(col(Campaign.runner).is_not(None), col(Campaign.runner_seen) >= now - _ttl())


def _free(now: datetime) -> sa.ColumnElement[bool]:
    """Not :func:`_live` (spelt out: SQL's NOT of a comparison with NULL is NULL, not true)."""
    return sa.or_(
        col(Campaign.runner).is_(None),
        col(Campaign.runner_seen).is_(None),
        col(Campaign.runner_seen) < now - _ttl(),
    )


def _ttl() -> timedelta:
    return timedelta(seconds=LEASE_SECONDS)


def holders(session: Db, *, provider: str, now: datetime, other_than: str) -> list[Holder]:
    """The live leases on ``provider``'s campaigns held by someone else than ``other_than``."""
    rows = session.execute(
        sa.select(col(Campaign.runner), col(Campaign.runner_since), col(Campaign.name)).where(
            col(Campaign.provider) == provider, _live(now), col(Campaign.runner) != other_than
        )
    ).all()
    return [Holder(str(name), since or now, str(campaign)) for name, since, campaign in rows]


def take(session: Session, *, campaign: Campaign, holder: str, now: datetime) -> None:
    """Take (or renew) ``campaign``'s lease for ``holder``; refused, naming who holds it, while
    another live holder runs it or any campaign of its account."""
    _drop_gone(session, provider=campaign.provider, now=now)
    if holder != WORKERS:
        busy = holders(session, provider=campaign.provider, now=now, other_than=holder)
        if busy:
            raise InvalidState(
                f"campaign {campaign.name!r}: {campaign.provider}'s account is being dialled by {busy[0]}:"
                " one process dials for an account at a time (its rate limit is held there);"
                " stop or pause that first, or run both on the deployment's workers"
            )
    taken = changed(
        session,
        sa.update(Campaign)
        .where(
            col(Campaign.id) == campaign.id,
            sa.or_(_free(now), col(Campaign.runner) == holder),
        )
        .values(
            runner=holder,
            runner_seen=now,
            runner_since=sa.case((col(Campaign.runner) == holder, col(Campaign.runner_since)), else_=now),
        ),
    )
    if taken != 1:
        (held,) = holders_of(session, campaign_id=campaign.id or 0)
        raise InvalidState(f"campaign {campaign.name!r} is being run by {held}: stop that first")


def holders_of(session: Db, *, campaign_id: int) -> list[Holder]:
    row = session.execute(
        sa.select(col(Campaign.runner), col(Campaign.runner_since), col(Campaign.name)).where(
            col(Campaign.id) == campaign_id
        )
    ).one()
    return [Holder(*row)] if row[0] else []


def renew(session: Db, *, campaign_ids: list[int], holder: str, now: datetime) -> int:
    """Renew ``holder``'s leases on these campaigns (those it still holds); how many it holds."""
    if not campaign_ids:
        return 0
    return changed(
        session,
        sa.update(Campaign)
        .where(
            col(Campaign.id).in_(campaign_ids),
            col(Campaign.runner) == holder,
            col(Campaign.runner_seen).is_not(None),  # released: a late renewal must not take it back
        )
        .values(runner_seen=now),
    )


def keep(session: Db, *, campaign_id: int, holder: str, now: datetime) -> None:
    """Renew ``holder``'s lease on the campaign, or raise :class:`LeaseLost` naming who took it."""
    if renew(session, campaign_ids=[campaign_id], holder=holder, now=now) != 1:
        held = holders_of(session, campaign_id=campaign_id)
        if not held or held[0].name == holder:
            raise LeaseLost("its lease was released meanwhile")
        since = f" at {held[0].since:%H:%M:%S} UTC" if held[0].since else ""
        raise LeaseLost(f"{held[0].name} took it over{since}")


HELD = sa.and_(
    col(Campaign.runner) == sa.bindparam("holder", type_=sa.String),
    # Typed: an aware datetime bound untyped goes to PostgreSQL as timestamptz, which it compares
    # with the column's zone-less UTC in the session's time zone.
    col(Campaign.runner_seen) >= sa.bindparam("fresh", type_=UTCDateTime()),
)
"""A condition on a campaign row: the lease is ``holder``'s with :data:`SEND_WINDOW` left at
least (its parameters: :func:`held_params`)."""


def held_params(holder: str, now: datetime) -> dict[str, object]:
    return {"holder": holder, "fresh": now - timedelta(seconds=LEASE_SECONDS - SEND_WINDOW)}


def release(session: Db, *, campaign_id: int, holder: str) -> None:
    """Give up ``holder``'s lease on the campaign (if it still holds it); its name stays, as the
    campaign's last runner (:func:`resume_command`)."""
    session.execute(
        sa.update(Campaign)
        .where(col(Campaign.id) == campaign_id, col(Campaign.runner) == holder)
        .values(runner_seen=None)
    )


def meant_for_workers(session: Db, *, campaign: Campaign, now: datetime) -> None:
    """Note that the workers are to run ``campaign`` (started or resumed for them), unless a live
    holder runs it: its last runner, for :func:`resume_command`, before beat takes its lease. The
    operator asked for real calls: it is no longer a campaign only simulated (beat leaves those)."""
    session.execute(
        sa.update(Campaign)
        .where(col(Campaign.id) == campaign.id, _free(now))
        .values(runner=WORKERS, simulated=False)
    )


def resume_command(campaign: Campaign) -> str:
    """The command that carries a stopped campaign on the way it was run: ``dialer run`` (with
    ``--simulate`` if it has only been simulated), or the workers'."""
    run = f"`dialer run {campaign.name}{' --simulate' if campaign.simulated else ''}`"
    workers = f"`dialer campaign resume {campaign.name}` (with the workers running)"
    if campaign.runner == WORKERS:
        return workers
    if campaign.runner:
        return run
    return f"{run} (one process), or {workers}"


def lapsed(campaign: Campaign, now: datetime) -> bool:
    """Whether a running campaign has nobody behind it: no lease renewed within its time."""
    return campaign.status == CampaignStatus.RUNNING and (
        campaign.runner is None
        or campaign.runner_seen is None
        or campaign.runner_seen < now - _ttl()
        or _gone(campaign.runner)
    )


def hold_for_workers(session: Db, *, campaign_ids: list[int], now: datetime) -> None:
    """The workers take (or renew) the leases of the campaigns beat pumps."""
    if campaign_ids:
        session.execute(
            sa.update(Campaign)
            .where(col(Campaign.id).in_(campaign_ids), sa.or_(_free(now), col(Campaign.runner) == WORKERS))
            .values(
                runner=WORKERS,
                runner_seen=now,
                runner_since=sa.case(
                    (col(Campaign.runner) == WORKERS, col(Campaign.runner_since)), else_=now
                ),
            )
        )


def run_held_providers(session: Session, *, now: datetime) -> set[str]:
    """The providers whose account a live ``dialer run`` dials for: the workers leave them alone."""
    return set(
        session.exec(select(col(Campaign.provider)).where(_live(now), col(Campaign.runner) != WORKERS)).all()
    )
