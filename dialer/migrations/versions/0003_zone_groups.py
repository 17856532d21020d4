"""Zone groups: contacts grouped by the time zones that decide their calling window

Revision ID: 5e8a9b0c1d2e
Revises: 7c1d2e3f4a5b
Create Date: 2026-11-27 19:00:00

Contacts that exist already are grouped by the pump, a few thousand per tick (dialer.zones).
The due index gains the group (and the id, the pump's tiebreak) after the state.
"""

import sqlalchemy as sa
from alembic import op

revision = "5e8a9b0c1d2e"
down_revision = "7c1d2e3f4a5b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zonegroup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("zones", sa.String(length=2000), nullable=False),
        sa.Column("own", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "zones", "own"),
    )
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.add_column(sa.Column("zone_group_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_contact_zone_group", "zonegroup", ["zone_group_id"], ["id"])
        batch_op.drop_index("ix_contact_due")
        batch_op.create_index(
            "ix_contact_due", ["campaign_id", "state", "zone_group_id", "next_attempt_at", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_due")
        batch_op.create_index("ix_contact_due", ["campaign_id", "state", "next_attempt_at"], unique=False)
        batch_op.drop_constraint("fk_contact_zone_group", type_="foreignkey")
        batch_op.drop_column("zone_group_id")
    op.drop_table("zonegroup")
