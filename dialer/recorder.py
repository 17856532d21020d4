"""Recording what happened to attempts: forward-only status changes, DTMF answers, settling contacts."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import Session, col, select

from campaigns.outcomes import (
    AttemptStatus,
    CampaignStatus,
    ContactResult,
    ContactState,
    earlier_than,
)
from campaigns.retry import next_attempt_at
from campaigns.spec import CampaignSpec, Question, render
from dialer.db import changed
from dialer.errors import WebhookAuthError, WebhookNotReady
from dialer.models import Attempt, Campaign, Contact, DtmfAnswer, WebhookEvent
from dialer.providers.base import CallEvent, InputVerdict, Provider, Webhook
from dialer.runtime import spec_of


def advance(
    session: Session, *, attempt_id: int, status: AttemptStatus, now: datetime, **fields: Any
) -> bool:
    """Move an attempt forward to ``status``; False when it is already there or further on."""
    values = {"status": status.value, "updated_at": now, **fields}
    if status == AttemptStatus.ANSWERED:
        values.setdefault("answered_at", now)
    if status.is_final:
        values.setdefault("ended_at", now)
    earlier = [s.value for s in earlier_than(status)]
    guarded = sa.update(Attempt).where(col(Attempt.id) == attempt_id, col(Attempt.status).in_(earlier))
    return changed(session, guarded.values(**values)) == 1


def settle(
    session: Session,
    *,
    attempt: Attempt,
    outcome: AttemptStatus,
    spec: CampaignSpec,
    campaign_status: str,
    now: datetime,
) -> None:
    """After a final outcome: finish the contact, or schedule its next attempt by the retry policy."""
    contact = session.get(Contact, attempt.contact_id)
    assert contact is not None
    values: dict[str, Any]
    if outcome == AttemptStatus.COMPLETED:
        answered = session.exec(
            select(col(DtmfAnswer.valid)).where(
                col(DtmfAnswer.attempt_id) == attempt.id, col(DtmfAnswer.valid)
            )
        ).first()
        result = ContactResult.DTMF_ANSWERED if answered else ContactResult.REACHED
        values = {"state": ContactState.DONE, "result": result}
    elif campaign_status == CampaignStatus.CANCELLED:
        values = {"state": ContactState.DONE, "result": ContactResult.CANCELLED}
    else:
        retry_at = next_attempt_at(spec.retry, outcome=outcome, attempts_made=contact.attempts, ended_at=now)
        if retry_at is None:
            values = {"state": ContactState.DONE, "result": ContactResult.EXHAUSTED}
        else:
            values = {"state": ContactState.PENDING, "next_attempt_at": retry_at}
    session.execute(
        sa.update(Contact)
        .where(col(Contact.id) == contact.id, col(Contact.state) == ContactState.CALLING)
        .values(updated_at=now, **values)
    )


def finish(
    session: Session, *, attempt: Attempt, status: AttemptStatus, now: datetime, reason: str | None = None
) -> bool:
    """End an attempt with a final ``status`` and settle its contact; False if it had already ended."""
    if not advance(session, attempt_id=attempt.id or 0, status=status, now=now, reason=reason):
        return False
    campaign = session.get(Campaign, attempt.campaign_id)
    assert campaign is not None
    settle(
        session,
        attempt=attempt,
        outcome=status,
        spec=spec_of(campaign),
        campaign_status=campaign.status,
        now=now,
    )
    return True


def apply_event(session: Session, *, attempt: Attempt, event: CallEvent, now: datetime) -> None:
    """Record one provider event on its attempt, never moving the attempt backwards."""
    notes: dict[str, Any] = {}
    if event.answered_by:
        notes["answered_by"] = event.answered_by
    if event.duration is not None:
        notes["duration"] = event.duration
    if event.price is not None:
        notes["price"] = event.price
    if notes:
        session.execute(sa.update(Attempt).where(col(Attempt.id) == attempt.id).values(**notes))
    if event.call_id and attempt.provider_call_id is None:
        session.execute(
            sa.update(Attempt)
            .where(col(Attempt.id) == attempt.id, col(Attempt.provider_call_id).is_(None))
            .values(provider_call_id=event.call_id)
        )
    status = event.status
    if status is None:
        return
    answered_by = event.answered_by or attempt.answered_by
    if status == AttemptStatus.COMPLETED and answered_by == "machine":
        status = AttemptStatus.MACHINE
    if status.is_final:
        finish(session, attempt=attempt, status=status, now=now, reason=event.reason)
    else:
        advance(session, attempt_id=attempt.id or 0, status=status, now=now)


def record_input(
    session: Session, *, attempt: Attempt, question: Question, digits: str, final: bool, now: datetime
) -> Literal["accepted", "retry", "done"]:
    """Store the callee's DTMF answer, or ask for another try while the question allows it."""
    valid = question.accepts(digits)
    if not valid and not final:
        return "retry"
    try:
        with session.begin_nested():
            session.add(
                DtmfAnswer(
                    attempt_id=attempt.id or 0,
                    contact_id=attempt.contact_id,
                    digits=digits,
                    choice=question.choice(digits) if valid else None,
                    valid=valid,
                    received_at=now,
                )
            )
    except sa.exc.IntegrityError:
        return "done"
    if valid:
        # The call may already be settled as reached: an answer that arrives late still counts.
        session.execute(
            sa.update(Contact)
            .where(col(Contact.id) == attempt.contact_id, col(Contact.result) == ContactResult.REACHED)
            .values(result=ContactResult.DTMF_ANSWERED)
        )
    return "accepted" if valid else "done"


def record_webhook(
    session: Session,
    *,
    provider: Provider,
    settings: Any,
    token: str,
    webhook: Webhook,
    now: datetime,
    public_url: str,
) -> Any:
    """Authenticate, store once and apply one callback; return the provider's expected reply, if any."""
    provider.verify_webhook(webhook, settings)
    event = provider.parse_webhook(webhook)
    if provider.per_call_callbacks:
        attempt = session.exec(select(Attempt).where(col(Attempt.callback_token) == token)).first()
        if attempt is None or attempt.provider != provider.name:
            raise WebhookAuthError("unknown callback token")
    else:
        attempt = session.exec(
            select(Attempt).where(
                col(Attempt.provider) == provider.name, col(Attempt.provider_call_id) == event.call_id
            )
        ).first()
        if attempt is None:
            # The provider can call back before its create-call answer reached us: come again.
            raise WebhookNotReady(f"no attempt with {provider.title} call id {event.call_id!r} yet")
    digest = hashlib.sha256(
        b"\0".join([provider.name.encode(), token.encode(), webhook.kind.encode(), webhook.body])
    )
    try:
        with session.begin_nested():
            session.add(
                WebhookEvent(
                    provider=provider.name,
                    kind=webhook.kind,
                    attempt_id=attempt.id,
                    dedupe_key=digest.hexdigest(),
                    payload=webhook.body.decode("utf-8", "replace"),
                    received_at=now,
                )
            )
    except sa.exc.IntegrityError:
        return None  # a redelivery of a callback already recorded
    apply_event(session, attempt=attempt, event=event, now=now)
    answers_machine = event.answered_by == "machine" and provider.reply_to_machine is not None
    if not event.input_complete and not answers_machine:
        return None
    campaign = session.get(Campaign, attempt.campaign_id)
    assert campaign is not None
    spec = spec_of(campaign)
    if not event.input_complete:  # a machine answered: leave the message, skip the question
        assert provider.reply_to_machine is not None
        contact = session.get(Contact, attempt.contact_id)
        assert contact is not None
        text = render(spec.message.text, contact.variables) if spec.message.text is not None else None
        return provider.reply_to_machine(text, spec.message.audio_url, spec.message.language)
    if spec.question is None:
        return None
    interactive = provider.reply_to_input is not None
    rounds = session.scalar(
        sa.select(sa.func.count())
        .select_from(WebhookEvent)
        .where(col(WebhookEvent.attempt_id) == attempt.id, col(WebhookEvent.kind) == webhook.kind)
    )
    final = not interactive or (rounds or 0) >= spec.question.attempts
    verdict = record_input(
        session, attempt=attempt, question=spec.question, digits=event.digits or "", final=final, now=now
    )
    if provider.reply_to_input is None:
        return None
    callback_url = f"{public_url.rstrip('/')}/webhooks/{provider.name}/{token}"
    return provider.reply_to_input(
        InputVerdict(
            outcome=verdict, question=spec.question, callback_url=callback_url, language=spec.message.language
        )
    )
