"""audit and retention: prunable payloads, baseline extracts, rebuildable batches; the fixes
the snapshot was made with

New columns are added with plain ALTER TABLE, not batch mode: on SQLite batch mode copies and
drops the table, which foreign keys from other tables forbid once it holds rows. Only
patron_version, which no foreign key refers to, is rebuilt (to make payload nullable).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("feed", sa.Column("fixes", sa.Text(), nullable=True))
    op.add_column("batch", sa.Column("records_per_part", sa.Integer(), nullable=True))
    op.add_column(
        "extract", sa.Column("baseline", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    with op.batch_alter_table("patron_version", schema=None) as batch_op:
        batch_op.alter_column("payload", existing_type=sa.LargeBinary(), nullable=True)
        batch_op.create_index("ix_patron_version_first_seen", ["first_seen"], unique=False)


def downgrade() -> None:
    pruned = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM patron_version WHERE payload IS NULL"))
        .scalar_one()
    )
    if pruned:
        raise RuntimeError(
            f"cannot downgrade below 0003: retention pruned {pruned} record(s), and earlier "
            "versions need every payload; restore a backup taken before the upgrade"
        )
    with op.batch_alter_table("patron_version", schema=None) as batch_op:
        batch_op.drop_index("ix_patron_version_first_seen")
        batch_op.alter_column("payload", existing_type=sa.LargeBinary(), nullable=False)
    op.drop_column("extract", "baseline")
    op.drop_column("batch", "records_per_part")
    op.drop_column("feed", "fixes")
