"""A feed's own row: its identity, and what its stored digests were made with."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from ..canonical import Recipe
from ..errors import StoreError
from .tables import feed_t


@dataclass(frozen=True)
class FeedRow:
    """The stored identity of a feed."""

    id: int
    name: str
    hash_recipe: str
    fixes: str | None = None
    """The fixes the snapshot's records were made with."""
    raw_seed: str | None = None
    """What the patrons' raw digests were made with."""
    identifier_index: str | None = None
    """The identifier index is complete (its version), or None: it must be built."""


def _row(row: Any) -> FeedRow:
    return FeedRow(row.id, row.name, row.hash_recipe, row.fixes, row.raw_seed, row.identifier_index)


def ensure_feed(
    conn: Connection, name: str, match_id: str, recipe: Recipe, now: dt.datetime
) -> FeedRow:
    """The feed's row, created on first use; refuses a changed match ID rule."""
    row = conn.execute(select(feed_t).where(feed_t.c.name == name)).one_or_none()
    if row is None:
        feed_id = conn.execute(
            insert(feed_t).values(
                name=name, match_id=match_id, hash_recipe=recipe.fingerprint, created_at=now
            )
        ).inserted_primary_key
        assert feed_id is not None
        return FeedRow(int(feed_id[0]), name, recipe.fingerprint)
    if row.match_id != match_id:
        raise StoreError(
            f"feed {name!r} matches patrons by {row.match_id}, but the configuration says "
            f"{match_id}; every patron would look new and every old one departed. Keep the "
            "old match_id, or configure a new feed for the new one"
        )
    return _row(row)


def find_feed(conn: Connection, name: str) -> FeedRow | None:
    """The feed's row if any run has created it."""
    row = conn.execute(select(feed_t).where(feed_t.c.name == name)).one_or_none()
    return None if row is None else _row(row)


def record_settings(
    conn: Connection,
    feed_id: int,
    *,
    fixes: str | None = None,
    raw_seed: str | None = None,
    identifier_index: str | None = None,
) -> None:
    """Note what the snapshot's records, raw digests or identifier index are now made with
    (arguments left None are not changed)."""
    values = {
        key: value
        for key, value in (
            ("fixes", fixes),
            ("raw_seed", raw_seed),
            ("identifier_index", identifier_index),
        )
        if value is not None
    }
    if values:
        conn.execute(update(feed_t).where(feed_t.c.id == feed_id).values(**values))
