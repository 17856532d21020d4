"""The pump that turns due contacts into queued attempts, and the sweeper that settles stalled ones.

Both read the truth from the database, so losing every broker message loses no contact: the
sweeper re-enqueues attempts left ``queued`` and looks up (or gives up on) attempts whose result
never arrived.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns.outcomes import LIVE, AttemptStatus, CampaignStatus, ContactResult, ContactState
from campaigns.spec import CampaignSpec
from dialer import lease, notify
from dialer.db import changed, session_scope
from dialer.dispatch import through_gate
from dialer.errors import ConfigurationError, ProviderError
from dialer.models import Attempt, Campaign, Contact, DncEntry
from dialer.operations import route_around, route_back
from dialer.providers import PROVIDERS, get_provider
from dialer.providers.base import RING_SECONDS, Provider
from dialer.recorder import apply_event, apply_held, finish
from dialer.runtime import Runtime, spec_of
from dialer.settings import Settings
from dialer.zones import assign_groups, open_groups

log = logging.getLogger("dialer.scheduler")

LOOKAHEAD = 2.0
"""Seconds of each provider's budget kept queued ahead of the workers."""
LONGEST_CALL = timedelta(minutes=10)
"""A call's longest life when its campaign sets no ``call.max_duration``, before its recordings'
longest and an hour for a transfer are added."""
TRANSFER_LONGEST = timedelta(hours=1)
LONGEST_EVER = timedelta(days=1)
"""No call lasts longer (Vonage's ``length_timer`` at most): a look-up saying otherwise is not believed."""
_LIVE = [status.value for status in LIVE]


def _count(session: Session, *conditions: sa.ColumnElement[bool]) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(Attempt).where(*conditions)) or 0


@dataclass(frozen=True)
class NumberCap:
    """At most ``calls`` attempts to one number in ``days``, whatever campaign places them."""

    calls: int
    days: float

    @classmethod
    def of(cls, settings: Settings) -> NumberCap | None:
        return None if settings.number_cap is None else cls(settings.number_cap, settings.number_cap_days)

    def held(self, session: Session, phones: Sequence[str], *, now: datetime) -> dict[str, datetime]:
        """The numbers of ``phones`` called ``calls`` times in the last ``days``, with when the
        oldest of those calls leaves the span (they may be called again then)."""
        span = timedelta(days=self.days)
        rows = session.execute(
            sa.select(col(Attempt.phone), sa.func.min(col(Attempt.queued_at)))
            .where(col(Attempt.phone).in_(set(phones)), col(Attempt.queued_at) > now - span)
            .group_by(col(Attempt.phone))
            .having(sa.func.count() >= self.calls)
        ).all()
        return {str(phone): first + span for phone, first in rows}


def claim_due(
    session: Session,
    *,
    campaign: Campaign,
    spec: CampaignSpec,
    limit: int,
    now: datetime,
    simulated: bool = False,
    cap: NumberCap | None = None,
) -> list[int]:
    """Turn up to ``limit`` due, in-window contacts into queued attempts; return the attempt ids.

    The window is checked once per zone group, and contacts are read only from the groups whose
    window is open, the earliest due first: contacts waiting for their window cost nothing, however
    many they are. Numbers on the DNC list are finished as ``dnc``; numbers called as often as the
    ``cap`` allows (by any campaign) wait until it allows them again.
    """
    campaign_id = campaign.id or 0
    assign_groups(session, campaign_id=campaign_id)  # contacts written without a group, if any
    groups = open_groups(session, campaign_id=campaign_id, window=spec.window, now=now)
    claimed: list[int] = []
    for _ in range(10):
        wanted = limit - len(claimed)
        if wanted <= 0 or not groups:
            break
        candidates = _due(session, campaign_id=campaign_id, groups=groups, limit=wanted, now=now)
        if not candidates:
            break
        blocked = set(
            session.exec(
                select(col(DncEntry.phone)).where(
                    col(DncEntry.phone).in_([phone for _, phone in candidates]),
                    (col(DncEntry.campaign_id) == campaign_id) | (col(DncEntry.campaign_id).is_(None)),
                )
            ).all()
        )
        if blocked:
            finished = session.scalars(
                sa.update(Contact)
                .where(
                    col(Contact.id).in_([contact_id for contact_id, phone in candidates if phone in blocked]),
                    col(Contact.state) == ContactState.PENDING,
                )
                .values(state=ContactState.DONE, result=ContactResult.DNC, updated_at=now)
                .returning(col(Contact.id))
            ).all()
            notify.contacts_finished(
                session, spec, campaign_id=campaign_id, contact_ids=[i for i in finished if i], now=now
            )
        held = cap.held(session, [phone for _, phone in candidates], now=now) if cap else {}
        for phone, allowed in held.items():
            session.execute(
                sa.update(Contact)
                .where(
                    col(Contact.id).in_([contact_id for contact_id, number in candidates if number == phone]),
                    col(Contact.state) == ContactState.PENDING,
                )
                .values(next_attempt_at=allowed, updated_at=now)
            )
        phones = dict(candidates)
        callable_ids = [
            contact_id for contact_id, phone in candidates if phone not in blocked and phone not in held
        ]
        if callable_ids:
            rows = session.execute(
                sa.update(Contact)
                .where(col(Contact.id).in_(callable_ids), col(Contact.state) == ContactState.PENDING)
                .values(state=ContactState.CALLING, attempts=col(Contact.attempts) + 1, updated_at=now)
                .returning(col(Contact.id), col(Contact.attempts))
            ).all()
            if rows:
                ids = session.scalars(
                    sa.insert(Attempt).returning(col(Attempt.id), sort_by_parameter_order=True),
                    [
                        {
                            "campaign_id": campaign_id,
                            "contact_id": contact_id,
                            "number": number,
                            "provider": campaign.provider,
                            "status": AttemptStatus.QUEUED.value,
                            "callback_token": secrets.token_urlsafe(24),
                            "simulated": simulated,
                            "phone": phones[contact_id],
                            "queued_at": now,
                            "updated_at": now,
                        }
                        for contact_id, number in rows
                    ],
                ).all()
                claimed += [attempt_id for attempt_id in ids if attempt_id is not None]
    return claimed


def _due(
    session: Session, *, campaign_id: int, groups: Sequence[int], limit: int, now: datetime
) -> list[tuple[int, str]]:
    """The ``limit`` earliest due pending contacts of the open ``groups``, as (id, phone): one index
    range per group, each stopped at ``limit`` rows, then the earliest of those."""
    per_group = [
        sa.select(col(Contact.id), col(Contact.phone), col(Contact.next_attempt_at))
        .where(
            col(Contact.campaign_id) == campaign_id,
            col(Contact.zone_group_id) == group,
            col(Contact.state) == ContactState.PENDING,
            col(Contact.next_attempt_at) <= now,
        )
        .order_by(col(Contact.next_attempt_at), col(Contact.id))
        .limit(limit)
        .subquery()
        for group in groups
    ]
    union = sa.union_all(*(sa.select(part) for part in per_group)).subquery()
    rows = session.execute(
        sa.select(union.c.id, union.c.phone).order_by(union.c.next_attempt_at, union.c.id).limit(limit)
    ).all()
    return [(int(contact_id), phone) for contact_id, phone in rows]


def finish_campaigns(session: Session, *, now: datetime) -> list[str]:
    """Mark running campaigns with nothing left to do as completed."""
    unfinished = (
        sa.select(col(Contact.id))
        .where(col(Contact.campaign_id) == col(Campaign.id), col(Contact.state) != ContactState.DONE)
        .exists()
    )
    done = session.execute(
        sa.update(Campaign)
        .where(col(Campaign.status) == CampaignStatus.RUNNING, ~unfinished)
        .values(status=CampaignStatus.COMPLETED, finished_at=now)
        .returning(col(Campaign.name))
    ).scalars()
    return list(done)


def pump(rt: Runtime) -> int:
    """Claim due contacts of running campaigns within each provider's budget; enqueue their calls."""
    now = rt.clock()
    claimed: list[int] = []
    with session_scope(rt.database_url) as session:
        finished = finish_campaigns(session, now=now)
        for name in finished:
            log.info("campaign %s completed", name)
        campaigns = session.exec(
            select(Campaign).where(col(Campaign.status) == CampaignStatus.RUNNING, rt.serves(Campaign.id))
        ).all()
        for campaign in campaigns:
            if campaign.route_back_at is not None and campaign.route_back_at <= now:
                route_back(
                    session, campaign=campaign, now=now, retry=timedelta(seconds=rt.settings.route_retry)
                )
                session.refresh(campaign)
        if rt.only is None:  # the deployment: not where a `dialer run` dials (see dialer.lease)
            held = lease.run_held_providers(session, now=now)
            # Nor a campaign only simulated so far (a killed `dialer run --simulate` leaves it
            # running): its first real call is the operator's to ask for.
            campaigns = [c for c in campaigns if c.provider not in held and not c.simulated]
            lease.hold_for_workers(session, campaign_ids=[c.id or 0 for c in campaigns], now=now)
        by_provider: dict[str, list[Campaign]] = defaultdict(list)
        for campaign in campaigns:
            by_provider[campaign.provider].append(campaign)
        for provider, running in by_provider.items():
            try:
                rate = rt.rate_limit(provider)
            except ConfigurationError as error:  # an account the campaign names is not set here
                route_around(
                    session,
                    provider=provider,
                    reason=str(error),
                    cause="refused",
                    now=now,
                    campaign_ids=[campaign.id or 0 for campaign in running],
                )
                continue
            budget = math.ceil(rate * LOOKAHEAD) - _count(
                session, col(Attempt.provider) == provider, col(Attempt.status) == AttemptStatus.QUEUED
            )
            cap = rt.concurrency_cap(provider)
            if cap is not None:  # calls in progress on the account, every campaign together
                live = _count(session, col(Attempt.provider) == provider, col(Attempt.status).in_(_LIVE))
                budget = min(budget, cap - live)
            for campaign in running:
                spec = rt.spec_of(campaign)
                if spec.schedule.over(now):
                    expire(session, spec, campaign_id=campaign.id or 0, now=now)
                    continue
                if budget <= 0 or spec.schedule.before_start(now):
                    continue
                room = spec.pacing.max_concurrent - _count(
                    session,
                    col(Attempt.campaign_id) == campaign.id,
                    col(Attempt.status).in_(_LIVE),
                )
                limit = min(budget, room)
                if spec.pacing.calls_per_second:
                    queued = _count(
                        session,
                        col(Attempt.campaign_id) == campaign.id,
                        col(Attempt.status) == AttemptStatus.QUEUED,
                    )
                    limit = min(limit, math.ceil(spec.pacing.calls_per_second * LOOKAHEAD) - queued)
                if limit > 0:
                    ids = claim_due(
                        session,
                        campaign=campaign,
                        spec=spec,
                        limit=limit,
                        now=now,
                        simulated=rt.simulated,
                        cap=NumberCap.of(rt.settings),
                    )
                    budget -= len(ids)
                    claimed += ids
    for attempt_id in claimed:
        rt.enqueue(attempt_id, 0)
    return len(claimed)


def expire(session: Session, spec: CampaignSpec, *, campaign_id: int, now: datetime) -> int:
    """Past its ``schedule.end``, a campaign's contacts waiting to be called finish as expired
    (those on a call finish as it ends); how many."""
    ids = session.scalars(
        sa.update(Contact)
        .where(col(Contact.campaign_id) == campaign_id, col(Contact.state) == ContactState.PENDING)
        .values(state=ContactState.DONE, result=ContactResult.EXPIRED, updated_at=now)
        .returning(col(Contact.id))
    ).all()
    notify.contacts_finished(
        session, spec, campaign_id=campaign_id, contact_ids=[i for i in ids if i], now=now
    )
    return len(ids)


def result_wait(spec: CampaignSpec, provider: Provider, settings: Settings) -> timedelta:
    """How long after it was sent an attempt with no result ends ``unknown``: the ring, the call's
    longest life and the provider's callback delay (``DIALER_GIVE_UP_AFTER`` instead, if set)."""
    if settings.give_up_after is not None:
        return timedelta(seconds=settings.give_up_after)
    call = spec.call.max_duration
    if call is None:
        steps = spec.call_flow.steps.values()
        call = LONGEST_CALL + sum((s.max_duration for s in steps if s.action == "record"), timedelta())
        if any(step.action == "transfer" for step in steps):
            call += TRANSFER_LONGEST
    return timedelta(seconds=RING_SECONDS + provider.callback_delay) + call


def sweep(rt: Runtime) -> dict[str, int]:
    """Re-enqueue lost work and settle attempts whose result never came."""
    settings = rt.settings
    now = rt.clock()
    counts = {"requeued": 0, "unconfirmed": 0, "looked_up": 0, "given_up": 0, "waiting": 0}
    with session_scope(rt.database_url) as session:
        stale = now - timedelta(seconds=settings.requeue_after)
        requeue = (
            session.execute(
                sa.update(Attempt)
                .where(
                    col(Attempt.status) == AttemptStatus.QUEUED,
                    col(Attempt.updated_at) < stale,
                    rt.serves(Attempt.campaign_id),
                )
                .values(updated_at=now)
                .returning(col(Attempt.id))
            )
            .scalars()
            .all()
        )
        # A worker that died while sending leaves ``dispatching``: the call may exist, never re-dial.
        sending = sa.select(col(Attempt.provider)).where(col(Attempt.status) == AttemptStatus.DISPATCHING)
        for provider in set(session.scalars(sending.distinct())):
            account = settings.provider_settings(provider) if settings.has_route(provider) else None
            answer = (account and account.answer_timeout) or settings.http_timeout
            cut = now - timedelta(seconds=answer * 3)
            counts["unconfirmed"] += changed(
                session,
                sa.update(Attempt)
                .where(
                    col(Attempt.provider) == provider,
                    col(Attempt.status) == AttemptStatus.DISPATCHING,
                    col(Attempt.updated_at) < cut,
                    rt.serves(Attempt.campaign_id),
                )
                .values(
                    status=AttemptStatus.UNCONFIRMED, updated_at=now, reason="worker stopped while sending"
                ),
            )
        # Quiet this long, an attempt is looked up; it may end unknown sooner where that is set shorter.
        quiet = min(settings.settle_after, settings.give_up_after or settings.settle_after)
        overdue = session.exec(
            select(Attempt)
            .where(
                col(Attempt.status).in_(
                    [
                        s.value
                        for s in (
                            AttemptStatus.UNCONFIRMED,
                            AttemptStatus.DIALING,
                            AttemptStatus.RINGING,
                            AttemptStatus.ANSWERED,
                        )
                    ]
                ),
                col(Attempt.updated_at) < now - timedelta(seconds=quiet),
                rt.serves(Attempt.campaign_id),
            )
            .order_by(col(Attempt.updated_at))
            .limit(200)
        ).all()
        specs = {
            campaign.id: spec_of(campaign)
            for campaign in session.exec(
                select(Campaign).where(col(Campaign.id).in_({a.campaign_id for a in overdue}))
            )
        }
        # Callbacks kept before their call id was known, whose attempt learnt it since.
        counts["held_applied"] = sum(
            apply_held(
                session, provider=provider, now=now, settings=settings.provider_settings(provider.name)
            )
            for provider in map(get_provider, settings.routes(PROVIDERS))
            if not provider.per_call_callbacks
        )
    for attempt_id in requeue:
        rt.enqueue(attempt_id, 0)
    counts["requeued"] = len(requeue)
    for attempt in overdue:
        counts[_reconcile(rt, attempt, specs[attempt.campaign_id], now)] += 1
    return counts


def _reconcile(rt: Runtime, attempt: Attempt, spec: CampaignSpec, now: datetime) -> str:
    """Ask the provider how an overdue attempt ended; past :func:`result_wait`, with no answer, it
    ends ``unknown``: the callee may have been called, so it is not retried as a failure."""
    provider = get_provider(attempt.provider)
    started = attempt.dispatched_at or attempt.queued_at
    if (
        attempt.provider_call_id
        and provider.can_look_up
        and started > now - LONGEST_EVER
        and rt.settings.has_route(provider.name)
    ):
        slot = rt.limiter.reserve([rt.provider_bucket(attempt.provider)], max_wait=0.5)
        if slot.granted:
            rt.sleep(slot.wait)
            gate = rt.provider_gate(attempt.provider)  # a look-up counts against the limit too
            try:
                credentials = rt.settings.provider_settings(attempt.provider)
                event = rt.calls.look_up(
                    provider, credentials, attempt.provider_call_id, pace=lambda: through_gate(rt, gate)
                )
            except ProviderError as error:
                log.warning("status look-up of attempt %s failed: %s", attempt.id, error)
            else:
                with session_scope(rt.database_url) as session:
                    apply_event(session, attempt=attempt, event=event, now=now)
                    session.execute(
                        sa.update(Attempt).where(col(Attempt.id) == attempt.id).values(updated_at=now)
                    )
                return "looked_up"
    wait = result_wait(spec, provider, rt.settings)
    if started < now - wait:
        with session_scope(rt.database_url) as session:
            finish(
                session,
                attempt=attempt,
                status=AttemptStatus.UNKNOWN,
                now=now,
                reason=_no_result(provider, wait),
            )
        return "given_up"
    return "waiting"


def _no_result(provider: Provider, wait: timedelta) -> str:
    """Why an attempt ended ``unknown``, and where its result may still be read."""
    seconds = wait.total_seconds()
    span = f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:g} s"
    said = f"no result from {provider.title} within {span} of sending the call"
    if provider.can_look_up:
        return f"{said}, and its status look-up did not tell"
    if provider.call_records:
        return f"{said}; {provider.call_records}"
    return f"{said}; its documents offer no status look-up or call records"
