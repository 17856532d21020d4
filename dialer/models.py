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
    dtmf_rounds: int = 0
    """Complete answers judged so far (each wrong one may be asked again)."""
    queued_at: datetime = _when(nullable=False, default_now=True)
    dispatched_at: datetime | None = _when()
    answered_at: datetime | None = _when()
    ended_at: datetime | None = _when()
    updated_at: datetime = _when(nullable=False, default_now=True)


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
    received_at: datetime = _when(nullable=False, default_now=True)


class DtmfAnswer(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    attempt_id: int = Field(foreign_key="attempt.id", unique=True)
    contact_id: int = Field(foreign_key="contact.id", index=True)
    digits: str = Field(max_length=64)
    choice: str | None = Field(default=None, max_length=100)
    valid: bool
    received_at: datetime = _when(nullable=False, default_now=True)


class DncEntry(SQLModel, table=True):
    """A number never to call: globally (no campaign) or in one campaign."""

    __table_args__ = (sa.UniqueConstraint("phone", "campaign_id"),)

    id: int | None = Field(default=None, primary_key=True)
    phone: str = Field(max_length=16, index=True)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id")
    reason: str | None = Field(default=None, max_length=200)
    added_at: datetime = _when(nullable=False, default_now=True)
