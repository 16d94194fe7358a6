"""expiry policy: the expiry date of each version, and of what Alma confirmed

- ``patron_version.expiry_date``: the record's expiry date. Filled for every patron's current
  version (from ``patron.expiry_date``) and for the version Alma last confirmed (read from its
  payload); older versions keep NULL, which nothing reads.
- ``patron.confirmed_expiry``: the expiry date of the record Alma last confirmed, which
  ``renew_within_days`` renews from; set whenever a batch is confirmed.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op
from lxml import etree

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

_PARSER = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True)


def upgrade() -> None:
    op.add_column("patron_version", sa.Column("expiry_date", sa.Date(), nullable=True))
    op.add_column("patron", sa.Column("confirmed_expiry", sa.Date(), nullable=True))
    conn = op.get_bind()
    patron = sa.table(
        "patron",
        sa.column("id", sa.Integer),
        sa.column("feed_id", sa.Integer),
        sa.column("digest", sa.LargeBinary),
        sa.column("expiry_date", sa.Date),
        sa.column("current_version_id", sa.Integer),
        sa.column("confirmed_digest", sa.LargeBinary),
        sa.column("confirmed_seq", sa.Integer),
        sa.column("confirmed_expiry", sa.Date),
    )
    version = sa.table(
        "patron_version",
        sa.column("id", sa.Integer),
        sa.column("payload", sa.LargeBinary),
        sa.column("expiry_date", sa.Date),
    )
    member = sa.table(
        "batch_patron",
        sa.column("batch_id", sa.Integer),
        sa.column("patron_id", sa.Integer),
        sa.column("version_id", sa.Integer),
    )
    batch = sa.table(
        "batch", sa.column("id", sa.Integer), sa.column("feed_id", sa.Integer), sa.column("seq")
    )
    p, v = patron.c, version.c
    conn.execute(
        sa.update(version).values(
            expiry_date=sa.select(p.expiry_date)
            .where(p.current_version_id == v.id)
            .limit(1)
            .scalar_subquery()
        )
    )
    # What Alma confirmed is the current record for most patrons.
    conn.execute(
        sa.update(patron)
        .where(p.confirmed_digest.is_not(None), p.confirmed_digest == p.digest)
        .values(confirmed_expiry=p.expiry_date)
    )
    m, b = member.c, batch.c
    older = conn.execute(
        sa.select(p.id, v.id, v.payload)
        .select_from(patron)
        .join(batch, sa.and_(b.feed_id == p.feed_id, b.seq == p.confirmed_seq))
        .join(member, sa.and_(m.batch_id == b.id, m.patron_id == p.id))
        .join(version, v.id == m.version_id)
        .where(p.confirmed_digest.is_not(None), p.confirmed_digest != p.digest)
    ).all()
    for patron_id, version_id, payload in older:
        expiry = _expiry(payload)
        if expiry is None:
            continue
        conn.execute(sa.update(version).where(v.id == version_id).values(expiry_date=expiry))
        conn.execute(sa.update(patron).where(p.id == patron_id).values(confirmed_expiry=expiry))


def _expiry(payload: bytes | None) -> dt.date | None:
    """The expiry date of a stored record (the migration keeps its own copy of the rule:
    a migration must not change when the application's helpers do)."""
    if payload is None:
        return None
    try:
        text = (etree.fromstring(payload, _PARSER).findtext("expiry_date") or "").strip()
        return dt.date.fromisoformat(text[:10])
    except (etree.XMLSyntaxError, ValueError):
        return None


def downgrade() -> None:
    # Plain DROP COLUMN (SQLite 3.35+): batch mode would rebuild tables others refer to.
    op.drop_column("patron", "confirmed_expiry")
    op.drop_column("patron_version", "expiry_date")
