"""stored records compressed

From this revision on, ``patron_version.payload`` (and the scratch ``staged_record.payload``)
is written zlib-compressed by the application (``store.models.Payload``): a first run of a large
population wrote every record twice (staged, then versioned) and kept it uncompressed, which made
the store about three times the size of the extract and its commit the slowest step of the run.

Upgrading rewrites nothing: a record stored before starts with ``<`` and reads back as it is.
Downgrading decompresses every compressed record, so that older code and the downgrades of
older revisions (0003 reads every record) find plain XML again.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import zlib

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

_CHUNK = 1000


def upgrade() -> None:
    pass  # see the docstring: old records stay readable as they are


def downgrade() -> None:
    conn = op.get_bind()
    version = sa.table(
        "patron_version", sa.column("id", sa.Integer), sa.column("payload", sa.LargeBinary)
    )
    v = version.c
    last = 0
    while True:
        rows = conn.execute(
            sa.select(v.id, v.payload)
            .where(v.id > last, v.payload.is_not(None))
            .order_by(v.id)
            .limit(_CHUNK)
        ).all()
        if not rows:
            return
        for version_id, payload in rows:
            stored = bytes(payload)
            if stored[:1] != b"<":
                try:
                    plain = zlib.decompress(stored)
                except zlib.error:
                    continue  # damaged: left as it is, as the application reads it
                conn.execute(sa.update(version).where(v.id == version_id).values(payload=plain))
        last = rows[-1][0]
