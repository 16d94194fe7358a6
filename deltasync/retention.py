"""Retention of personal data: prune old superseded records, forget purged patrons.

A superseded version older than the window loses its payload (the record itself) but keeps
its digest, kind, dates and batch links, so ``history`` still shows that something changed and
when. A departed patron whose purge date has passed, whose expiration Alma confirmed, is
forgotten entirely: Alma's purge job deletes them there too. Nothing that a batch still in
flight needs is touched, and the current record of a patron is never pruned (expiration
records are built from it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, and_, delete, exists, select, update

from .canonical import parse_payload
from .config import FeedConfig
from .departure import parse_alma_date
from .store import Store
from .store import ledger as led
from .store import snapshot as snap
from .store.lock import feed_lock

CHUNK = 1000


@dataclass(frozen=True)
class Pruned:
    """What one prune removed."""

    cutoff: dt.datetime
    payloads: int
    """Superseded records whose payload was removed."""
    patrons: int
    """Departed patrons forgotten because their purge date had passed."""


def prune_feed(store: Store, feed: FeedConfig, *, days: int, now: dt.datetime) -> Pruned:
    """Apply the retention window to ``feed`` in a transaction of its own, under the feed lock."""
    with feed_lock(store, feed.name), store.begin() as conn:
        row = snap.find_feed(conn, feed.name)
        if row is None:
            return Pruned(now - dt.timedelta(days=days), 0, 0)
        return prune(conn, feed, row.id, days=days, now=now)


def prune(
    conn: Connection, feed: FeedConfig, feed_id: int, *, days: int, now: dt.datetime
) -> Pruned:
    """Apply the retention window of ``days`` to one feed, inside the caller's transaction."""
    cutoff = now - dt.timedelta(days=days)
    v, p, m, b = snap.version_t.c, snap.patron_t.c, led.member_t.c, snap.batch_t.c
    in_flight = exists(
        select(m.id)
        .join(snap.batch_t, b.id == m.batch_id)
        .where(m.version_id == v.id, b.status.in_(led.OPEN))
    )
    current = select(p.current_version_id).where(
        p.feed_id == feed_id, p.current_version_id.is_not(None)
    )
    pruned = conn.execute(
        update(snap.version_t)
        .where(
            v.payload.is_not(None),
            v.last_seen < cutoff,
            v.patron_id.in_(select(p.id).where(p.feed_id == feed_id)),
            v.id.not_in(current),
            ~in_flight,
        )
        .values(payload=None)
    ).rowcount
    today = now.astimezone(feed.timezone).date()
    forgotten = _forget_purged(conn, feed_id, today)
    return Pruned(cutoff, int(pruned or 0), forgotten)


def _forget_purged(conn: Connection, feed_id: int, today: dt.date) -> int:
    v, p, m, b = snap.version_t.c, snap.patron_t.c, led.member_t.c, snap.batch_t.c
    in_flight = exists(
        select(m.id)
        .join(snap.batch_t, b.id == m.batch_id)
        .where(m.patron_id == p.id, b.status.in_(led.OPEN))
    )
    candidates = conn.execute(
        select(p.id, v.payload)
        .join(snap.version_t, v.id == p.current_version_id)
        .where(
            p.feed_id == feed_id,
            p.state == snap.DEPARTED,
            and_(p.confirmed_digest.is_not(None), p.confirmed_digest == p.digest),
            ~in_flight,
        )
    )
    purged: list[int] = []
    for patron_id, payload in candidates:
        purge = parse_alma_date(parse_payload(bytes(payload)).findtext("purge_date"))
        if purge is not None and purge < today:
            purged.append(int(patron_id))
    for start in range(0, len(purged), CHUNK):
        chunk = purged[start : start + CHUNK]
        conn.execute(delete(led.member_t).where(m.patron_id.in_(chunk)))
        conn.execute(delete(snap.version_t).where(v.patron_id.in_(chunk)))
        conn.execute(delete(snap.patron_t).where(p.id.in_(chunk)))
    return len(purged)
