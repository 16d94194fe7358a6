"""delivery ledger: batch lifecycle, events, members; what Alma confirmed per patron

Batches built before the ledger existed had no delivery tracking: they are recorded as
confirmed, so upgrading does not re-send every patron.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:

    op.create_table(
        "batch_event",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("batch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batch.id"], name=op.f("fk_batch_event_batch_id_batch")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_event")),
    )
    with op.batch_alter_table("batch_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_event_batch_id"), ["batch_id"], unique=False)

    op.create_table(
        "batch_patron",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("batch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "patron_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("version_id", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batch.id"], name=op.f("fk_batch_patron_batch_id_batch")
        ),
        sa.ForeignKeyConstraint(
            ["patron_id"], ["patron.id"], name=op.f("fk_batch_patron_patron_id_patron")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_patron")),
        sa.UniqueConstraint(
            "batch_id", "patron_id", name=op.f("uq_batch_patron_batch_id_patron_id")
        ),
    )
    with op.batch_alter_table("batch_patron", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_patron_patron_id"), ["patron_id"], unique=False)

    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("picked_up_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("job_instance", sa.String(length=64), nullable=True))

    with op.batch_alter_table("patron", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirmed_digest", sa.LargeBinary(length=16), nullable=True))
        batch_op.add_column(sa.Column("confirmed_seq", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rejected_digest", sa.LargeBinary(length=16), nullable=True))
        batch_op.add_column(sa.Column("rejected_reason", sa.Text(), nullable=True))

    # Existing stores: what was built is taken as confirmed (there was no tracking before).
    op.execute(
        "INSERT INTO batch_patron (batch_id, patron_id, version_id, digest, outcome) "
        "SELECT v.batch_id, v.patron_id, v.id, v.digest, 'sent' "
        "FROM patron_version v WHERE v.batch_id IS NOT NULL"
    )
    op.execute(
        "UPDATE batch SET status = 'confirmed', resolved_at = created_at WHERE status = 'built'"
    )
    op.execute(
        "UPDATE patron SET confirmed_digest = digest, confirmed_seq = "
        "(SELECT max(b.seq) FROM batch_patron bp JOIN batch b ON b.id = bp.batch_id "
        "WHERE bp.patron_id = patron.id) "
        "WHERE EXISTS (SELECT 1 FROM batch_patron bp WHERE bp.patron_id = patron.id)"
    )


def downgrade() -> None:

    with op.batch_alter_table("patron", schema=None) as batch_op:
        batch_op.drop_column("rejected_reason")
        batch_op.drop_column("rejected_digest")
        batch_op.drop_column("confirmed_seq")
        batch_op.drop_column("confirmed_digest")

    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.drop_column("job_instance")
        batch_op.drop_column("last_error")
        batch_op.drop_column("attempts")
        batch_op.drop_column("resolved_at")
        batch_op.drop_column("picked_up_at")
        batch_op.drop_column("uploaded_at")

    with op.batch_alter_table("batch_patron", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batch_patron_patron_id"))

    op.drop_table("batch_patron")
    with op.batch_alter_table("batch_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batch_event_batch_id"))

    op.drop_table("batch_event")
