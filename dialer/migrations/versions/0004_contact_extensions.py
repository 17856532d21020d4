"""Contacts behind one number: an extension, dialled after the call is answered

Revision ID: 8f2a3b4c5d6e
Revises: 5e8a9b0c1d2e
Create Date: 2026-11-27 19:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "8f2a3b4c5d6e"
down_revision = "5e8a9b0c1d2e"
branch_labels = None
depends_on = None

# SQLite's unique constraint on (campaign_id, phone) has no name: this one is given it to drop it.
_NAMES = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}


def _unique_name(columns: list[str]) -> str:
    for unique in sa.inspect(op.get_bind()).get_unique_constraints("contact"):
        if unique["column_names"] == columns and unique["name"]:
            return str(unique["name"])
    return "uq_contact_" + "_".join(columns)


def upgrade() -> None:
    old = _unique_name(["campaign_id", "phone"])
    with op.batch_alter_table("contact", schema=None, naming_convention=_NAMES) as batch_op:
        batch_op.add_column(sa.Column("extension", sa.String(length=16), nullable=False, server_default=""))
        batch_op.drop_constraint(old, type_="unique")
        batch_op.create_unique_constraint("uq_contact_line", ["campaign_id", "phone", "extension"])


def downgrade() -> None:
    with op.batch_alter_table("contact", schema=None) as batch_op:
        batch_op.drop_constraint("uq_contact_line", type_="unique")
        batch_op.create_unique_constraint("contact_campaign_id_phone_key", ["campaign_id", "phone"])
        batch_op.drop_column("extension")
