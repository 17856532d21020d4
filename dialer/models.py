"""The database tables: campaigns, contacts, call attempts, raw webhook events, DTMF answers, DNC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from campaigns.outcomes import LIVE


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _when(*, nullable: bool = True, index: bool = False, default_now: bool = False) -> Any:
    return Field(
        default_factory=utcnow if default_now else lambda: None,
        sa_type=UTCDateTime,
        nullable=nullable,
        index=index,
    )


class Campaign(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    provider: str = Field(max_length=20)
    spec: dict[str, Any] = Field(sa_type=sa.JSON)
    status: str = Field(max_length=20, default="draft", index=True)
    reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = _when(nullable=False, default_now=True)
    started_at: datetime | None = _when()
    finished_at: datetime | None = _when()
    runner: str | None = Field(default=None, max_length=200)
    """Who runs the campaign (a ``dialer run``, or the deployment's workers): see :mod:`dialer.lease`."""
    runner_since: datetime | None = _when()
    runner_seen: datetime | None = _when()
    """When the runner last renewed its lease."""
    simulated: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    """It has been run against a simulator only: the first real run asks first."""
    route_back_at: datetime | None = _when()
    """When its first route, left after a run of failures, is tried again."""
    route_cause: str | None = Field(default=None, max_length=20)
    """Why it left the route before the one in use: ``refused`` (credentials or the API's address),
    ``balance`` or ``failures``; None on its first route."""


class ZoneGroup(SQLModel, table=True):
    """The time zones that decide when a campaign's contacts may be called, shared by every contact
    whose number (or own zone) gives the same ones: the pump checks a calling window once per group,
    and claims only from the groups whose window is open."""

    __table_args__ = (sa.UniqueConstraint("campaign_id", "zones", "own"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    zones: str = Field(max_length=2000, description="IANA zone names, space-separated, sorted")
    own: bool = Field(
        description="the contact's own zone (from the file), which a campaign zone does not override"
    )


class Contact(SQLModel, table=True):
    __table_args__ = (
        # A number once per campaign, or once per extension behind it (a switchboard's colleagues).
        sa.UniqueConstraint("campaign_id", "phone", "extension", name="uq_contact_line"),
        # In the order the pump reads each open group (ties by id), so it stops after the rows it
        # wants; its first two columns serve the counts by state. One index: each costs every write.
        sa.Index("ix_contact_due", "campaign_id", "state", "zone_group_id", "next_attempt_at", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    phone: str = Field(max_length=16)
    extension: str = Field(
        default="",
        max_length=16,
        sa_column_kwargs={"server_default": ""},
        description="digits to send once the call is answered ('' for none)",
    )
    variables: dict[str, str] = Field(default_factory=dict, sa_type=sa.JSON)
    zone: str | None = Field(default=None, max_length=64, description="the contact's own time zone")
    zone_group_id: int | None = Field(default=None, foreign_key="zonegroup.id")
    row_number: int
    state: str = Field(default="pending", max_length=10)
    result: str | None = Field(default=None, max_length=20)
    attempts: int = 0
    next_attempt_at: datetime = _when(nullable=False, default_now=True)
    updated_at: datetime = _when(nullable=False, default_now=True)


_LIVE_ATTEMPT = sa.text(
    "status IN (" + ", ".join(f"'{status.value}'" for status in sorted(LIVE, key=lambda s: s.rank)) + ")"
)


class Attempt(SQLModel, table=True):
    __table_args__ = (
        sa.UniqueConstraint("contact_id", "number"),
        sa.Index("ix_attempt_phone", "phone", "queued_at"),
        sa.Index("ix_attempt_caller_id", "caller_id", "dispatched_at"),
        # At most one live call per contact, enforced by the database itself.
        sa.Index(
            "uq_attempt_live_contact",
            "contact_id",
            unique=True,
            sqlite_where=_LIVE_ATTEMPT,
            postgresql_where=_LIVE_ATTEMPT,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    contact_id: int = Field(foreign_key="contact.id")
    number: int
    provider: str = Field(max_length=20)
    status: str = Field(default="queued", max_length=20, index=True)
    callback_token: str = Field(max_length=64, unique=True)
    provider_call_id: str | None = Field(default=None, max_length=100, unique=True)
    answered_by: str | None = Field(default=None, max_length=10)
    reason: str | None = Field(default=None, max_length=500)
    send_failures: int = 0
    duration: int | None = None
    price: str | None = Field(default=None, max_length=20)
    dtmf_buffer: str | None = Field(default=None, max_length=64)
    """DTMF tones received so far, for providers that post an answer in pieces (Routee)."""
    dtmf_step: str | None = Field(default=None, max_length=40)
    """The question those tones answer."""
    dtmf_heard: str | None = Field(default=None, max_length=64)
    """Every tone the call's posts brought, in order (Routee's posts may repeat them all)."""
    step_seq: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    """Which segment of the call flow the call runs: 0 the one sent with the call, and one more for
    each reply to its input. An input is taken once, for the segment it belongs to."""
    opted_out: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    """The callee pressed the key of an opt-out: the number is on the do-not-call list."""
    transfer_to: str | None = Field(default=None, max_length=16)
    """The number the callee was connected to, if the flow transferred the call."""
    transfer_status: str | None = Field(default=None, max_length=20)
    """How the transfer's leg ended: answered (and then completed), busy, no_answer, failed..."""
    transfer_seconds: int | None = None
    simulated: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    """Placed with a provider's simulator (``dialer run --simulate``): not learnt from by ``plan``."""
    message_left: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    """A machine answered and was given the message to record (``on_machine = "leave_message"``)."""
    phone: str | None = Field(default=None, max_length=16)
    """The number called (the contact's), for the cap on calls per number across campaigns."""
    caller_id: str | None = Field(default=None, max_length=32)
    """The caller ID the call went out from (one of the campaign's pool)."""
    queued_at: datetime = _when(nullable=False, default_now=True)
    dispatched_at: datetime | None = _when()
    answered_at: datetime | None = _when()
    ended_at: datetime | None = _when()
    updated_at: datetime = _when(nullable=False, default_now=True)


class Notification(SQLModel, table=True):
    """A result to push to the operator's URL (the campaign's ``[notify]``): written in the
    transaction that settles it, deleted from nothing, marked when delivered (an outbox)."""

    __table_args__ = (sa.Index("ix_notification_due", "delivered_at", "next_try_at"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=36, unique=True)
    """Sent with every delivery of it: the receiver's key for idempotency."""
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    contact_id: int = Field(foreign_key="contact.id")
    attempt_id: int | None = Field(default=None, foreign_key="attempt.id")
    kind: str = Field(max_length=20)
    """``contact.finished`` or ``attempt.ended``."""
    created_at: datetime = _when(nullable=False, default_now=True)
    next_try_at: datetime | None = _when()
    """When it is (next) due; None once given up."""
    tries: int = 0
    delivered_at: datetime | None = _when()
    last_error: str | None = Field(default=None, max_length=500)


class WebhookEvent(SQLModel, table=True):
    """Every callback exactly as received, stored once (``dedupe_key`` is the body's hash)."""

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=20)
    kind: str = Field(max_length=20)
    attempt_id: int | None = Field(default=None, foreign_key="attempt.id", index=True)
    call_id: str | None = Field(default=None, max_length=100, index=True)
    """The provider's call id of a callback that arrived before its attempt knew it (held until then)."""
    dedupe_key: str = Field(max_length=64, unique=True)
    payload: str
    reply: str | None = Field(default=None, sa_type=sa.Text)
    """What the receiver answered (JSON), given again to a callback sent again."""
    received_at: datetime = _when(nullable=False, default_now=True)


class DtmfAnswer(SQLModel, table=True):
    """An answer to one question of a call: the keys pressed (or the recording made) at a step."""

    __table_args__ = (sa.UniqueConstraint("attempt_id", "step", "seq", name="uq_answer_step"),)

    id: int | None = Field(default=None, primary_key=True)
    attempt_id: int = Field(foreign_key="attempt.id")
    contact_id: int = Field(foreign_key="contact.id", index=True)
    step: str = Field(default="question", max_length=40, sa_column_kwargs={"server_default": "question"})
    """The flow's step that asked (``question`` for a campaign's ``[question]``)."""
    seq: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    """The call's segment that asked it (a step asked twice in a call has two answers)."""
    digits: str = Field(max_length=64)
    choice: str | None = Field(default=None, max_length=100)
    valid: bool
    recording: str | None = Field(default=None, max_length=500)
    """Where the provider keeps a record step's recording (fetched with its credentials)."""
    received_at: datetime = _when(nullable=False, default_now=True)


class DncEntry(SQLModel, table=True):
    """A number never to call: globally (no campaign) or in one campaign."""

    __table_args__ = (sa.UniqueConstraint("phone", "campaign_id"),)

    id: int | None = Field(default=None, primary_key=True)
    phone: str = Field(max_length=16, index=True)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id")
    reason: str | None = Field(default=None, max_length=200)
    source: str | None = Field(default=None, max_length=200)
    """How the number came on the list: ``dnc add``, ``dnc import FILE``, or a key pressed on a call."""
    added_at: datetime = _when(nullable=False, default_now=True)
