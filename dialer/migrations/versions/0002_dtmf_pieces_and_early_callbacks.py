"""DTMF answers that arrive in pieces; callbacks that arrive before their call id is known

Revision ID: 7c1d2e3f4a5b
Revises: 39bc62946f5f
Create Date: 2026-11-27 18:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "7c1d2e3f4a5b"
down_revision = "39bc62946f5f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dtmf_buffer", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("dtmf_rounds", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("webhookevent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("call_id", sa.String(length=100), nullable=True))
        batch_op.create_index(batch_op.f("ix_webhookevent_call_id"), ["call_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("webhookevent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhookevent_call_id"))
        batch_op.drop_column("call_id")
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.drop_column("dtmf_rounds")
        batch_op.drop_column("dtmf_buffer")
