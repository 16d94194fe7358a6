"""Who changed what across patrons: "why did 400 patrons change yesterday?"."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from ..config import FeedConfig
from ..store import Store, feeds
from ..store.tables import patron_t, version_t
from ..userxml import parse_payload
from .fields import FieldChange, changes, matches

CHUNK = 1000


@dataclass(frozen=True)
class ChangeRow:
    """One change to one patron: a field that changed, or a patron that came or went."""

    at: dt.datetime
    match_id: str
    kind: str
    field: str | None
    """None for a row that stands for the whole record (a new patron, a pruned record)."""
    old: str | None
    new: str | None


def list_changes(
    store: Store,
    feed: FeedConfig,
    *,
    since: dt.datetime,
    until: dt.datetime | None = None,
    field: str | None = None,
    kinds: tuple[str, ...] = (),
) -> list[ChangeRow]:
    """Every version first seen in ``[since, until)``, as field changes, oldest first.

    ``field`` keeps only changes of that field (``user_group``, ``email_address`` or
    ``email.email_address``, ``address`` for whole addresses); ``kinds`` keeps only those
    kinds (new, changed, departed, returned).
    """
    v, p = version_t.c, patron_t.c
    earlier = version_t.alias()
    previous_id = (
        select(func.max(earlier.c.id))
        .where(earlier.c.patron_id == v.patron_id, earlier.c.id < v.id)
        .scalar_subquery()
    )
    query = (
        select(v.id, v.kind, v.first_seen, v.payload, p.match_id, previous_id.label("prev"))
        .join(patron_t, p.id == v.patron_id)
        .where(p.feed_id == _feed_id(store, feed), v.first_seen >= since)
        .order_by(v.first_seen, p.match_key, v.id)
    )
    if until is not None:
        query = query.where(v.first_seen < until)
    if kinds:
        query = query.where(v.kind.in_(kinds))
    rows: list[ChangeRow] = []
    with store.read() as conn:
        found = conn.execute(query).all()
        previous: dict[int, bytes | None] = {}
        wanted = [int(r.prev) for r in found if r.prev is not None]
        for start in range(0, len(wanted), CHUNK):
            previous.update(
                (int(vid), None if payload is None else bytes(payload))
                for vid, payload in conn.execute(
                    select(v.id, v.payload).where(v.id.in_(wanted[start : start + CHUNK]))
                )
            )
    for r in found:
        before = previous.get(int(r.prev)) if r.prev is not None else None
        rows.extend(_rows(r, before, field))
    return rows


def _rows(r: Any, before: bytes | None, wanted: str | None) -> list[ChangeRow]:
    at, match_id, kind, payload = r.first_seen, r.match_id, r.kind, r.payload
    if kind == "new" or r.prev is None:
        return [] if wanted else [ChangeRow(at, match_id, kind, None, None, None)]
    if payload is None or before is None:
        note = "record pruned by retention: the change is known, not its fields"
        return [] if wanted else [ChangeRow(at, match_id, kind, None, None, note)]
    found: list[FieldChange] = changes(parse_payload(before), parse_payload(bytes(payload)))
    return [
        ChangeRow(at, match_id, kind, c.field, c.old, c.new)
        for c in found
        if wanted is None or matches(c.field, wanted)
    ]


def _feed_id(store: Store, feed: FeedConfig) -> int:
    with store.read() as conn:
        row = feeds.find_feed(conn, feed.name)
    return -1 if row is None else row.id
