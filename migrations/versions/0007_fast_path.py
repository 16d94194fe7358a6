"""fast path: raw digests, the identifier index, fold forms, and "last seen" derived

- ``patron.raw_digest`` and ``feed.raw_seed``: the hash of each record's bytes, so that a
  record the source gives byte for byte again needs no parsing. Empty after the upgrade: the
  first run reads every record in full once and fills them.
- ``patron_identifier``: the identifier values of each patron's current record; built by the
  first run after the upgrade (``feed.identifier_index`` says when it is complete).
- ``patron.fold_forms``: the other case foldings of non-ASCII match IDs; filled as records
  are read in full. ``patron.held_since``: since when its extract record is held back.
- ``patron_version.last_seen`` may be NULL: the current version of a patron in the latest
  extract, seen in every extract since it was first seen. Versions seen in the latest
  extract get NULL here, so no run has to write a row per unchanged patron again.
- ``staged_record`` gains the record's raw digest and position; ``staged_identifier`` is new
  scratch space. Both are empty outside a run.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("feed", sa.Column("raw_seed", sa.Text(), nullable=True))
    op.add_column("feed", sa.Column("identifier_index", sa.String(length=32), nullable=True))
    op.add_column("patron", sa.Column("raw_digest", sa.LargeBinary(length=16), nullable=True))
    op.add_column("patron", sa.Column("fold_forms", sa.Text(), nullable=True))
    op.add_column("patron", sa.Column("held_since", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_patron_feed_id_held_since", "patron", ["feed_id", "held_since"], unique=False
    )
    for name, column in (
        ("raw_digest", sa.LargeBinary(length=16)),
        ("source", sa.Text()),
        ("line", sa.Integer()),
        ("fold_forms", sa.Text()),
    ):
        op.add_column("staged_record", sa.Column(name, column, nullable=True))
    with op.batch_alter_table("staged_record", schema=None) as batch_op:
        batch_op.alter_column("payload", existing_type=sa.LargeBinary(), nullable=True)
    # patron_version is referred to by no foreign key: batch mode may rebuild it on SQLite.
    with op.batch_alter_table("patron_version", schema=None) as batch_op:
        batch_op.alter_column("last_seen", existing_type=sa.DateTime(timezone=True), nullable=True)
    op.create_table(
        "patron_identifier",
        sa.Column("id", Id, nullable=False),
        sa.Column("feed_id", Id, nullable=False),
        sa.Column("patron_id", Id, nullable=False),
        sa.Column("value_hash", sa.BigInteger(), nullable=False),
        sa.Column("id_type", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["feed_id"], ["feed.id"], name=op.f("fk_patron_identifier_feed_id_feed")
        ),
        sa.ForeignKeyConstraint(
            ["patron_id"], ["patron.id"], name=op.f("fk_patron_identifier_patron_id_patron")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patron_identifier")),
    )
    op.create_index(
        "ix_patron_identifier_feed_id_value_hash",
        "patron_identifier",
        ["feed_id", "value_hash"],
        unique=False,
    )
    op.create_index(
        "ix_patron_identifier_patron_id", "patron_identifier", ["patron_id"], unique=False
    )
    op.create_table(
        "staged_identifier",
        sa.Column("id", Id, nullable=False),
        sa.Column("feed_id", Id, nullable=False),
        sa.Column("match_key", sa.String(length=300), nullable=False),
        sa.Column("value_hash", sa.BigInteger(), nullable=False),
        sa.Column("id_type", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["feed_id"], ["feed.id"], name=op.f("fk_staged_identifier_feed_id_feed")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staged_identifier")),
    )
    op.create_index(
        "ix_staged_identifier_feed_id_value_hash",
        "staged_identifier",
        ["feed_id", "value_hash"],
        unique=False,
    )
    op.create_index(
        "ix_staged_identifier_feed_id_match_key",
        "staged_identifier",
        ["feed_id", "match_key"],
        unique=False,
    )
    with op.batch_alter_table("staged_record", schema=None) as batch_op:
        batch_op.drop_index("ix_staged_record_patron_id")
        batch_op.create_index(
            "ix_staged_record_feed_id_patron_id", ["feed_id", "patron_id"], unique=False
        )
    # Seen in the feed's latest extract: from now on "seen in every extract since".
    op.execute(
        """
        UPDATE patron_version SET last_seen = NULL
        WHERE id IN (
            SELECT p.current_version_id FROM patron p
            WHERE p.state = 'present' AND p.current_version_id IS NOT NULL
        )
        AND last_seen = (
            SELECT max(e.ingested_at) FROM extract e
            JOIN patron p2 ON p2.feed_id = e.feed_id
            WHERE p2.id = patron_version.patron_id
        )
        """
    )


def downgrade() -> None:
    # Give every open version the time of its feed's latest extract, as 0006 kept it.
    op.execute(
        """
        UPDATE patron_version SET last_seen = (
            SELECT max(e.ingested_at) FROM extract e
            JOIN patron p ON p.feed_id = e.feed_id
            WHERE p.id = patron_version.patron_id
        )
        WHERE last_seen IS NULL
        """
    )
    op.execute("UPDATE patron_version SET last_seen = first_seen WHERE last_seen IS NULL")
    with op.batch_alter_table("patron_version", schema=None) as batch_op:
        batch_op.alter_column("last_seen", existing_type=sa.DateTime(timezone=True), nullable=False)
    with op.batch_alter_table("staged_record", schema=None) as batch_op:
        batch_op.drop_index("ix_staged_record_feed_id_patron_id")
        batch_op.create_index("ix_staged_record_patron_id", ["patron_id"], unique=False)
    op.drop_index("ix_staged_identifier_feed_id_match_key", table_name="staged_identifier")
    op.drop_index("ix_staged_identifier_feed_id_value_hash", table_name="staged_identifier")
    op.drop_table("staged_identifier")
    op.drop_index("ix_patron_identifier_patron_id", table_name="patron_identifier")
    op.drop_index("ix_patron_identifier_feed_id_value_hash", table_name="patron_identifier")
    op.drop_table("patron_identifier")
    op.execute("DELETE FROM staged_record")
    with op.batch_alter_table("staged_record", schema=None) as batch_op:
        batch_op.alter_column("payload", existing_type=sa.LargeBinary(), nullable=False)
    for name in ("fold_forms", "line", "source", "raw_digest"):
        op.drop_column("staged_record", name)
    op.drop_index("ix_patron_feed_id_held_since", table_name="patron")
    op.drop_column("patron", "held_since")
    op.drop_column("patron", "fold_forms")
    op.drop_column("patron", "raw_digest")
    op.drop_column("feed", "identifier_index")
    op.drop_column("feed", "raw_seed")
