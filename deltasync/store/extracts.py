"""Ingested extracts: each file once, with its time, counts and content fingerprint."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, insert, select, update

from ..diff import Counts
from ..extract_order import Ingested
from .tables import extract_t


def find(conn: Connection, feed_id: int, sha256: str) -> Any | None:
    """The ingested extract with this SHA-256, if any."""
    return conn.execute(
        select(extract_t).where(extract_t.c.feed_id == feed_id, extract_t.c.sha256 == sha256)
    ).one_or_none()


def ingested(row: Any) -> Ingested:
    """An extract row as the order guards see it."""
    return Ingested(row.id, row.name, row.ingested_at, row.mtime, row.fingerprint)


def last(conn: Connection, feed_id: int) -> Ingested | None:
    """The extract the feed ingested last."""
    row = conn.execute(
        select(extract_t)
        .where(extract_t.c.feed_id == feed_id)
        .order_by(extract_t.c.id.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else ingested(row)


def with_content(conn: Connection, feed_id: int, fingerprint: str) -> Ingested | None:
    """The newest ingested extract with this content fingerprint."""
    row = conn.execute(
        select(extract_t)
        .where(extract_t.c.feed_id == feed_id, extract_t.c.fingerprint == fingerprint)
        .order_by(extract_t.c.id.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else ingested(row)


def record(
    conn: Connection,
    *,
    feed_id: int,
    name: str,
    sha256: str,
    records: int,
    counts: Counts,
    now: dt.datetime,
    mtime: dt.datetime | None = None,
    fingerprint: str | None = None,
) -> int:
    """Insert the ingested extract's row; returns its id (its batch is linked later)."""
    key = conn.execute(
        insert(extract_t).values(
            feed_id=feed_id,
            name=name,
            sha256=sha256,
            records=records,
            ingested_at=now,
            mtime=mtime,
            fingerprint=fingerprint,
            **counts.as_dict(),
        )
    ).inserted_primary_key
    assert key is not None
    return int(key[0])


def link(conn: Connection, extract_id: int, batch_id: int) -> None:
    """Record the batch that carried an extract's changes."""
    conn.execute(update(extract_t).where(extract_t.c.id == extract_id).values(batch_id=batch_id))
