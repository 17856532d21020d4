"""Placing one call: the attempt is claimed in the database before the provider is asked.

``place_call`` is safe to run twice for the same attempt (a redelivered task): only the run whose
guarded ``queued -> dispatching`` update succeeds sends the request.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns import window as windows
from campaigns.flow import start
from campaigns.outcomes import AttemptStatus, CampaignStatus, ContactState, earlier_than
from campaigns.phones import zones_of
from campaigns.spec import CampaignSpec
from dialer import callers, lease
from dialer.db import among, changed, session_scope, statement_connection
from dialer.errors import (
    ConfigurationError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderSetupError,
    ProviderTimeout,
    ProviderUnavailable,
)
from dialer.models import Attempt, Campaign, Contact, ZoneGroup
from dialer.operations import route_around
from dialer.pacing import Bucket, Gate
from dialer.providers import get_provider
from dialer.providers.base import ACCOUNT_TOKEN, CallOrder, callback_base, order_for
from dialer.recorder import advance, apply_held, finish
from dialer.runtime import Runtime
from dialer.zones import group_zones

log = logging.getLogger("dialer.dispatch")

MAX_SLEEP = 1.0
"""The longest a worker sleeps for its slot; longer waits go back to the queue with a countdown."""
MAX_SEND_FAILURES = 5


def contact_zones(contact: Contact, spec: CampaignSpec, group: ZoneGroup | None = None) -> tuple[str, ...]:
    """The zones a contact's window is checked in: its group's, as the pump checked them."""
    if group is not None:
        return group_zones(spec.window, group.zones, group.own)
    return windows.zones_for(spec.window, contact_zone=contact.zone, number_zones=zones_of(contact.phone))


def release(session: Session, *, attempt: Attempt, retry_at: datetime | None, now: datetime) -> bool:
    """Take back an attempt that never reached the provider, returning its contact to the queue.

    Matched by its callback token as well as its id: SQLite gives a withdrawn attempt's id to the
    next one made, which may be another contact's."""
    deleted = changed(
        session,
        sa.delete(Attempt).where(
            col(Attempt.id) == attempt.id,
            col(Attempt.callback_token) == attempt.callback_token,
            col(Attempt.status) == AttemptStatus.QUEUED,
        ),
    )
    if deleted != 1:
        return False
    values: dict[str, object] = {
        "state": ContactState.PENDING,
        "attempts": col(Contact.attempts) - 1,
        "updated_at": now,
    }
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    session.execute(
        sa.update(Contact)
        .where(col(Contact.id) == attempt.contact_id, col(Contact.state) == ContactState.CALLING)
        .values(values)
    )
    return True


# The statements of every call, made once: making one costs more than running it.
_CALL = (
    select(Attempt, Contact, Campaign, ZoneGroup)
    .join(Contact, col(Contact.id) == col(Attempt.contact_id))
    .join(Campaign, col(Campaign.id) == col(Attempt.campaign_id))
    .outerjoin(ZoneGroup, col(ZoneGroup.id) == col(Contact.zone_group_id))
    .where(col(Attempt.id) == sa.bindparam("attempt"))
)


def _claim_statement(*campaign_conditions: sa.ColumnElement[bool]) -> sa.Update:
    return (
        sa.update(Attempt)
        .where(
            col(Attempt.id) == sa.bindparam("attempt"),
            col(Attempt.callback_token) == sa.bindparam("token"),
            col(Attempt.status) == AttemptStatus.QUEUED,
            sa.select(col(Campaign.id))
            .where(
                col(Campaign.id) == sa.bindparam("campaign"),
                col(Campaign.status) == CampaignStatus.RUNNING,
                col(Campaign.provider) == col(Attempt.provider),
                *campaign_conditions,
            )
            .exists(),
        )
        .values(
            status=AttemptStatus.DISPATCHING,
            caller_id=sa.bindparam("caller_id"),
            dispatched_at=sa.bindparam("b_now"),
            updated_at=sa.bindparam("b_now"),
        )
    )


_CLAIM = _claim_statement()
_CLAIM_HELD = _claim_statement(lease.HELD)
_DIALING = (
    sa.update(Attempt)
    .where(col(Attempt.id) == sa.bindparam("attempt"))
    .values(
        provider_call_id=sa.func.coalesce(
            col(Attempt.provider_call_id), sa.bindparam("call_id", type_=sa.String)
        ),
        status=sa.case(
            (
                among(col(Attempt.status), [s.value for s in earlier_than(AttemptStatus.DIALING)]),
                AttemptStatus.DIALING.value,
            ),
            else_=col(Attempt.status),
        ),
        updated_at=sa.bindparam("b_now"),
    )
)


def _claim(
    connection: sa.Connection, *, attempt: Attempt, caller_id: str, now: datetime, holder: str | None = None
) -> bool:
    """``queued -> dispatching`` from ``caller_id``, only while the campaign is still running on the
    attempt's route (and, with a ``holder``, under its lease). The same attempt, not only the same
    id: see `release`."""
    params = {
        "attempt": attempt.id,
        "token": attempt.callback_token,
        "campaign": attempt.campaign_id,
        "caller_id": caller_id,
        "b_now": now,
    }
    if holder is None:
        return changed(connection, _CLAIM, params) == 1
    return changed(connection, _CLAIM_HELD, params | lease.held_params(holder, now)) == 1


def _requeue(session: Session, *, attempt_id: int, now: datetime, failed: bool = False) -> None:
    """``dispatching -> queued`` after an answer that proves the call was not placed (429, 5xx)."""
    values: dict[str, object] = {"status": AttemptStatus.QUEUED, "updated_at": now}
    if failed:
        values["send_failures"] = col(Attempt.send_failures) + 1
    session.execute(
        sa.update(Attempt)
        .where(col(Attempt.id) == attempt_id, col(Attempt.status) == AttemptStatus.DISPATCHING)
        .values(values)
    )


def call_order(
    rt: Runtime, *, attempt: Attempt, contact: Contact, spec: CampaignSpec, caller_id: str | None = None
) -> CallOrder:
    return order_for(
        spec,
        caller_id=caller_id,
        to=contact.phone,
        variables=contact.variables,
        extension=contact.extension,
        callback_url=callback_base(rt.settings.public_url, attempt.provider, attempt.callback_token),
        reference=str(attempt.id),  # shown in the provider's records: it must authenticate nothing
    )


def place_call(rt: Runtime, attempt_id: int) -> None:
    """Place the call of one queued attempt, or put it back where it belongs.

    Each step on the happy path is one statement committed on its own (read, claim, record the
    call id); no connection is held while waiting for the slot or the provider.
    """
    url = rt.database_url
    with statement_connection(url) as connection, Session(connection) as session:
        row = session.exec(_CALL, params={"attempt": attempt_id}).first()
    if row is None or row[0].status != AttemptStatus.QUEUED:
        return  # already placed, released or finished: a duplicate delivery
    attempt, contact, campaign, group = row
    spec = rt.spec_of(campaign)
    now = rt.clock()
    moved = campaign.provider != attempt.provider  # to another route: the pump queues it there
    try:
        rt.settings.provider_settings(attempt.provider)
    except ConfigurationError as error:  # this worker has no such account: its campaigns move on
        with session_scope(url) as session:
            release(session, attempt=attempt, retry_at=None, now=now)
            route_around(
                session,
                provider=attempt.provider,
                reason=str(error),
                cause="refused",
                now=now,
                campaign_ids=rt.only,
            )
        return
    if campaign.status != CampaignStatus.RUNNING or moved or spec.schedule.over(now):
        with session_scope(url) as session:  # past the end, the pump expires the contact
            release(session, attempt=attempt, retry_at=None, now=now)
        return
    zones = contact_zones(contact, spec, group)
    if not windows.is_open(spec.window, zones, now):
        with session_scope(url) as session:
            release(session, attempt=attempt, retry_at=windows.next_open(spec.window, zones, now), now=now)
        return

    caller_id = spec.caller_id
    if len(spec.caller_pool) > 1:
        with statement_connection(url) as connection:
            chosen, free_at = callers.choose(connection, spec, to=contact.phone, turn=attempt_id, now=now)
        if chosen is None:  # every caller ID it may use has made its calls of the day
            with session_scope(url) as session:
                release(session, attempt=attempt, retry_at=free_at, now=now)
            return
        caller_id = chosen
    buckets = rt.buckets(campaign, spec)
    slot = rt.limiter.reserve(buckets, max_wait=MAX_SLEEP)
    if not slot.granted:
        # Come back just before the slot: close enough to win it, without sleeping through others'.
        rt.enqueue(attempt_id, slot.wait - MAX_SLEEP / 2 if slot.wait > MAX_SLEEP else max(0.05, slot.wait))
        return
    if slot.wait > 0:
        rt.sleep(slot.wait)

    # Under a lease, the request leaves within half its send window of the moment the lease was
    # read as fresh, or not at all (the other half for connecting and sending; see dialer.lease).
    leave_by = lease_clock() + lease.SEND_WINDOW / 2 if rt.holder else None
    with statement_connection(url) as connection:
        claimed = _claim(connection, attempt=attempt, caller_id=caller_id, now=rt.clock(), holder=rt.holder)
        if not claimed:
            return
    call_id = _send(
        rt,
        attempt=attempt,
        contact=contact,
        campaign=campaign,
        spec=spec,
        buckets=buckets,
        caller_id=caller_id,
        leave_by=leave_by,
    )
    if call_id is not None:
        with statement_connection(url) as connection:
            try:
                _dialing(connection, attempt_id=attempt_id, call_id=call_id, now=rt.clock())
            except sa.exc.IntegrityError:
                _call_id_taken(rt, attempt=attempt, call_id=call_id)
                return
            if (number := _transfer_at_start(spec, contact)) is not None:
                connection.execute(
                    sa.update(Attempt).where(col(Attempt.id) == attempt_id).values(transfer_to=number)
                )
        provider = get_provider(attempt.provider)
        if not provider.per_call_callbacks:  # its callbacks may have come before its answer
            with session_scope(url) as session:
                account = rt.settings.provider_settings(provider.name)
                apply_held(session, provider=provider, call_id=call_id, now=rt.clock(), settings=account)


def _send(
    rt: Runtime,
    *,
    attempt: Attempt,
    contact: Contact,
    campaign: Campaign,
    spec: CampaignSpec,
    buckets: list[Bucket],
    caller_id: str,
    leave_by: float | None = None,
) -> str | None:
    """Ask the provider for a claimed attempt's call: its call id, or None when the provider did not
    place it (the attempt is then requeued, left for reconciliation, or finished, as the answer says)."""
    url, attempt_id = rt.database_url, attempt.id or 0
    provider = get_provider(attempt.provider)
    credentials = rt.settings.provider_settings(attempt.provider)
    order = call_order(rt, attempt=attempt, contact=contact, spec=spec, caller_id=caller_id)
    try:
        if not provider.per_call_callbacks:
            account_url = f"{rt.settings.public_url.rstrip('/')}/webhooks/{provider.name}/{ACCOUNT_TOKEN}"
            rt.calls.prepare(provider, credentials, callback_url=account_url, caller_id=caller_id)
        gate = rt.provider_gate(attempt.provider)
        call_id = rt.calls.place(
            provider, credentials, order, pace=lambda: through_gate(rt, gate, leave_by=leave_by)
        )
        rt.succeeded(attempt.provider)
        return call_id
    except Stale:
        log.warning(
            "attempt %s: not sent within %g s of its lease's reading; queued again",
            attempt_id,
            lease.SEND_WINDOW / 2,
        )
        with session_scope(url) as session:
            _requeue(session, attempt_id=attempt_id, now=rt.clock())
        rt.enqueue(attempt_id, 0.0)
    except ProviderRateLimited as error:
        rt.on_rate_limited(attempt.provider)
        pause = error.retry_after if error.retry_after is not None else 1.0
        rt.limiter.hold(buckets[0], pause)
        with session_scope(url) as session:
            _requeue(session, attempt_id=attempt_id, now=rt.clock())
        rt.enqueue(attempt_id, pause)
    except ProviderUnavailable as error:
        _on_unavailable(rt, attempt=attempt, error=error)
        _breaker(rt, provider=attempt.provider, error=error)
    except ProviderTimeout as error:
        _breaker(rt, provider=attempt.provider, error=error)
        log.warning("attempt %s: %s; left for reconciliation", attempt_id, error)
        with session_scope(url) as session:
            advance(
                session,
                attempt_id=attempt_id,
                status=AttemptStatus.UNCONFIRMED,
                now=rt.clock(),
                reason=str(error),
            )
    except (ProviderSetupError, ConfigurationError) as error:
        # Credentials and the API's address are the account's: every campaign on it moves to its
        # next route, or stops (a `dialer run` moves its own: the others' dialers find out for
        # themselves). The attempt goes back to the queue, whose next look at it takes it back
        # (the campaign has left this route, or is paused), even if another thread moved it.
        with session_scope(url) as session:
            _requeue(session, attempt_id=attempt_id, now=rt.clock())
            route_around(
                session,
                provider=attempt.provider,
                reason=str(error),
                cause="refused",
                now=rt.clock(),
                campaign_ids=rt.only,
            )
        rt.enqueue(attempt_id, 0.0)
    except ProviderRejected as error:
        ended = AttemptStatus(error.outcome) if error.outcome else AttemptStatus.REJECTED
        with session_scope(url) as session:
            finish(session, attempt=attempt, status=ended, now=rt.clock(), reason=str(error))
    return None


def _call_id_taken(rt: Runtime, *, attempt: Attempt, call_id: str) -> None:
    """The provider (or a mock) answered with the call id of another attempt: this call's
    callbacks could not be told from that one's, so it ends failed, saying why, and the rest go on."""
    reason = (
        f"{get_provider(attempt.provider).title} answered with call id {call_id!r}, which another attempt"
        " has already: this call's outcome cannot be told apart from that one's"
    )
    log.error("attempt %s: %s", attempt.id, reason)
    with session_scope(rt.database_url) as session:
        finish(session, attempt=attempt, status=AttemptStatus.FAILED, now=rt.clock(), reason=reason)


def _transfer_at_start(spec: CampaignSpec, contact: Contact) -> str | None:
    """The number a flow that transfers before it asks anything connects the callee to."""
    for _, step in start(spec.call_flow).actions():
        if step.action == "transfer":
            return step.to or contact.variables.get(step.to_column or "")
    return None


def _dialing(connection: sa.Connection, *, attempt_id: int, call_id: str, now: datetime) -> None:
    """Keep the provider's call id and move the attempt on to ``dialing``, in one statement; a
    webhook that came first keeps the call id and the further status it recorded."""
    connection.execute(_DIALING, {"attempt": attempt_id, "call_id": call_id, "b_now": now})


class Stale(Exception):
    """A claimed call that could not leave by its time: it goes back to the queue, unsent."""


def lease_clock() -> float:
    """Seconds on a clock that counts the time the machine was suspended too (a process woken from
    a suspended host must not think its lease still fresh)."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


@contextmanager
def through_gate(rt: Runtime, gate: Gate, *, leave_by: float | None = None) -> Iterator[None]:
    """Wait until the request may leave without a second over the provider's limit; then hold
    its permit until its answer came back. Past ``leave_by`` (:func:`lease_clock`), it does not
    leave: :class:`Stale` (checked before its turn is taken too, so a stale request spends none)."""

    def stale() -> None:
        if leave_by is not None and lease_clock() > leave_by:
            raise Stale

    ticket = uuid.uuid4().hex
    while True:  # a request gone stale while it waits takes no turn
        stale()
        if (wait := rt.limiter.admit(gate, ticket)) <= 0:
            break
        rt.sleep(wait)
    try:
        stale()
        yield
    finally:
        rt.limiter.done(gate, ticket)


def _breaker(rt: Runtime, *, provider: str, error: Exception) -> None:
    """A run of failed requests to a provider moves its campaigns to their next route (a campaign
    with none stays, its attempts tried again); their first route is tried again later."""
    failures = rt.failed(provider)
    if failures < rt.settings.route_failures:
        return
    rt.succeeded(provider)  # counted afresh, on the way back
    with session_scope(rt.database_url) as session:
        route_around(
            session,
            provider=provider,
            reason=f"{failures} requests in a row failed, the last: {error}",
            cause="failures",
            now=rt.clock(),
            back_after=timedelta(seconds=rt.settings.route_retry),
            pause=False,
            campaign_ids=rt.only,
        )


def _on_unavailable(rt: Runtime, *, attempt: Attempt, error: ProviderUnavailable) -> None:
    with session_scope(rt.database_url) as session:
        failures = attempt.send_failures + 1
        if failures >= MAX_SEND_FAILURES:
            finish(session, attempt=attempt, status=AttemptStatus.FAILED, now=rt.clock(), reason=str(error))
            return
        _requeue(session, attempt_id=attempt.id or 0, now=rt.clock(), failed=True)
    backoff = timedelta(seconds=min(2**failures, 60))
    log.warning("attempt %s: %s; trying again in %ss", attempt.id, error, backoff.seconds)
    rt.enqueue(attempt.id or 0, backoff.total_seconds())
