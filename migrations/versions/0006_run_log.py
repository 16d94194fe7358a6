"""run log: every run of a feed and how it ended, and the records it held back

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "run",
        sa.Column("id", Id, nullable=False),
        sa.Column("feed", sa.String(length=64), nullable=False),
        sa.Column("command", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=False),
        sa.Column("extract", sa.Text(), nullable=True),
        sa.Column("batch_seq", sa.Integer(), nullable=True),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("attention", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run")),
    )
    op.create_index("ix_run_feed_started_at", "run", ["feed", "started_at"], unique=False)
    op.create_table(
        "run_held_back",
        sa.Column("id", Id, nullable=False),
        sa.Column("run_id", Id, nullable=False),
        sa.Column("match_id", sa.String(length=300), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_run_held_back_run_id_run")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_held_back")),
    )
    op.create_index(op.f("ix_run_held_back_run_id"), "run_held_back", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_run_held_back_run_id"), table_name="run_held_back")
    op.drop_table("run_held_back")
    op.drop_index("ix_run_feed_started_at", table_name="run")
    op.drop_table("run")
