"""After the pass: the present patrons an expiry policy sends again although unchanged.

Both are decided per patron from the store and a stable hash of the match key, never by
parsing, so they hold for records read by their bytes (tier 1) as much as for those read in
full:

- **Renewal** (``renew_within_days = N``): a record whose only change is later dates waits
  (staged as :data:`~deltasync.diff.DATES_LATER`) until the expiry Alma confirmed comes
  within the patron's own threshold, 1 to N days by hash, so a cohort loaded on one day
  renews over N days rather than on one. Then its current record goes out.
- **Refresh** (``refresh_days = N``): the patrons whose hash falls in today's 1/N share go out
  again with their current record, so every record Alma holds is asserted every N days.

Each becomes a new version of its own kind (``renewed``, ``refreshed``) that the ledger sends
once, like a return.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

import xxhash
from sqlalchemy import Connection, and_, func, select, update

from ..diff import DATES_LATER, Kind, Resent
from ..store.staging import Staging
from ..store.tables import PatronState, chunks, patron_t, staged_t, version_t
from .settings import ExpiryConfig

RENEW_SEED = 0x52454E4557
REFRESH_SEED = 0x52454652455348
SENDING = (Kind.NEW.value, Kind.CHANGED.value, Kind.RETURNED.value, Resent.RENEWED.value)


@dataclass(frozen=True)
class Resends:
    """How many patrons each policy sends again this run."""

    renewed: int = 0
    refreshed: int = 0


def share(match_key: str, days: int, seed: int) -> int:
    """A patron's stable share, 0 … days-1: the same on every machine and every run."""
    return xxhash.xxh3_64_intdigest(match_key.encode("utf-8"), seed=seed) % days


def renew_threshold(match_key: str, days: int) -> int:
    """How many days before the confirmed expiry this patron is renewed: 1 … days."""
    return 1 + share(match_key, days, RENEW_SEED)


def refresh_day(today: dt.date, days: int) -> int:
    """Today's share of a ``refresh_days`` cycle."""
    return today.toordinal() % days


def stage_resends(
    conn: Connection,
    feed_id: int,
    staging: Staging,
    policy: ExpiryConfig,
    today: dt.date,
    not_seen: Collection[int],
    held: Collection[int],
) -> Resends:
    """Turn due records into renewals and refreshes in ``staging``; ``not_seen`` and ``held``
    are patrons whose current record is not the extract's this run."""
    staging.flush()
    renewed = _renew(conn, feed_id, policy.renew_within_days, today)
    refreshed = 0
    if policy.refresh_days:
        refreshed = _refresh(
            conn, feed_id, staging, policy.refresh_days, today, set(not_seen) | set(held)
        )
    return Resends(renewed, refreshed)


def _renew(conn: Connection, feed_id: int, days: int, today: dt.date) -> int:
    if not days:
        return 0
    s, p = staged_t.c, patron_t.c
    horizon = today + dt.timedelta(days=days)
    confirmed = func.coalesce(p.confirmed_expiry, p.expiry_date)
    rows = conn.execute(
        select(s.id, s.match_key, confirmed)
        .join(patron_t, p.id == s.patron_id)
        .where(s.feed_id == feed_id, s.kind == DATES_LATER, confirmed <= horizon)
    ).all()
    due = [
        staged_id
        for staged_id, key, expiry in rows
        if (expiry - today).days <= renew_threshold(key, days)
    ]
    for part in chunks(due):
        conn.execute(update(staged_t).where(s.id.in_(part)).values(kind=Resent.RENEWED.value))
    return len(due)


def _refresh(
    conn: Connection,
    feed_id: int,
    staging: Staging,
    days: int,
    today: dt.date,
    excluded: set[int],
) -> int:
    s, p, v = staged_t.c, patron_t.c, version_t.c
    sending = {
        pid
        for (pid,) in conn.execute(
            select(s.patron_id).where(
                s.feed_id == feed_id, s.kind.in_(SENDING), s.patron_id.is_not(None)
            )
        )
    }
    waiting = {
        int(pid): int(sid)
        for sid, pid in conn.execute(
            select(s.id, s.patron_id).where(s.feed_id == feed_id, s.kind == DATES_LATER)
        )
    }
    wanted = refresh_day(today, days)
    todays: list[int] = []
    for pid, key in conn.execute(
        select(p.id, p.match_key).where(
            p.feed_id == feed_id, p.state == PatronState.PRESENT, p.held_since.is_(None)
        )
    ):
        if pid in excluded or pid in sending or share(key, days, REFRESH_SEED) != wanted:
            continue
        todays.append(int(pid))
    # A record waiting with later dates goes out as it stands in the extract.
    later = [waiting[pid] for pid in todays if pid in waiting]
    for part in chunks(later):
        conn.execute(update(staged_t).where(s.id.in_(part)).values(kind=Resent.REFRESHED.value))
    stored = [pid for pid in todays if pid not in waiting]
    for part in chunks(stored):
        rows = conn.execute(
            select(
                p.id,
                p.match_key,
                p.match_id,
                p.digest,
                p.expiry_date,
                p.raw_digest,
                p.raw_lines,
                v.payload,
            )
            .join(version_t, and_(v.id == p.current_version_id, v.payload.is_not(None)))
            .where(p.id.in_(part))
        )
        for row in rows:
            staging.add(
                match_key=row.match_key,
                match_id=row.match_id,
                patron_id=row.id,
                kind=Resent.REFRESHED.value,
                digest=bytes(row.digest),
                payload=bytes(row.payload),
                expiry_date=row.expiry_date,
                raw_digest=None if row.raw_digest is None else bytes(row.raw_digest),
                raw_lines=row.raw_lines,
            )
    staging.flush()
    return len(todays)
