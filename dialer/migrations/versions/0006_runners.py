"""Who runs each campaign (a lease), and whether it was only ever simulated

Revision ID: 0b1c2d3e4f5a
Revises: 9a1b2c3d4e5f
Create Date: 2026-12-04 18:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0b1c2d3e4f5a"
down_revision = "9a1b2c3d4e5f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.add_column(sa.Column("runner", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("runner_since", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("runner_seen", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("simulated", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        for column in ("simulated", "runner_seen", "runner_since", "runner"):
            batch_op.drop_column(column)
