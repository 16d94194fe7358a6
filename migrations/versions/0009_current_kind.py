"""the kind of each patron's current record, on the patron; versions indexed by last seen

``patron.current_kind`` copies ``patron_version.kind`` of ``patron.current_version_id``. Which
patrons to send asks it of every patron on every run (an expiration, a return, a renewal or a
refresh is sent until a confirmed batch carried it, even when its digest equals the confirmed
one); read from the version table, that was one random read into the largest table per patron.

``ix_patron_version_last_seen``: retention looks for records last seen before its window on every
run; without the index that read every version of the feed (ten million at a large site).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("patron", sa.Column("current_kind", sa.String(10), nullable=True))
    op.create_index("ix_patron_version_last_seen", "patron_version", ["last_seen"])
    patron = sa.table(
        "patron",
        sa.column("current_version_id", sa.Integer),
        sa.column("current_kind", sa.String),
    )
    version = sa.table("patron_version", sa.column("id", sa.Integer), sa.column("kind", sa.String))
    p, v = patron.c, version.c
    op.get_bind().execute(
        sa.update(patron)
        .where(p.current_version_id.is_not(None))
        .values(
            current_kind=sa.select(v.kind).where(v.id == p.current_version_id).scalar_subquery()
        )
    )


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+): batch mode would rebuild tables others refer to.
    op.drop_index("ix_patron_version_last_seen", table_name="patron_version")
    op.drop_column("patron", "current_kind")
