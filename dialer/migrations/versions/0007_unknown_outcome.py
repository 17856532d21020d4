"""A request the provider may have received unanswered is ``unconfirmed`` (a live state); ``unknown``
becomes the final outcome of an attempt whose result never came. Attempts say whether they were
simulated (``plan`` learns from real calls only) and whether they left a message on a machine,
and carry the number they called (a cap on calls per number counts them across campaigns) and the
caller ID they called from.

Revision ID: 1c2d3e4f5a6b
Revises: 0b1c2d3e4f5a
Create Date: 2026-12-04 19:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "1c2d3e4f5a6b"
down_revision = "0b1c2d3e4f5a"
branch_labels = None
depends_on = None

_BEFORE = "status IN ('queued', 'dispatching', 'unknown', 'dialing', 'ringing', 'answered')"
_AFTER = "status IN ('queued', 'dispatching', 'unconfirmed', 'dialing', 'ringing', 'answered')"


def _live_index(old: str, new: str) -> None:
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_attempt_live_contact", sqlite_where=sa.text(old), postgresql_where=sa.text(old)
        )
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.create_index(
            "uq_attempt_live_contact",
            ["contact_id"],
            unique=True,
            sqlite_where=sa.text(new),
            postgresql_where=sa.text(new),
        )


def upgrade() -> None:
    # Every 'unknown' so far was the live state: no attempt had the final outcome yet.
    op.execute("UPDATE attempt SET status = 'unconfirmed' WHERE status = 'unknown'")
    _live_index(_BEFORE, _AFTER)
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.add_column(sa.Column("simulated", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(
            sa.Column("message_left", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("phone", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("caller_id", sa.String(length=32), nullable=True))
    op.execute("UPDATE attempt SET phone = (SELECT phone FROM contact WHERE contact.id = attempt.contact_id)")
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.create_index("ix_attempt_phone", ["phone", "queued_at"], unique=False)
        batch_op.create_index("ix_attempt_caller_id", ["caller_id", "dispatched_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.drop_index("ix_attempt_caller_id")
        batch_op.drop_column("caller_id")
        batch_op.drop_index("ix_attempt_phone")
        batch_op.drop_column("phone")
        batch_op.drop_column("message_left")
        batch_op.drop_column("simulated")
    # The final outcome had no name before: it was 'failed'.
    op.execute("UPDATE attempt SET status = 'failed' WHERE status = 'unknown'")
    op.execute("UPDATE contact SET result = 'exhausted' WHERE result = 'unknown'")
    op.execute("UPDATE attempt SET status = 'unknown' WHERE status = 'unconfirmed'")
    _live_index(_AFTER, _BEFORE)
