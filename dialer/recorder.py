"""Recording what happened to attempts: forward-only status changes, DTMF answers, settling contacts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns.outcomes import (
    LIVE,
    AttemptStatus,
    CampaignStatus,
    ContactResult,
    ContactState,
    earlier_than,
)
from campaigns.retry import next_attempt_at
from campaigns.spec import CampaignSpec, Question
from dialer.db import Db, among, changed, insert_new, insert_new_rows
from dialer.errors import WebhookAuthError, WebhookPayloadError
from dialer.models import Attempt, Campaign, Contact, DtmfAnswer, WebhookEvent
from dialer.providers.base import CallEvent, InputVerdict, Provider, Webhook
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
_VALID_ANSWER = sa.select(ANSWERS.c.valid).where(
    ANSWERS.c.attempt_id == sa.bindparam("attempt"), ANSWERS.c.valid
)
_ATTEMPTS_MADE = sa.select(CONTACTS.c.attempts).where(_CONTACT_ID)
_VARIABLES = sa.select(CONTACTS.c.variables).where(_CONTACT_ID)
_ANSWERED_BY = (
    sa.update(ATTEMPTS)
    .where(_ATTEMPT_ID, among(ATTEMPTS.c.status, _LIVE))
    .values(answered_by=sa.bindparam("answered_by"))
)
_ADD_TO_BUFFER = (
    sa.update(ATTEMPTS)
    .where(_ATTEMPT_ID)
    .values(
        dtmf_buffer=sa.func.substr(
            sa.func.coalesce(ATTEMPTS.c.dtmf_buffer, "") + sa.bindparam("piece", type_=sa.String), 1, 64
        )
    )
    .returning(ATTEMPTS.c.dtmf_buffer)
)
_CLEAR_BUFFER = sa.update(ATTEMPTS).where(_ATTEMPT_ID).values(dtmf_buffer=None)
_NEXT_ROUND = (
    sa.update(ATTEMPTS)
    .where(_ATTEMPT_ID)
    .values(dtmf_rounds=ATTEMPTS.c.dtmf_rounds + 1)
    .returning(ATTEMPTS.c.dtmf_rounds)
)
_ANSWERED_LATE = (
    sa.update(CONTACTS)
    .where(_CONTACT_ID, CONTACTS.c.result == ContactResult.REACHED)
    .values(result=ContactResult.DTMF_ANSWERED)
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
def _settle_contact(columns: tuple[str, ...]) -> sa.Update:
    """The update of :func:`settle` to a contact still being called, setting ``columns``."""
    return (
        sa.update(CONTACTS)
        .where(_CONTACT_ID, CONTACTS.c.state == ContactState.CALLING)
        .values({column: sa.bindparam(f"b_{column}") for column in columns})
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
) -> None:
    """After a final outcome: finish the contact, or schedule its next attempt by the retry policy."""
    values: dict[str, Any]
    if outcome == AttemptStatus.COMPLETED:
        answered = session.scalar(_VALID_ANSWER, {"attempt": attempt.id})
        result = ContactResult.DTMF_ANSWERED if answered else ContactResult.REACHED
        values = {"state": ContactState.DONE, "result": result}
    elif campaign_status == CampaignStatus.CANCELLED:
        values = {"state": ContactState.DONE, "result": ContactResult.CANCELLED}
    else:
        made = session.scalar(_ATTEMPTS_MADE, {"contact": attempt.contact_id})
        retry_at = next_attempt_at(spec.retry, outcome=outcome, attempts_made=made or 0, ended_at=now)
        if retry_at is None:
            values = {"state": ContactState.DONE, "result": ContactResult.EXHAUSTED}
        else:
            values = {"state": ContactState.PENDING, "next_attempt_at": retry_at}
    values["updated_at"] = now
    params = {"contact": attempt.contact_id} | {f"b_{column}": value for column, value in values.items()}
    session.execute(_settle_contact(tuple(sorted(values))), params)


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
    settle its contact; False if it had already ended, and then nothing is written."""
    if not advance(session, attempt_id=attempt.id or 0, status=status, now=now, reason=reason, **figures):
        return False
    campaign_status, spec = _campaign(session, attempt.campaign_id)
    settle(session, attempt=attempt, outcome=status, spec=spec, campaign_status=campaign_status, now=now)
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
    from dialer.operations import pause_provider_campaigns

    reason = f"{title or attempt.provider}: {event.account_problem}"
    if not advance(session, attempt_id=attempt.id or 0, status=AttemptStatus.FAILED, now=now, reason=reason):
        return
    session.execute(
        sa.update(CONTACTS)
        .where(CONTACTS.c.id == attempt.contact_id, CONTACTS.c.state == ContactState.CALLING)
        .values(state=ContactState.PENDING, next_attempt_at=now, updated_at=now)
    )
    pause_provider_campaigns(session, provider=attempt.provider, reason=reason, now=now)


def _call_over(session: Db, attempt_id: int) -> bool:
    status = session.scalar(_STATUS, {"attempt": attempt_id})
    return status is not None and AttemptStatus(status).is_final


def take_input(
    session: Db,
    *,
    attempt: AttemptLike,
    question: Question,
    event: CallEvent,
    interactive: bool,
    now: datetime,
) -> tuple[Literal["accepted", "retry", "done", "more"], int]:
    """Take DTMF input: a whole answer, or a piece of one (``event.input_complete`` False).

    Pieces are added to the attempt's answer so far until it is complete: ``#`` (the question's
    terminator) pressed, as many digits as the question takes, or the call over; until then the
    outcome is ``more``. A complete answer is judged; a wrong one is asked again while the question
    has attempts left and the call is still up. Returns the outcome and the digits received so far.
    """
    attempt_id = attempt.id or 0
    digits = event.digits or ""
    if not event.input_complete:
        piece, hashed, _ = digits.partition("#")
        buffer = session.execute(_ADD_TO_BUFFER, {"attempt": attempt_id, "piece": piece}).scalar_one()
        ended = bool(hashed) and question.terminator == "#"
        if not ended and len(buffer or "") < question.max_digits and not _call_over(session, attempt_id):
            return "more", len(buffer or "")
        digits = buffer or ""
        _clear_buffer(session, attempt_id)
    return _judge(
        session, attempt=attempt, question=question, digits=digits, interactive=interactive, now=now
    )


def _clear_buffer(session: Db, attempt_id: int) -> None:
    """Empty the answer collected so far: it has been judged (a new round starts afresh)."""
    session.execute(_CLEAR_BUFFER, {"attempt": attempt_id})


def _judge_rest(session: Db, *, attempt: AttemptRow, question: Question, now: datetime) -> None:
    """At the end of the call: judge an answer left incomplete, if any arrived."""
    if rest := attempt.dtmf_buffer:
        _clear_buffer(session, attempt.id or 0)
        _judge(session, attempt=attempt, question=question, digits=rest, interactive=False, now=now)


def _judge(
    session: Db,
    *,
    attempt: AttemptLike,
    question: Question,
    digits: str,
    interactive: bool,
    now: datetime,
) -> tuple[Literal["accepted", "retry", "done"], int]:
    rounds = session.execute(_NEXT_ROUND, {"attempt": attempt.id}).scalar_one()
    final = not interactive or rounds >= question.attempts or _call_over(session, attempt.id or 0)
    outcome = record_input(session, attempt=attempt, question=question, digits=digits, final=final, now=now)
    return outcome, len(digits)


def record_input(
    session: Db, *, attempt: AttemptLike, question: Question, digits: str, final: bool, now: datetime
) -> Literal["accepted", "retry", "done"]:
    """Store the callee's DTMF answer, or ask for another try while the question allows it."""
    valid = question.accepts(digits)
    if not valid and not final:
        return "retry"
    stored = insert_new(
        session,
        DtmfAnswer,
        attempt_id=attempt.id or 0,
        contact_id=attempt.contact_id,
        digits=digits,
        choice=question.choice(digits) if valid else None,
        valid=valid,
        received_at=now,
    )
    if not stored:
        return "done"  # the attempt's answer is stored already
    if valid:
        # The call may already be settled as reached: an answer that arrives late still counts.
        session.execute(_ANSWERED_LATE, {"contact": attempt.contact_id})
    return "accepted" if valid else "done"


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
    if not current.is_final:
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
    digest = hashlib.sha256(
        b"\0".join([provider.name.encode(), received.token.encode(), webhook.kind.encode(), webhook.body])
    )
    return {
        "provider": provider.name,
        "kind": webhook.kind,
        "attempt_id": attempt_id,
        "call_id": call_id,
        "dedupe_key": digest.hexdigest(),
        "payload": webhook.body.decode("utf-8", "replace"),
        "received_at": now,
    }


def apply_held(session: Session, *, provider: Provider, now: datetime, call_id: str | None = None) -> int:
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
            event=provider.parse_webhook(webhook),
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
            for index, each in admitted.items():  # a redelivery of one kept already is not applied again
                new = each.row["dedupe_key"] in kept
                replies[index] = _apply(session, each, now=now, public_url=public_url) if new else None
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
        event = provider.parse_webhook(webhook)
        if event.call_id:
            _bind_call_id(session, attempt=attempt, call_id=event.call_id)
    else:
        event = provider.parse_webhook(webhook)
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
    attempt, event, provider = admitted.attempt, admitted.event, admitted.callback.provider
    if attempt is None:
        return None  # held until its call id is known
    apply_event(session, attempt=attempt, event=event, now=now, provider_title=provider.title)
    leave_message = event.message_now and provider.reply_to_machine is not None
    finished = event.status is not None and event.status.is_final
    if event.digits is None and not leave_message and not finished:
        return None
    _, spec = _campaign(session, attempt.campaign_id)
    if leave_message:  # a machine is ready to record: leave the message, skip the question
        assert provider.reply_to_machine is not None
        variables = session.scalar(_VARIABLES, {"contact": attempt.contact_id})
        return provider.reply_to_machine(spec.message, spec.message.render(variables or {}))
    if spec.question is None:
        return None
    if event.digits is None:
        # The call is over: an answer still arriving in pieces is judged as it stands.
        _judge_rest(session, attempt=attempt, question=spec.question, now=now)
        return None
    outcome, received = take_input(
        session,
        attempt=attempt,
        question=spec.question,
        event=event,
        interactive=provider.reply_to_input is not None,
        now=now,
    )
    if provider.reply_to_input is None:
        return None
    callback_url = f"{public_url.rstrip('/')}/webhooks/{provider.name}/{admitted.callback.token}"
    return provider.reply_to_input(
        InputVerdict(
            outcome=outcome,
            question=spec.question,
            callback_url=callback_url,
            language=spec.message.language,
            received=received,
        )
    )
