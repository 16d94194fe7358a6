"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:

    op.create_table(
        "feed",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("match_id", sa.String(length=300), nullable=False),
        sa.Column("hash_recipe", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed")),
        sa.UniqueConstraint("name", name=op.f("uq_feed_name")),
    )
    op.create_table(
        "batch",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("feed_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("new", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("returned", sa.Integer(), nullable=False),
        sa.Column("departed", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["feed_id"], ["feed.id"], name=op.f("fk_batch_feed_id_feed")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch")),
        sa.UniqueConstraint("feed_id", "seq", name=op.f("uq_batch_feed_id_seq")),
    )
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_feed_id"), ["feed_id"], unique=False)

    op.create_table(
        "patron",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("feed_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("match_key", sa.String(length=300), nullable=False),
        sa.Column("match_id", sa.String(length=300), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=16), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("expiry_date", sa.Date(), nullable=True),
        sa.Column("current_version_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["feed_id"], ["feed.id"], name=op.f("fk_patron_feed_id_feed")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patron")),
        sa.UniqueConstraint("feed_id", "match_key", name=op.f("uq_patron_feed_id_match_key")),
    )
    op.create_table(
        "staged_record",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("feed_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("match_key", sa.String(length=300), nullable=False),
        sa.Column("match_id", sa.String(length=300), nullable=False),
        sa.Column("patron_id", sa.BigInteger(), nullable=True),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=16), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("expiry_date", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(
            ["feed_id"], ["feed.id"], name=op.f("fk_staged_record_feed_id_feed")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staged_record")),
    )
    with op.batch_alter_table("staged_record", schema=None) as batch_op:
        batch_op.create_index(
            "ix_staged_record_feed_id_match_key", ["feed_id", "match_key"], unique=False
        )
        batch_op.create_index("ix_staged_record_patron_id", ["patron_id"], unique=False)

    op.create_table(
        "extract",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("feed_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("batch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("new", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("departed", sa.Integer(), nullable=False),
        sa.Column("returned", sa.Integer(), nullable=False),
        sa.Column("held_back", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["batch.id"], name=op.f("fk_extract_batch_id_batch")),
        sa.ForeignKeyConstraint(["feed_id"], ["feed.id"], name=op.f("fk_extract_feed_id_feed")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_extract")),
        sa.UniqueConstraint("feed_id", "sha256", name=op.f("uq_extract_feed_id_sha256")),
    )
    with op.batch_alter_table("extract", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_extract_feed_id"), ["feed_id"], unique=False)

    op.create_table(
        "patron_version",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "patron_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=16), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "extract_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("batch_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batch.id"], name=op.f("fk_patron_version_batch_id_batch")
        ),
        sa.ForeignKeyConstraint(
            ["extract_id"], ["extract.id"], name=op.f("fk_patron_version_extract_id_extract")
        ),
        sa.ForeignKeyConstraint(
            ["patron_id"], ["patron.id"], name=op.f("fk_patron_version_patron_id_patron")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patron_version")),
    )
    with op.batch_alter_table("patron_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patron_version_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index("ix_patron_version_patron_id_id", ["patron_id", "id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("patron_version", schema=None) as batch_op:
        batch_op.drop_index("ix_patron_version_patron_id_id")
        batch_op.drop_index(batch_op.f("ix_patron_version_batch_id"))

    op.drop_table("patron_version")
    with op.batch_alter_table("extract", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_extract_feed_id"))

    op.drop_table("extract")
    with op.batch_alter_table("staged_record", schema=None) as batch_op:
        batch_op.drop_index("ix_staged_record_patron_id")
        batch_op.drop_index("ix_staged_record_feed_id_match_key")

    op.drop_table("staged_record")
    op.drop_table("patron")
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batch_feed_id"))

    op.drop_table("batch")
    op.drop_table("feed")
