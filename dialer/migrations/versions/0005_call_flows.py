"""Call flows: answers per step, the segment a call runs, opt-outs, transfers, recordings, replies

Revision ID: 9a1b2c3d4e5f
Revises: 8f2a3b4c5d6e
Create Date: 2026-12-04 17:00:00

An answer was unique per attempt; a call now answers one question per step (and a step asked
again in the same call, in another segment, once more). Existing answers are their campaign's
``question`` step, asked in the call's first segment. The count of judged answers an attempt
kept (``dtmf_rounds``) is carried by each question's callback URL instead.
"""

import sqlalchemy as sa
from alembic import op

revision = "9a1b2c3d4e5f"
down_revision = "8f2a3b4c5d6e"
branch_labels = None
depends_on = None

_NAMES = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}


def _unique_on_attempt() -> str:
    for unique in sa.inspect(op.get_bind()).get_unique_constraints("dtmfanswer"):
        if unique["column_names"] == ["attempt_id"] and unique["name"]:
            return str(unique["name"])
    return "uq_dtmfanswer_attempt_id"


def upgrade() -> None:
    old = _unique_on_attempt()
    with op.batch_alter_table("dtmfanswer", schema=None, naming_convention=_NAMES) as batch_op:
        batch_op.add_column(
            sa.Column("step", sa.String(length=40), nullable=False, server_default="question")
        )
        batch_op.add_column(sa.Column("seq", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("recording", sa.String(length=500), nullable=True))
        batch_op.drop_constraint(old, type_="unique")
        batch_op.create_unique_constraint("uq_answer_step", ["attempt_id", "step", "seq"])
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dtmf_step", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("dtmf_heard", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("step_seq", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("opted_out", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("transfer_to", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("transfer_status", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("transfer_seconds", sa.Integer(), nullable=True))
        batch_op.drop_column("dtmf_rounds")
    with op.batch_alter_table("webhookevent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reply", sa.Text(), nullable=True))
    with op.batch_alter_table("dncentry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dncentry", schema=None) as batch_op:
        batch_op.drop_column("source")
    with op.batch_alter_table("webhookevent", schema=None) as batch_op:
        batch_op.drop_column("reply")
    with op.batch_alter_table("attempt", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dtmf_rounds", sa.Integer(), nullable=False, server_default="0"))
        for column in (
            "transfer_seconds",
            "transfer_status",
            "transfer_to",
            "opted_out",
            "step_seq",
            "dtmf_step",
            "dtmf_heard",
        ):
            batch_op.drop_column(column)
    op.execute("DELETE FROM dtmfanswer WHERE id NOT IN (SELECT MIN(id) FROM dtmfanswer GROUP BY attempt_id)")
    with op.batch_alter_table("dtmfanswer", schema=None) as batch_op:
        batch_op.drop_constraint("uq_answer_step", type_="unique")
        batch_op.create_unique_constraint("dtmfanswer_attempt_id_key", ["attempt_id"])
        for column in ("recording", "seq", "step"):
            batch_op.drop_column(column)
