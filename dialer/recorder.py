"""Recording what happened to attempts: forward-only status changes, DTMF answers, settling contacts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Protocol
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns.flow import Answer, Segment, judge
from campaigns.outcomes import (
    LIVE,
    AttemptStatus,
    CampaignStatus,
    ContactResult,
    ContactState,
    earlier_than,
)
from campaigns.retry import next_attempt_at
from campaigns.spec import CampaignSpec
from dialer import notify
from dialer.db import Db, among, changed, insert_new, insert_new_rows
from dialer.errors import WebhookAuthError, WebhookPayloadError
from dialer.models import Attempt, Campaign, Contact, DncEntry, DtmfAnswer, UTCDateTime, WebhookEvent
from dialer.providers.base import (
    CallEvent,
    CallOrder,
    Provider,
    Webhook,
    callback_base,
    first_question,
    order_for,
)
from dialer.runtime import spec_from

_LIVE = [status.value for status in LIVE]
TOKEN_GRACE = timedelta(hours=1)
"""How long after its attempt ended a callback token is still taken (a provider's late retries)."""
INPUT_AFTER_END = timedelta(seconds=60)
"""How long after an answered call ended its DTMF input is still taken (Routee posts it then)."""


# The tables, for statements that need no ORM: each callback runs several, and the ORM's way
# through them cost more than the rest of the callback.
ATTEMPTS: sa.Table = Attempt.__table__  # type: ignore[attr-defined]
CONTACTS: sa.Table = Contact.__table__  # type: ignore[attr-defined]
ANSWERS: sa.Table = DtmfAnswer.__table__  # type: ignore[attr-defined]
CAMPAIGNS: sa.Table = Campaign.__table__  # type: ignore[attr-defined]
EVENTS: sa.Table = WebhookEvent.__table__  # type: ignore[attr-defined]
DNC: sa.Table = DncEntry.__table__  # type: ignore[attr-defined]


class AttemptLike(Protocol):
    """What recording reads of an attempt: an ORM ``Attempt`` or a row read for one callback."""

    @property
    def id(self) -> int | None: ...
    @property
    def campaign_id(self) -> int: ...
    @property
    def contact_id(self) -> int: ...
    @property
    def provider(self) -> str: ...
    @property
    def provider_call_id(self) -> str | None: ...
    @property
    def answered_by(self) -> str | None: ...
    @property
    def ended_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class AttemptRow:
    """An attempt as its callback found it (before the callback changed anything)."""

    id: int
    campaign_id: int
    contact_id: int
    provider: str
    provider_call_id: str | None
    answered_by: str | None
    ended_at: datetime | None
    status: str
    dtmf_buffer: str | None
    dtmf_step: str | None
    dtmf_heard: str | None
    step_seq: int


_ATTEMPT_ROW = [ATTEMPTS.c[name] for name in AttemptRow.__dataclass_fields__]

# Statements run for callbacks are made once: making one costs more than running it.
_BY_TOKEN = sa.select(*_ATTEMPT_ROW).where(ATTEMPTS.c.callback_token == sa.bindparam("token"))
_BY_TOKENS = sa.select(ATTEMPTS.c.callback_token, *_ATTEMPT_ROW).where(
    ATTEMPTS.c.callback_token.in_(sa.bindparam("tokens", expanding=True))
)
_BY_CALL = sa.select(*_ATTEMPT_ROW).where(
    ATTEMPTS.c.provider == sa.bindparam("provider"), ATTEMPTS.c.provider_call_id == sa.bindparam("call_id")
)
_CAMPAIGN = sa.select(CAMPAIGNS.c.status, CAMPAIGNS.c.spec).where(CAMPAIGNS.c.id == sa.bindparam("id"))
_ATTEMPT_ID = ATTEMPTS.c.id == sa.bindparam("attempt")
_CONTACT_ID = CONTACTS.c.id == sa.bindparam("contact")
_STATUS = sa.select(ATTEMPTS.c.status).where(_ATTEMPT_ID)
_CALL_RESULT = sa.select(
    ATTEMPTS.c.opted_out,
    sa.exists().where(ANSWERS.c.attempt_id == ATTEMPTS.c.id, ANSWERS.c.valid),
).where(_ATTEMPT_ID)
_ATTEMPTS_MADE = sa.select(CONTACTS.c.attempts).where(_CONTACT_ID)
_CONTACT = sa.select(
    CONTACTS.c.phone,
    CONTACTS.c.variables,
    CONTACTS.c.extension,
    sa.select(ATTEMPTS.c.caller_id).where(_ATTEMPT_ID).scalar_subquery(),
).where(_CONTACT_ID)
_ANSWERED_BY = (
    sa.update(ATTEMPTS)
    .where(_ATTEMPT_ID, among(ATTEMPTS.c.status, _LIVE))
    .values(answered_by=sa.bindparam("answered_by"))
)
_MESSAGE_LEFT = sa.update(ATTEMPTS).where(_ATTEMPT_ID).values(message_left=True)
_ADD_TO_BUFFER = (
    sa.update(ATTEMPTS)
    .where(_ATTEMPT_ID)
    .values(
        dtmf_buffer=sa.func.substr(
            sa.func.coalesce(ATTEMPTS.c.dtmf_buffer, "") + sa.bindparam("piece", type_=sa.String), 1, 64
        ),
        dtmf_step=sa.bindparam("step"),
        dtmf_heard=sa.func.substr(
            sa.func.coalesce(ATTEMPTS.c.dtmf_heard, "") + sa.bindparam("piece", type_=sa.String), 1, 64
        ),
    )
    .returning(ATTEMPTS.c.dtmf_buffer)
)
_CLEAR_BUFFER = sa.update(ATTEMPTS).where(_ATTEMPT_ID).values(dtmf_buffer=None, dtmf_step=None)
_NEXT_SEGMENT = (
    sa.update(ATTEMPTS)
    .where(_ATTEMPT_ID, ATTEMPTS.c.step_seq == sa.bindparam("seq"))
    .values(step_seq=ATTEMPTS.c.step_seq + 1)
)
_ANSWERED_LATE = (
    sa.update(CONTACTS)
    .where(_CONTACT_ID, CONTACTS.c.result == ContactResult.REACHED)
    .values(result=ContactResult.DTMF_ANSWERED)
)
_OPTED_OUT = sa.update(ATTEMPTS).where(_ATTEMPT_ID).values(opted_out=True)
_OPTED_OUT_LATE = (
    sa.update(CONTACTS)
    .where(_CONTACT_ID, among(CONTACTS.c.result, [ContactResult.REACHED, ContactResult.DTMF_ANSWERED]))
    .values(result=ContactResult.OPTED_OUT)
)
_ADD_DNC = sa.insert(DNC).from_select(
    ["phone", "campaign_id", "reason", "source", "added_at"],
    sa.select(
        sa.bindparam("phone", type_=sa.String),
        sa.bindparam("campaign", type_=sa.Integer),
        sa.bindparam("reason", type_=sa.String),
        sa.bindparam("source", type_=sa.String),
        sa.bindparam("now", type_=UTCDateTime),
    ).where(
        ~sa.exists().where(
            DNC.c.phone == sa.bindparam("phone"),
            DNC.c.campaign_id.is_not_distinct_from(sa.bindparam("campaign", type_=sa.Integer)),
        )
    ),
)
_TRANSFER_TO = sa.update(ATTEMPTS).where(_ATTEMPT_ID).values(transfer_to=sa.bindparam("b_to"))
_TRANSFER_SECONDS = (
    sa.update(ATTEMPTS)
    .where(_ATTEMPT_ID, ATTEMPTS.c.transfer_seconds.is_(None))
    .values(transfer_seconds=sa.bindparam("seconds"))
)
_REPLY = (
    sa.update(EVENTS).where(EVENTS.c.dedupe_key == sa.bindparam("key")).values(reply=sa.bindparam("reply"))
)
_REPLIES = sa.select(EVENTS.c.dedupe_key, EVENTS.c.reply).where(
    EVENTS.c.dedupe_key.in_(sa.bindparam("keys", expanding=True)), EVENTS.c.reply.is_not(None)
)


def _attempt(session: Db, statement: sa.Select[Any], **params: Any) -> AttemptRow | None:
    row = session.execute(statement, params).first()
    return None if row is None else AttemptRow(*row)


@dataclass
class _GroupReads:
    attempts: dict[str, AttemptRow]
    """Attempts by token, read together; each is taken once, and read again for a later callback."""
    campaigns: dict[int, tuple[str, CampaignSpec]]


_GROUP: ContextVar[_GroupReads | None] = ContextVar("group_reads", default=None)


@contextmanager
def _read_together(session: Db, tokens: list[str]) -> Iterator[None]:
    """For a group of callbacks recorded in one transaction: the attempts of their ``tokens`` are
    read in one statement, and each campaign's status and spec once, when first needed."""
    rows = session.execute(_BY_TOKENS, {"tokens": sorted(set(tokens))}).all()
    token = _GROUP.set(_GroupReads({row[0]: AttemptRow(*row[1:]) for row in rows}, {}))
    try:
        yield
    finally:
        _GROUP.reset(token)


def _attempt_by_token(session: Db, token: str) -> AttemptRow | None:
    group = _GROUP.get()
    if group is not None and token in group.attempts:
        return group.attempts.pop(token)
    return _attempt(session, _BY_TOKEN, token=token)


def _campaign(session: Db, campaign_id: int) -> tuple[str, CampaignSpec]:
    """A campaign's status and spec."""
    group = _GROUP.get()
    read = None if group is None else group.campaigns
    if read is not None and campaign_id in read:
        return read[campaign_id]
    status, spec = session.execute(_CAMPAIGN, {"id": campaign_id}).one()
    campaign = status, spec_from(spec)
    if read is not None:
        read[campaign_id] = campaign
    return campaign


@cache
def _settle_contact(columns: tuple[str, ...], *, late: bool = False) -> sa.Update:
    """The update of :func:`settle` to a contact still being called, setting ``columns``; or,
    ``late``, to one whose last attempt ended ``unknown`` and that has not been called since."""
    if late:
        last = sa.select(ATTEMPTS.c.number).where(_ATTEMPT_ID).scalar_subquery()
        still_its = sa.and_(
            CONTACTS.c.attempts == last,
            sa.or_(CONTACTS.c.state == ContactState.PENDING, CONTACTS.c.result == ContactResult.UNKNOWN),
        )
    else:
        still_its = CONTACTS.c.state == ContactState.CALLING
    return (
        sa.update(CONTACTS)
        .where(_CONTACT_ID, still_its)
        .values({column: sa.bindparam(f"b_{column}") for column in columns})
    )


_REPLACE_UNKNOWN = (
    sa.update(ATTEMPTS)
    .where(ATTEMPTS.c.id == sa.bindparam("b_id"), ATTEMPTS.c.status == AttemptStatus.UNKNOWN)
    .values(
        status=sa.bindparam("b_status"),
        updated_at=sa.bindparam("b_now"),
        ended_at=sa.bindparam("b_now"),
        reason=sa.bindparam("b_reason"),
        duration=sa.func.coalesce(sa.bindparam("b_duration"), ATTEMPTS.c.duration),
        price=sa.func.coalesce(sa.bindparam("b_price"), ATTEMPTS.c.price),
    )
)


@cache
def _advance(status: AttemptStatus, columns: tuple[str, ...]) -> sa.Update:
    """The guarded update of :func:`advance` to ``status``, setting ``columns``."""
    earlier = [s.value for s in earlier_than(status)]
    return (
        sa.update(ATTEMPTS)
        .where(ATTEMPTS.c.id == sa.bindparam("b_id"), among(ATTEMPTS.c.status, earlier))
        .values({column: sa.bindparam(f"b_{column}") for column in columns})
    )


def advance(session: Db, *, attempt_id: int, status: AttemptStatus, now: datetime, **fields: Any) -> bool:
    """Move an attempt forward to ``status``; False when it is already there or further on."""
    values = {"status": status.value, "updated_at": now, **fields}
    if status == AttemptStatus.ANSWERED:
        values.setdefault("answered_at", now)
    if status.is_final:
        values.setdefault("ended_at", now)
    params = {"b_id": attempt_id} | {f"b_{column}": value for column, value in values.items()}
    return changed(session, _advance(status, tuple(sorted(values))), params) == 1


def settle(
    session: Db,
    *,
    attempt: AttemptLike,
    outcome: AttemptStatus,
    spec: CampaignSpec,
    campaign_status: str,
    now: datetime,
    late: bool = False,
) -> None:
    """After a final outcome: finish the contact, or schedule its next attempt by the retry policy
    (``late``: the outcome replaces an ``unknown`` one, and settles the contact again if it has not
    been called since)."""
    values: dict[str, Any]
    if outcome == AttemptStatus.COMPLETED:
        opted_out, answered = session.execute(_CALL_RESULT, {"attempt": attempt.id}).one()
        result = (
            ContactResult.OPTED_OUT
            if opted_out
            else ContactResult.DTMF_ANSWERED
            if answered
            else ContactResult.REACHED
        )
        values = {"state": ContactState.DONE, "result": result}
    elif campaign_status == CampaignStatus.CANCELLED:
        values = {"state": ContactState.DONE, "result": ContactResult.CANCELLED}
    elif spec.schedule.over(now) and outcome != AttemptStatus.UNKNOWN:
        values = {"state": ContactState.DONE, "result": ContactResult.EXPIRED}
    else:
        made = session.scalar(_ATTEMPTS_MADE, {"contact": attempt.contact_id})
        retry_at = next_attempt_at(spec.retry, outcome=outcome, attempts_made=made or 0, ended_at=now)
        if retry_at is None:
            result = ContactResult.UNKNOWN if outcome == AttemptStatus.UNKNOWN else ContactResult.EXHAUSTED
            values = {"state": ContactState.DONE, "result": result}
        else:
            values = {"state": ContactState.PENDING, "next_attempt_at": retry_at}
    values["updated_at"] = now
    params = {"contact": attempt.contact_id, "attempt": attempt.id}
    params |= {f"b_{column}": value for column, value in values.items()}
    settled = changed(session, _settle_contact(tuple(sorted(values)), late=late), params) == 1
    if settled and values["state"] == ContactState.DONE:
        notify.contacts_finished(
            session, spec, campaign_id=attempt.campaign_id, contact_ids=[attempt.contact_id], now=now
        )


def finish(
    session: Db,
    *,
    attempt: AttemptLike,
    status: AttemptStatus,
    now: datetime,
    reason: str | None = None,
    **figures: Any,
) -> bool:
    """End an attempt with a final ``status`` (and the call's ``figures``: duration, price) and
    settle its contact; False if it had already ended, and then nothing is written.

    An attempt that ended ``unknown`` (no result came in time) takes the result that comes late,
    and its contact is settled by it, unless it has been called again since."""
    late = False
    if not advance(session, attempt_id=attempt.id or 0, status=status, now=now, reason=reason, **figures):
        if status == AttemptStatus.UNKNOWN:
            return False
        replaced = {"b_id": attempt.id, "b_status": status.value, "b_now": now, "b_reason": reason}
        replaced |= {"b_duration": figures.get("duration"), "b_price": figures.get("price")}
        if changed(session, _REPLACE_UNKNOWN, replaced) != 1:
            return False
        late = True
    campaign_status, spec = _campaign(session, attempt.campaign_id)
    if spec.notify.url and spec.notify.attempts:
        notify.add(
            session,
            campaign_id=attempt.campaign_id,
            contact_ids=[attempt.contact_id],
            attempt_id=attempt.id,
            kind=notify.ATTEMPT_ENDED,
            now=now,
        )
    settle(
        session,
        attempt=attempt,
        outcome=status,
        spec=spec,
        campaign_status=campaign_status,
        now=now,
        late=late,
    )
    return True


def apply_event(
    session: Db, *, attempt: AttemptLike, event: CallEvent, now: datetime, provider_title: str = ""
) -> None:
    """Record one provider event on its attempt, never moving the attempt backwards."""
    if event.account_problem:
        _blocked_by_account(session, attempt=attempt, event=event, now=now, title=provider_title)
        return
    if event.answered_by:
        # Who answered belongs to the call while it lasts: a late event never rewrites a finished one.
        session.execute(_ANSWERED_BY, {"attempt": attempt.id, "answered_by": event.answered_by})
    status = event.status
    if status is None:
        return
    answered_by = event.answered_by or attempt.answered_by
    if status == AttemptStatus.COMPLETED and answered_by == "machine":
        status = AttemptStatus.MACHINE
    # The call's figures are written with the status change that owns them, in its guarded
    # statement: a duplicate or late event finds the change made and writes nothing.
    figures = {
        name: value
        for name, value in (("duration", event.duration), ("price", event.price))
        if value is not None
    }
    if status.is_final:
        finish(session, attempt=attempt, status=status, now=now, reason=event.reason, **figures)
    else:
        advance(session, attempt_id=attempt.id or 0, status=status, now=now, **figures)


def _blocked_by_account(
    session: Db, *, attempt: AttemptLike, event: CallEvent, now: datetime, title: str
) -> None:
    """The provider account, not the callee, stopped the call: pause every campaign on that
    account and give the contact back its turn, to be called once the operator has fixed it."""
    from dialer.operations import route_around

    reason = f"{title or attempt.provider}: {event.account_problem}"
    if not advance(session, attempt_id=attempt.id or 0, status=AttemptStatus.FAILED, now=now, reason=reason):
        return
    session.execute(
        sa.update(CONTACTS)
        .where(CONTACTS.c.id == attempt.contact_id, CONTACTS.c.state == ContactState.CALLING)
        .values(state=ContactState.PENDING, next_attempt_at=now, updated_at=now)
    )
    simulated = session.scalar(sa.select(ATTEMPTS.c.simulated).where(ATTEMPTS.c.id == attempt.id))
    # A simulator's balance is nobody's: a simulated call moves its own campaign only.
    only = [attempt.campaign_id] if simulated else None
    route_around(
        session, provider=attempt.provider, reason=reason, cause="balance", now=now, campaign_ids=only
    )


def _call_over(session: Db, attempt_id: int) -> bool:
    status = session.scalar(_STATUS, {"attempt": attempt_id})
    # An attempt given up as ``unknown`` may be a call still going on: its inputs are answered.
    return status is not None and AttemptStatus(status).is_final and status != AttemptStatus.UNKNOWN


@dataclass(frozen=True)
class _Call:
    """What an input is taken in: its attempt, the campaign's call, and the callback that brought it."""

    attempt: AttemptRow
    spec: CampaignSpec
    provider: Provider
    settings: Any
    """The provider account's settings."""
    webhook: Webhook
    token: str
    public_url: str

    def order(self, session: Db) -> CallOrder:
        """The call as its provider's compiler takes it (the contact read for its number and columns)."""
        phone, variables, extension, caller_id = session.execute(
            _CONTACT, {"contact": self.attempt.contact_id, "attempt": self.attempt.id}
        ).one()
        return order_for(
            self.spec,
            caller_id=caller_id,
            to=phone,
            variables=variables or {},
            extension=extension,
            callback_url=callback_base(self.public_url, self.provider.name, self.token),
            reference=str(self.attempt.id),
        )

    def position(self) -> tuple[str, int, int] | None:
        """The question an input answers, the call's segment that asked it, and its try: from the
        callback's URL (each question's carries them), else the flow's one question (providers
        that ask one question a call report its answer once). None: the step is not in the flow."""
        query, flow = self.webhook.query, self.spec.call_flow
        name = query.get("step")
        try:
            seq = int(query.get("seq", self.attempt.step_seq))
            tries = int(query.get("try", 1))
        except ValueError:
            raise WebhookPayloadError("seq and try are numbers") from None
        if name is None:
            question = first_question(flow)
            if question is None:
                return None
            name = question[0]
            if not self.provider.replies_mid_call:
                tries = flow.steps[name].attempts  # the provider asked as often as the step allows
        return (name, seq, tries) if name in flow.steps else None


def take_input(
    session: Db, call: _Call, event: CallEvent, position: tuple[str, int, int] | None, *, now: datetime
) -> Any:
    """Take keys pressed for a question; the provider's reply that runs the call on, if any.

    The input belongs to one segment of the call (its URL says which). It is taken only while the
    call is in that segment, and moves it on to the next in the same guarded statement: a late or
    repeated input never advances the flow twice, never writes a second answer, and never places a
    second transfer. Keys arriving in pieces (Routee) are kept until the answer is complete: the
    terminator pressed, as many keys as the question takes, or the call over.
    """
    attempt, flow, provider = call.attempt, call.spec.call_flow, call.provider
    if position is None or position[1] != attempt.step_seq:
        return None  # for a question the call has left (or a flow changed since)
    name, seq, tries = position
    step, over = flow.steps[name], _call_over(session, attempt.id)
    digits = event.digits or ""
    if not event.input_complete:
        piece, hashed, _ = digits.partition("#")
        heard = attempt.dtmf_heard or ""
        if provider.repeats_tones(call.settings) and piece.startswith(heard):
            piece = piece[len(heard) :]  # each post brings every tone of the call: keep the new ones
        added = {"attempt": attempt.id, "piece": piece, "step": name}
        buffer: str = session.execute(_ADD_TO_BUFFER, added).scalar_one() or ""
        ended = bool(hashed) and step.rules.terminator == "#"
        if not ended and len(buffer) < step.rules.max_digits and not over:
            more = provider.keep_collecting
            if more is None or not _next_segment(session, attempt.id, seq):
                return None
            return more(call.order(session), name, step, seq + 1, tries, len(buffer))
        digits = buffer
        session.execute(_CLEAR_BUFFER, {"attempt": attempt.id})
    live = provider.replies_mid_call and not over
    if live and not _next_segment(session, attempt.id, seq):
        return None  # another copy of this input moved the call on first
    turn = judge(flow, name, digits, tries=tries, final=not live)
    if turn.answer is not None:
        _keep_answer(session, attempt, step=name, seq=seq, answer=turn.answer, now=now)
    if turn.then is None:
        return provider.end_call if live else None
    order = call.order(session)
    _act(session, call, turn.then, order, placed=live, digits=digits, now=now)
    if not live or provider.compile_segment is None:
        return None
    return provider.compile_segment(turn.then, order, seq + 1) or None


def _next_segment(session: Db, attempt_id: int, seq: int) -> bool:
    return changed(session, _NEXT_SEGMENT, {"attempt": attempt_id, "seq": seq}) == 1


def _keep_answer(
    session: Db,
    attempt: AttemptLike,
    *,
    step: str,
    seq: int,
    answer: Answer,
    now: datetime,
    recording: str | None = None,
) -> None:
    stored = insert_new(
        session,
        DtmfAnswer,
        attempt_id=attempt.id or 0,
        contact_id=attempt.contact_id,
        step=step,
        seq=seq,
        digits=answer.digits,
        choice=answer.choice,
        valid=answer.valid,
        recording=recording,
        received_at=now,
    )
    if stored and answer.valid:
        # The call may already be settled as reached: an answer that arrives late still counts.
        session.execute(_ANSWERED_LATE, {"contact": attempt.contact_id})


def _act(
    session: Db, call: _Call, then: Segment, order: CallOrder, *, placed: bool, digits: str, now: datetime
) -> None:
    """Do the dialer's part of the actions a segment holds, before the provider hears of it: an
    opt-out's number on the do-not-call list (even when the call is over and the confirmation
    goes unheard: the key was pressed), and a transfer's number on the attempt."""
    attempt = call.attempt
    for name, step in then.actions():
        if step.action == "optout":
            session.execute(
                _ADD_DNC,
                {
                    "phone": order.to,
                    "campaign": attempt.campaign_id if step.scope == "campaign" else None,
                    "reason": "opted out on a call",
                    "source": f"key {digits}, step {name}, campaign {call.spec.name}, attempt {attempt.id}",
                    "now": now,
                },
            )
            session.execute(_OPTED_OUT, {"attempt": attempt.id})
            session.execute(_OPTED_OUT_LATE, {"contact": attempt.contact_id})
        elif step.action == "transfer" and placed:
            session.execute(_TRANSFER_TO, {"attempt": attempt.id, "b_to": order.transfer_number(step)})


def record_transfer(session: Db, attempt: AttemptLike, event: CallEvent) -> None:
    """How the leg a transfer placed went: its status only forward (answered stays answered once
    the leg completes), and its length once."""
    status = event.status
    if status is None:
        return
    if status == AttemptStatus.COMPLETED:
        status = AttemptStatus.ANSWERED
    earlier = [s.value for s in earlier_than(status)]
    session.execute(
        sa.update(ATTEMPTS)
        .where(
            _ATTEMPT_ID,
            sa.or_(ATTEMPTS.c.transfer_status.is_(None), among(ATTEMPTS.c.transfer_status, earlier)),
        )
        .values(transfer_status=status.value),
        {"attempt": attempt.id},
    )
    if event.duration is not None and event.status == AttemptStatus.COMPLETED:
        session.execute(_TRANSFER_SECONDS, {"attempt": attempt.id, "seconds": event.duration})


def record_recording(session: Db, call: _Call, event: CallEvent, *, now: datetime) -> None:
    """Keep a record step's recording as that step's answer (valid when something was recorded)."""
    position = call.position()
    if position is None or call.spec.call_flow.steps[position[0]].action != "record":
        raise WebhookPayloadError("a recording for a step that does not record")
    name, seq, _ = position
    url = event.recording or None
    _keep_answer(
        session,
        call.attempt,
        step=name,
        seq=seq,
        answer=Answer("", None, url is not None),
        now=now,
        recording=url,
    )


def _bind_call_id(session: Db, *, attempt: AttemptLike, call_id: str) -> None:
    """Tie the attempt to the provider's call id the first time one is seen; refuse a callback
    about another call (a forged or misrouted one, or a signed one replayed to another URL)."""
    if attempt.provider_call_id is None:
        try:
            with session.begin_nested():
                session.execute(
                    sa.update(ATTEMPTS)
                    .where(ATTEMPTS.c.id == attempt.id, ATTEMPTS.c.provider_call_id.is_(None))
                    .values(provider_call_id=call_id)
                )
        except sa.exc.IntegrityError:
            raise WebhookAuthError(f"call id {call_id!r} belongs to another attempt") from None
        known = session.scalar(sa.select(ATTEMPTS.c.provider_call_id).where(ATTEMPTS.c.id == attempt.id))
    else:
        known = attempt.provider_call_id
    if known != call_id:
        raise WebhookAuthError("callback about another call than its attempt's")


def _check_input_time(attempt: AttemptRow, now: datetime) -> None:
    """DTMF input belongs to an answered call: while it lasts, or just after it ended (some
    providers post the keys when the call ends)."""
    current = AttemptStatus(attempt.status)
    if not current.is_final or current == AttemptStatus.UNKNOWN:
        return
    if current not in (AttemptStatus.COMPLETED, AttemptStatus.MACHINE):
        raise WebhookPayloadError(f"DTMF input for a call that was not answered ({current})")
    if attempt.ended_at is not None and attempt.ended_at < now - INPUT_AFTER_END:
        raise WebhookPayloadError("DTMF input long after the call ended")


@dataclass(frozen=True)
class Received:
    """A callback to record: the provider that sent it (and its settings here), for which token."""

    provider: Provider
    settings: Any
    token: str
    webhook: Webhook


@dataclass(frozen=True)
class _Admitted:
    """A callback authenticated and parsed, and the row that keeps it."""

    callback: Received
    attempt: AttemptRow | None
    """None: its call id is not known yet, and the callback is held until it is."""
    event: CallEvent
    row: dict[str, Any]


def _row(
    received: Received, *, attempt_id: int | None, now: datetime, call_id: str | None = None
) -> dict[str, Any]:
    """The ``webhookevent`` row that keeps a callback as received; a redelivery has the same key."""
    provider, webhook = received.provider, received.webhook
    parts = [provider.name.encode(), received.token.encode(), webhook.kind.encode(), webhook.body]
    if webhook.method == "POST" and webhook.query:
        # The URL names the question and the call's segment: the same keys twice in one call
        # (Routee's posts carry nothing else) are two callbacks, not one sent again.
        parts.append(urlencode(sorted(webhook.query.items())).encode())
    digest = hashlib.sha256(b"\0".join(parts))
    return {
        "provider": provider.name,
        "kind": webhook.kind,
        "attempt_id": attempt_id,
        "call_id": call_id,
        "dedupe_key": digest.hexdigest(),
        "payload": webhook.body.decode("utf-8", "replace"),
        "received_at": now,
    }


def apply_held(
    session: Session, *, provider: Provider, now: datetime, call_id: str | None = None, settings: Any = None
) -> int:
    """Apply the callbacks kept before their call id was known, to the attempts that now know it
    (only ``call_id``'s, if given); return how many were applied."""
    held = session.exec(
        select(WebhookEvent, Attempt)
        .join(
            Attempt,
            (ATTEMPTS.c.provider == col(WebhookEvent.provider))
            & (ATTEMPTS.c.provider_call_id == col(WebhookEvent.call_id)),
        )
        .where(col(WebhookEvent.provider) == provider.name, col(WebhookEvent.attempt_id).is_(None))
        .where(col(WebhookEvent.call_id) == call_id if call_id is not None else sa.true())
        .order_by(col(WebhookEvent.id))
    ).all()
    applied = 0
    for kept, attempt in held:
        claimed = sa.update(WebhookEvent).where(
            col(WebhookEvent.id) == kept.id, col(WebhookEvent.attempt_id).is_(None)
        )
        if changed(session, claimed.values(attempt_id=attempt.id)) != 1:
            continue  # applied by another process meanwhile
        webhook = Webhook(kind=kept.kind, method="POST", headers={}, query={}, body=kept.payload.encode())
        apply_event(
            session,
            attempt=attempt,
            event=provider.parse_webhook(webhook, settings),
            now=now,
            provider_title=provider.title,
        )
        session.refresh(attempt)
        applied += 1
    return applied


def record_webhooks(
    session: Db,
    callbacks: list[Received],
    *,
    now: datetime,
    public_url: str,
    grace: timedelta = TOKEN_GRACE,
) -> list[Any]:
    """Record callbacks in one transaction; each one's reply (see :func:`record_webhook`).

    The first callback of each token is authenticated, and all of those are kept in one statement
    before any is applied. A token's later callbacks come after them, one at a time and in their
    order, so that each sees what the callbacks before it changed (keys pressed after the call
    ended busy are refused).
    Fractel calls back on its account's token, so its callbacks after a group's first are of that kind.
    """
    firsts: list[int] = []
    later: list[int] = []
    tokens: set[str] = set()
    for index, callback in enumerate(callbacks):
        (later if callback.token in tokens else firsts).append(index)
        tokens.add(callback.token)
    replies: dict[int, Any] = {}
    with _read_together(session, list(tokens)):
        for together in [firsts, *([index] for index in later)]:
            admitted = {index: _admit(session, callbacks[index], now=now, grace=grace) for index in together}
            rows = [each.row for each in admitted.values()]
            kept = insert_new_rows(session, EVENTS, rows, key=EVENTS.c.dedupe_key)
            again = [
                each.row["dedupe_key"] for each in admitted.values() if each.row["dedupe_key"] not in kept
            ]
            given = dict(session.execute(_REPLIES, {"keys": again}).all()) if again else {}
            for index, each in admitted.items():
                key = each.row["dedupe_key"]
                if key not in kept:  # sent again: not applied again, but answered as the first time
                    replies[index] = json.loads(given[key]) if key in given else None
                    continue
                replies[index] = reply = _apply(session, each, now=now, public_url=public_url)
                if reply is not None:
                    session.execute(_REPLY, {"key": key, "reply": json.dumps(reply)})
    return [replies[index] for index in range(len(callbacks))]


def record_webhook(
    session: Db,
    *,
    provider: Provider,
    settings: Any,
    token: str,
    webhook: Webhook,
    now: datetime,
    public_url: str,
    grace: timedelta = TOKEN_GRACE,
) -> Any:
    """Authenticate, store once and apply one callback; return the provider's expected reply, if any.

    The callback is authenticated (the provider's signature or credentials, then the attempt's
    token, which lapses ``grace`` after its attempt ended) before its body is parsed. Once an
    attempt knows its call id, a callback about another call is refused; DTMF input is taken only
    for a call that is up, or was answered and ended moments ago.
    """
    received = Received(provider, settings, token, webhook)
    return record_webhooks(session, [received], now=now, public_url=public_url, grace=grace)[0]


def _admit(session: Db, received: Received, *, now: datetime, grace: timedelta) -> _Admitted:
    """Authenticate and parse a callback, and find its attempt (see :func:`record_webhook`)."""
    provider, webhook = received.provider, received.webhook
    provider.verify_webhook(webhook, received.settings)
    if provider.per_call_callbacks:
        attempt = _attempt_by_token(session, received.token)
        if attempt is None or attempt.provider != provider.name:
            raise WebhookAuthError("unknown callback token")
        if attempt.ended_at is not None and attempt.ended_at < now - grace:
            raise WebhookAuthError("callback token lapsed: its call ended long ago")
        event = provider.parse_webhook(webhook, received.settings)
        if event.call_id:
            _bind_call_id(session, attempt=attempt, call_id=event.call_id)
    else:
        event = provider.parse_webhook(webhook, received.settings)
        found = _attempt(session, _BY_CALL, provider=provider.name, call_id=event.call_id)
        if found is None:
            # The provider called back before its create-call answer reached us (Fractel answers
            # when the call connects): keep the callback until the call id is known.
            if not event.call_id:
                raise WebhookPayloadError(f"{provider.title} callback without a call id")
            return _Admitted(
                received, None, event, _row(received, attempt_id=None, now=now, call_id=event.call_id)
            )
        attempt = found
    if event.digits is not None:
        _check_input_time(attempt, now)
    return _Admitted(received, attempt, event, _row(received, attempt_id=attempt.id, now=now))


def _apply(session: Db, admitted: _Admitted, *, now: datetime, public_url: str) -> Any:
    """Apply a callback kept for the first time to its attempt; the provider's expected reply."""
    attempt, event, callback = admitted.attempt, admitted.event, admitted.callback
    provider = callback.provider
    if attempt is None:
        return None  # held until its call id is known
    if event.transfer:
        record_transfer(session, attempt, event)
        return None
    apply_event(session, attempt=attempt, event=event, now=now, provider_title=provider.title)
    leave_message = event.message_now and provider.reply_to_machine is not None
    finished = event.status is not None and event.status.is_final
    if event.digits is None and event.recording is None and not leave_message and not finished:
        return None
    _, spec = _campaign(session, attempt.campaign_id)
    call = _Call(attempt, spec, provider, callback.settings, callback.webhook, callback.token, public_url)
    if leave_message:  # a machine is ready to record: leave the message, skip the questions
        assert provider.reply_to_machine is not None
        session.execute(_MESSAGE_LEFT, {"attempt": attempt.id})
        return provider.reply_to_machine(call.order(session)) or None
    if event.recording is not None:
        record_recording(session, call, event, now=now)
        return None
    if event.digits is None:
        # The call is over: an answer still arriving in pieces is judged as it stands.
        if attempt.dtmf_buffer and attempt.dtmf_step:
            position = (attempt.dtmf_step, attempt.step_seq, 1)
            take_input(session, call, CallEvent(digits="", input_complete=False), position, now=now)
        return None
    return take_input(session, call, event, call.position(), now=now)
