"""How long a campaign will take: ``dialer campaign plan NAME`` before the start, ``status`` during it.

The estimate plays the campaign forward in steps of a quarter of an hour: each step places as many
calls as the pace allows (the account's rate or the campaign's, and the concurrency cap over the
length of a call), taken from the zone groups whose window is open, oldest due first. A share of
the calls placed (the retry share) comes back as retries after the policy's delay, until the
attempts run out. The length of a call and the retry share are those of the campaign's latest ended
attempts, or stated defaults until enough have ended. Other campaigns on the same account, which
share its rate, are not counted: the estimate is this campaign's alone.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from campaigns import window as windows
from campaigns.outcomes import FINAL, ContactState
from campaigns.retry import retry_delay
from campaigns.spec import CampaignSpec, RetryPolicy, Window
from dialer.models import Attempt, Contact, ZoneGroup
from dialer.operations import get_campaign
from dialer.providers import account_limit
from dialer.runtime import spec_of
from dialer.scheduler import NumberCap
from dialer.settings import Settings
from dialer.zones import group_zones

DEFAULT_RETRY_SHARE = 0.35
"""The share of attempts assumed to end busy, unanswered or failed before any has ended."""
DEFAULT_CALL_SECONDS = 45.0
"""How long a call is assumed to hold a line (dialling to hang-up) before any has ended."""
SAMPLE = 1000
"""The latest ended attempts the observed figures come from."""
MIN_SAMPLE = 30
"""Ended attempts needed before the observed figures replace the defaults."""
STEP = timedelta(minutes=15)
HORIZON = timedelta(days=60)


@dataclass(frozen=True)
class Zone:
    """The contacts left in one zone group, and when its window next opens (None: open now)."""

    zones: tuple[str, ...]
    contacts: int
    opens: datetime | None
    never: bool = False
    """The window is never open in all these zones at once (a prefix spanning far-apart zones)."""


@dataclass(frozen=True)
class Work:
    """Contacts due at ``due`` in ``zones``, with ``made`` attempts behind them (a count, since
    retries are expected shares)."""

    due: datetime
    zones: tuple[str, ...]
    made: int
    count: float


@dataclass
class Plan:
    name: str
    provider: str
    now: datetime
    contacts_left: int
    account_rate: float
    campaign_rate: float | None
    concurrency: int
    call_seconds: float
    retry_share: float
    observed: int
    """Ended attempts the call length and retry share come from (fewer than MIN_SAMPLE: defaults)."""
    policy: RetryPolicy
    zones: list[Zone] = field(default_factory=list)
    attempts_left: float = 0.0
    finish: datetime | None = None
    """When the last call should end (None: not within HORIZON)."""
    starts: datetime | None = None
    """The campaign's ``schedule.start``, if it is still to come: nothing is called before."""
    ends: datetime | None = None
    """The campaign's ``schedule.end``."""
    expiring: float = 0.0
    """Contacts expected to be left uncalled (or unreached) at ``ends``."""

    @property
    def rate(self) -> float:
        return min(self.account_rate, self.campaign_rate or math.inf)

    @property
    def calls_per_second(self) -> float:
        """The pace: the rate, unless the concurrency cap over a call's length is lower."""
        return min(self.rate, self.concurrency / self.call_seconds)


def expected_attempts(share: float, made: int, policy: RetryPolicy) -> float:
    """Attempts still expected of a contact due now with ``made`` behind it: 1 + s + s^2 + ..."""
    left = max(0, policy.max_attempts - made)
    return sum(share**k for k in range(left))


def plan(session: Session, name: str, *, settings: Settings, now: datetime) -> Plan:
    """The plan of campaign ``name`` from ``now`` (aware, UTC)."""
    campaign = get_campaign(session, name)
    spec = spec_of(campaign)
    account = settings.provider_settings(campaign.provider)
    call_seconds, share, observed = _observed(session, campaign.id or 0, spec)
    result = Plan(
        name=campaign.name,
        provider=campaign.provider,
        now=now,
        contacts_left=0,
        account_rate=account_limit(campaign.provider, account),
        campaign_rate=spec.pacing.calls_per_second,
        concurrency=min(spec.pacing.max_concurrent, account.max_concurrent or spec.pacing.max_concurrent),
        call_seconds=call_seconds,
        retry_share=share,
        observed=observed,
        policy=spec.retry,
    )
    result.ends = spec.schedule.end
    if spec.schedule.before_start(now):
        result.starts = spec.schedule.start
        now = max(now, spec.schedule.start or now)  # the campaign is played from its start
    work, per_zone = _work(
        session,
        campaign.id or 0,
        spec,
        now=now,
        share=share,
        call_seconds=call_seconds,
        cap=NumberCap.of(settings),
    )
    for item in work:
        result.attempts_left += item.count * expected_attempts(share, item.made, spec.retry)
    result.contacts_left = sum(per_zone.values())
    for zones, contacts in sorted(per_zone.items(), key=lambda kv: (-kv[1], kv[0])):
        try:
            opens = windows.next_open(spec.window, zones, now)
        except ValueError:
            result.zones.append(Zone(zones=zones, contacts=contacts, opens=None, never=True))
            continue
        result.zones.append(
            Zone(zones=zones, contacts=contacts, opens=None if opens == result.now else opens)
        )
    played = play(
        work,
        window=spec.window,
        policy=spec.retry,
        share=share,
        calls_per_second=result.calls_per_second,
        call_seconds=call_seconds,
        now=now,
        until=spec.schedule.end,
    )
    result.finish, result.expiring = played.finish, played.left
    return result


def _observed(session: Session, campaign_id: int, spec: CampaignSpec) -> tuple[float, float, int]:
    """Call length (seconds) and retry share from the latest ended attempts, with their number."""
    rows = session.execute(
        sa.select(col(Attempt.status), col(Attempt.dispatched_at), col(Attempt.ended_at))
        .where(
            col(Attempt.campaign_id) == campaign_id,
            col(Attempt.status).in_([s.value for s in FINAL]),
            ~col(Attempt.simulated),  # a simulator's calls last a tenth of real ones, as scripted
        )
        .order_by(col(Attempt.id).desc())
        .limit(SAMPLE)
    ).all()
    if len(rows) < MIN_SAMPLE:
        return DEFAULT_CALL_SECONDS, DEFAULT_RETRY_SHARE, len(rows)
    retried = sum(1 for status, _, _ in rows if status in spec.retry.retry_on)
    lengths = [(ended - dispatched).total_seconds() for _, dispatched, ended in rows if dispatched and ended]
    seconds = sum(lengths) / len(lengths) if lengths else DEFAULT_CALL_SECONDS
    return max(1.0, seconds), retried / len(rows), len(rows)


def _work(
    session: Session,
    campaign_id: int,
    spec: CampaignSpec,
    *,
    now: datetime,
    share: float,
    call_seconds: float,
    cap: NumberCap | None = None,
) -> tuple[list[Work], Counter[tuple[str, ...]]]:
    """The work left, by zone group and attempts made, and the contacts left per zones: those
    waiting are due at the latest of their group's due times (or now); those on a call come back,
    a retry share of them, after it; those whose number the ``cap`` holds, when it allows them."""
    held = _held(session, campaign_id, cap, now=now) if cap else []
    held_count = Counter((zones, own, made) for zones, own, made, _ in held)
    rows = session.execute(
        sa.select(
            col(ZoneGroup.zones),
            col(ZoneGroup.own),
            col(Contact.state),
            col(Contact.attempts),
            sa.func.count(),
            sa.func.max(col(Contact.next_attempt_at)),
        )
        .select_from(Contact)
        .outerjoin(ZoneGroup, col(ZoneGroup.id) == col(Contact.zone_group_id))
        .where(col(Contact.campaign_id) == campaign_id, col(Contact.state) != ContactState.DONE)
        .group_by(col(ZoneGroup.zones), col(ZoneGroup.own), col(Contact.state), col(Contact.attempts))
    ).all()
    work = []
    per_zone: Counter[tuple[str, ...]] = Counter()
    for zones, own, state, made, count, latest in rows:
        checked = group_zones(
            spec.window, zones or "", bool(own)
        )  # no group yet: the campaign's zone, or UTC
        per_zone[checked] += count
        if state == ContactState.CALLING:
            if made < spec.retry.max_attempts:
                back = now + timedelta(seconds=call_seconds) + _delay(spec.retry, made)
                work.append(Work(due=back, zones=checked, made=made, count=count * share))
            continue
        due = max(now, latest.replace(tzinfo=now.tzinfo) if latest.tzinfo is None else latest)
        free = count - held_count[(zones, own, made)]
        if free > 0:
            work.append(Work(due=due, zones=checked, made=made, count=float(free)))
    for zones, own, made, allowed in held:
        work.append(
            Work(
                due=max(now, allowed),
                zones=group_zones(spec.window, zones or "", bool(own)),
                made=made,
                count=1.0,
            )
        )
    return work, per_zone


def _held(
    session: Session, campaign_id: int, cap: NumberCap, *, now: datetime
) -> list[tuple[str | None, bool | None, int, datetime]]:
    """The campaign's waiting contacts whose number the cap holds: their group, attempts made,
    and when the cap allows them."""
    span = timedelta(days=cap.days)
    rows = session.execute(
        sa.select(
            col(ZoneGroup.zones),
            col(ZoneGroup.own),
            col(Contact.attempts),
            sa.func.min(col(Attempt.queued_at)),
        )
        .select_from(Contact)
        .join(Attempt, col(Attempt.phone) == col(Contact.phone))
        .outerjoin(ZoneGroup, col(ZoneGroup.id) == col(Contact.zone_group_id))
        .where(
            col(Contact.campaign_id) == campaign_id,
            col(Contact.state) == ContactState.PENDING,
            col(Attempt.queued_at) > now - span,
        )
        .group_by(col(Contact.id), col(ZoneGroup.zones), col(ZoneGroup.own), col(Contact.attempts))
        .having(sa.func.count() >= cap.calls)
    ).all()
    return [(zones, own, made, first + span) for zones, own, made, first in rows]


def _delay(policy: RetryPolicy, made: int) -> timedelta:
    return retry_delay(policy.model_copy(update={"jitter": 0.0}), attempts_made=max(1, made))


@dataclass(frozen=True)
class Played:
    finish: datetime | None
    """When the last expected call ends (None: not within the horizon); the end, if it comes first."""
    left: float = 0.0
    """Contacts still to be called at the end."""


def finish(work: list[Work], **options: Any) -> datetime | None:
    """When the last expected call of ``work`` ends (:func:`play`'s ``finish``)."""
    return play(work, **options).finish


def play(
    work: list[Work],
    *,
    window: Window,
    policy: RetryPolicy,
    share: float,
    calls_per_second: float,
    call_seconds: float,
    now: datetime,
    horizon: timedelta = HORIZON,
    until: datetime | None = None,
) -> Played:
    """Play ``work`` forward in steps of STEP from ``now``: when its last expected call ends, or,
    if ``until`` (the campaign's end) comes first, how many contacts are left then."""
    pending = [(item.due, item.zones, item.made, item.count) for item in work if item.count > 0]
    heapq.heapify(pending)
    per_step = calls_per_second * STEP.total_seconds()
    end = now + horizon
    t = now
    last_call: datetime | None = None
    while pending:
        if until is not None and t >= until:
            return Played(until, sum(item[3] for item in pending))
        if t > end:
            return Played(None)
        due_now = []
        while pending and pending[0][0] <= t:
            due_now.append(heapq.heappop(pending))
        if not due_now:
            t = pending[0][0] if until is None else min(pending[0][0], until)  # idle until then
            continue
        opened: dict[tuple[str, ...], bool] = {}
        capacity = per_step
        later: list[tuple[datetime, tuple[str, ...], int, float]] = []
        retries: defaultdict[tuple[datetime, tuple[str, ...], int], float] = defaultdict(float)
        for due, zones, made, count in due_now:
            if zones not in opened:
                opened[zones] = windows.is_open(window, zones, t)
            if not opened[zones] or capacity <= 0:
                later.append((due, zones, made, count))
                continue
            placed = min(count, capacity)
            capacity -= placed
            last_call = t + timedelta(seconds=(per_step - capacity) / calls_per_second)
            if placed < count:
                later.append((due, zones, made, count - placed))
            if made + 1 < policy.max_attempts and placed * share > 1e-3:
                back = t + timedelta(seconds=call_seconds) + _delay(policy, made + 1)
                retries[(back, zones, made + 1)] += placed * share
        for item in later:
            if not opened[item[1]]:  # closed: due again when its window opens
                try:
                    item = (windows.next_open(window, item[1], t), *item[1:])
                except ValueError:
                    continue  # never open: never called (the plan lists such zones)
            heapq.heappush(pending, item)
        for (due, zones, made), count in retries.items():
            heapq.heappush(pending, (due, zones, made, count))
        t += STEP
    return Played(now if last_call is None else last_call + timedelta(seconds=call_seconds))
