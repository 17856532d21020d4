"""Results pushed to the operator's systems: an outbox, written with each result and delivered
signed, retried with a growing wait for three days; a result may be delivered twice, never skipped.

A campaign's ``[notify]`` names a URL. Each contact's final result (and, with ``attempts``, each
attempt's end) is a row of ``notification`` written in the transaction that settles it, so a result
is never recorded without its notification, nor the reverse. A deliverer (a thread of ``dialer
run``, the workers' ``dialer.notify`` task, ``dialer notify send``) claims the rows due by moving
their next try past its HTTP timeout, POSTs each, and marks it delivered on a 2xx: one killed while
sending leaves its rows due again, and they are sent again with the same event id.

Each request carries ``Dialer-Event-Id`` (the receiver's key for idempotency) and
``Dialer-Signature: t=<unix seconds>,v1=<hex>``, the HMAC-SHA256 with ``DIALER_NOTIFY_SECRET`` of
``"<t>.<body>"``: the scheme of Stripe and Svix. :func:`verify` checks one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import col

from campaigns.spec import CampaignSpec
from dialer.db import Db, session_scope
from dialer.models import Attempt, Campaign, Contact, DtmfAnswer, Notification, utcnow
from dialer.runtime import spec_from
from dialer.settings import Settings

log = logging.getLogger("dialer.notify")

CONTACT_FINISHED = "contact.finished"
ATTEMPT_ENDED = "attempt.ended"
GIVE_UP_AFTER = timedelta(days=3)
"""How long a result is tried before it is given up (``dialer notify replay`` sends it again)."""
LONGEST_WAIT = 3600.0
SIGNATURE = "Dialer-Signature"
EVENT_ID = "Dialer-Event-Id"
TOLERANCE = 300.0
"""Seconds a signature's timestamp may be off for :func:`verify` (a replayed request is older)."""

NOTIFICATIONS: sa.Table = Notification.__table__  # type: ignore[attr-defined]
CONTACTS: sa.Table = Contact.__table__  # type: ignore[attr-defined]


def add(
    db: Db,
    *,
    campaign_id: int,
    contact_ids: Iterable[int],
    kind: str,
    now: datetime,
    attempt_id: int | None = None,
) -> None:
    """Write the notifications of ``contact_ids`` (in the caller's transaction)."""
    rows = [
        {
            "event_id": str(uuid.uuid4()),
            "campaign_id": campaign_id,
            "contact_id": contact_id,
            "attempt_id": attempt_id,
            "kind": kind,
            "created_at": now,
            "next_try_at": now,
            "tries": 0,
        }
        for contact_id in contact_ids
    ]
    if rows:
        db.execute(sa.insert(NOTIFICATIONS), rows)


def contacts_finished(
    db: Db, spec: CampaignSpec, *, campaign_id: int, contact_ids: Iterable[int], now: datetime
) -> None:
    """Contacts of a campaign just finished: their results go out, if the campaign says where."""
    if spec.notify.url:
        add(db, campaign_id=campaign_id, contact_ids=contact_ids, kind=CONTACT_FINISHED, now=now)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: str, header: str, body: bytes, *, now: float | None = None, tolerance: float = TOLERANCE
) -> bool:
    """Whether ``header`` (``Dialer-Signature``) signs ``body`` with ``secret``, recently enough."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def _answers(db: Db, attempt_ids: list[int]) -> dict[str, str]:
    """The valid answers of these attempts by question, the latest kept: a choice's name, else the keys
    (a recording's URL for a record step)."""
    rows = db.execute(
        sa.select(
            col(DtmfAnswer.step), col(DtmfAnswer.choice), col(DtmfAnswer.digits), col(DtmfAnswer.recording)
        )
        .where(col(DtmfAnswer.attempt_id).in_(attempt_ids), col(DtmfAnswer.valid))
        .order_by(col(DtmfAnswer.id))
    ).all()
    return {step: choice or recording or digits for step, choice, digits, recording in rows}


def _attempt(attempt: Attempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "outcome": attempt.status,
        "reason": attempt.reason,
        "caller_id": attempt.caller_id,
        "duration": attempt.duration,
        "price": attempt.price,
        "answered_by": attempt.answered_by,
        "dispatched_at": _iso(attempt.dispatched_at),
        "answered_at": _iso(attempt.answered_at),
        "ended_at": _iso(attempt.ended_at),
        "opted_out": attempt.opted_out,
        "transfer_to": attempt.transfer_to,
        "transfer_outcome": attempt.transfer_status,
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def payload(db: Db, notification: Notification, campaign: str) -> dict[str, Any]:
    """The body of one notification, read as things stand (a result settled again, after an
    ``unknown`` one, is sent as it stands now)."""
    contact = db.execute(sa.select(Contact).where(col(Contact.id) == notification.contact_id)).scalar_one()
    attempts = (
        db.execute(
            sa.select(Attempt).where(col(Attempt.contact_id) == contact.id).order_by(col(Attempt.number))
        )
        .scalars()
        .all()
    )
    body: dict[str, Any] = {
        "id": notification.event_id,
        "type": notification.kind,
        "created_at": _iso(notification.created_at),
        "campaign": campaign,
        "contact": {
            "phone": contact.phone,
            "extension": contact.extension or None,
            "row": contact.row_number,
            "columns": contact.variables,
            "result": contact.result,
            "attempts": contact.attempts,
        },
    }
    if notification.kind == ATTEMPT_ENDED:
        (attempt,) = [a for a in attempts if a.id == notification.attempt_id]
        body["attempt"] = _attempt(attempt) | {"answers": _answers(db, [attempt.id or 0])}
    else:
        body["last_attempt"] = _attempt(attempts[-1]) if attempts else None
        body["answers"] = _answers(db, [a.id or 0 for a in attempts])
    return body


def deliver_due(
    settings: Settings,
    http: httpx.Client,
    *,
    only: frozenset[int] | None = None,
    limit: int = 50,
    now: datetime | None = None,
) -> Counter[str]:
    """Send up to ``limit`` notifications due now (of the campaigns ``only``, if given); count
    them as ``delivered``, ``failed`` (tried again later) and ``given_up``."""
    counts: Counter[str] = Counter()
    now = now or utcnow()
    hold = timedelta(seconds=settings.notify_timeout + 5)  # past the send: one killed leaves it due again
    due = sa.and_(col(Notification.delivered_at).is_(None), col(Notification.next_try_at) <= now)
    if only is not None:
        due = sa.and_(due, col(Notification.campaign_id).in_(only))
    with session_scope(settings.database_url) as session:
        picked = (
            sa.select(col(Notification.id)).where(due).order_by(col(Notification.next_try_at)).limit(limit)
        ).scalar_subquery()
        ids = (
            session.execute(
                sa.update(Notification)
                .where(col(Notification.id).in_(picked), due)
                .values(next_try_at=now + hold)
                .returning(col(Notification.id))
            )
            .scalars()
            .all()
        )
    specs: dict[int, tuple[str, CampaignSpec]] = {}
    secret = settings.notify_secret.get_secret_value() if settings.notify_secret else None
    for notification_id in ids:
        with session_scope(settings.database_url) as session:
            notification = session.get_one(Notification, notification_id)
            if notification.campaign_id not in specs:
                campaign = session.get_one(Campaign, notification.campaign_id)
                specs[notification.campaign_id] = (campaign.name, spec_from(campaign.spec))
            name, spec = specs[notification.campaign_id]
            body = json.dumps(payload(session, notification, name), separators=(",", ":")).encode()
            error = _send(http, spec.notify.url, body, notification.event_id, secret, settings.notify_timeout)
            sent = utcnow()
            if error is None:
                notification.delivered_at, notification.last_error = sent, None
                counts["delivered"] += 1
            else:
                notification.tries += 1
                notification.last_error = error[:500]
                wait = min(settings.notify_first_retry * 2 ** (notification.tries - 1), LONGEST_WAIT)
                again = sent + timedelta(seconds=wait)
                gave_up = again > notification.created_at + GIVE_UP_AFTER
                notification.next_try_at = None if gave_up else again
                counts["given_up" if gave_up else "failed"] += 1
                log.warning("result %s to %s: %s", notification.event_id, spec.notify.url, error)
            session.add(notification)
    return counts


def _send(
    http: httpx.Client, url: str | None, body: bytes, event_id: str, secret: str | None, timeout: float
) -> str | None:
    """POST one notification; None when the receiver took it (2xx), else why not."""
    if not url:
        return "the campaign no longer has a [notify] url"
    if secret is None:
        return "DIALER_NOTIFY_SECRET is not set: results are not sent unsigned"
    headers = {
        "Content-Type": "application/json",
        EVENT_ID: event_id,
        SIGNATURE: sign(secret, body, int(time.time())),
        "User-Agent": "dialer-notify/1",
    }
    try:
        response = http.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if 200 <= response.status_code < 300:
        return None
    return f"answered {response.status_code}"


def replay(session: Db, *, campaign_id: int, now: datetime) -> int:
    """Every finished contact's result of the campaign again, as new notifications; how many."""
    done = sa.select(CONTACTS.c.id).where(CONTACTS.c.campaign_id == campaign_id, CONTACTS.c.state == "done")
    ids = [int(contact_id) for (contact_id,) in session.execute(done)]
    add(session, campaign_id=campaign_id, contact_ids=ids, kind=CONTACT_FINISHED, now=now)
    return len(ids)


def standing(session: Db, *, campaign_id: int | None = None) -> Counter[str]:
    """Notifications by where they stand: ``delivered``, ``waiting`` (never tried), ``failing``
    (tried, to be tried again), ``given_up``."""
    state = sa.case(
        (col(Notification.delivered_at).is_not(None), "delivered"),
        (col(Notification.next_try_at).is_(None), "given_up"),
        (col(Notification.tries) > 0, "failing"),
        else_="waiting",
    )
    query = sa.select(state, sa.func.count()).group_by(state)
    if campaign_id is not None:
        query = query.where(col(Notification.campaign_id) == campaign_id)
    return Counter({str(name): int(count) for name, count in session.execute(query).all()})


def last_error(session: Db, *, campaign_id: int) -> str | None:
    return session.scalar(
        sa.select(col(Notification.last_error))
        .where(col(Notification.campaign_id) == campaign_id, col(Notification.delivered_at).is_(None))
        .where(col(Notification.last_error).is_not(None))
        .order_by(col(Notification.id).desc())
        .limit(1)
    )
