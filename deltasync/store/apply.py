"""Make a run's staged records the new snapshot: new patrons, the next version of each changed
one, expirations, raw digests of records spelled anew, and the identifier index.

Nothing is written for an unchanged patron. "Last seen" is derived instead: the current
version of a patron in the latest extract keeps ``last_seen`` NULL (seen in every extract
since it was first seen); the moment it stops being seen — superseded, departed, held back —
it gets the time of the extract that saw it last. A handful of set-based statements that work
alike on SQLite and PostgreSQL (correlated subqueries rather than UPDATE … FROM, which older
SQLite builds on enterprise Linux lack).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, insert, literal, null, select, update

from ..diff import Kind, Resent
from .tables import (
    PatronState,
    chunks,
    identifier_t,
    patron_t,
    refresh_statistics,
    staged_identifier_t,
    staged_t,
    version_t,
)

NEW_VERSION = (
    Kind.NEW.value,
    Kind.CHANGED.value,
    Kind.RETURNED.value,
    Kind.DEPARTED.value,
    Resent.RENEWED.value,
    Resent.REFRESHED.value,
)
"""Staged kinds that become the patron's next version."""
SENT = (Kind.NEW.value, Kind.CHANGED.value, Kind.RETURNED.value)


def apply(
    conn: Connection,
    *,
    feed_id: int,
    extract_id: int,
    now: dt.datetime,
    last_seen_before: dt.datetime | None,
    departed_without_record: list[int],
    held: list[int],
    absent: list[int] | None = None,
) -> None:
    """Apply the staged records of ``feed_id``; ``last_seen_before`` is when the extract
    before this one was ingested (what a version no longer seen was seen last), ``held`` the
    patrons held back by this run, ``absent`` those missing from it but not departed
    (``grace_days``, ``keep_groups``)."""
    s, p, v = staged_t.c, patron_t.c, version_t.c
    mine = s.feed_id == feed_id
    conn.execute(
        insert(patron_t).from_select(
            ["feed_id", "match_key", "match_id", "digest", "state", "expiry_date"],
            select(
                s.feed_id,
                s.match_key,
                s.match_id,
                s.digest,
                literal(PatronState.PRESENT.value),
                s.expiry_date,
            ).where(mine, s.kind == Kind.NEW.value),
        )
    )
    conn.execute(
        update(staged_t)
        .where(mine, s.patron_id.is_(None), s.kind == Kind.NEW.value)
        .values(
            patron_id=select(p.id)
            .where(p.feed_id == s.feed_id, p.match_key == s.match_key)
            .scalar_subquery()
        )
    )
    versioned = select(s.patron_id).where(mine, s.kind.in_(NEW_VERSION))
    _no_longer_seen(conn, select(p.current_version_id).where(p.id.in_(versioned)), last_seen_before)
    departed = s.kind == Kind.DEPARTED.value
    conn.execute(
        insert(version_t).from_select(
            [
                "patron_id",
                "kind",
                "digest",
                "payload",
                "expiry_date",
                "first_seen",
                "last_seen",
                "extract_id",
            ],
            select(
                s.patron_id,
                s.kind,
                s.digest,
                s.payload,
                s.expiry_date,
                literal(now, v.first_seen.type),
                # An expiration record is not "seen": it is the last word on a departure.
                case((departed, literal(now, v.last_seen.type)), else_=null()),
                literal(extract_id, v.extract_id.type),
            )
            .where(mine, s.kind.in_(NEW_VERSION))
            .order_by(s.id),
        )
    )

    def staged(column: Any, kinds: tuple[str, ...] = NEW_VERSION) -> Any:
        return (
            select(column)
            .where(s.feed_id == feed_id, s.patron_id == p.id, s.kind.in_(kinds))
            .scalar_subquery()
        )

    conn.execute(
        update(patron_t)
        .where(p.id.in_(versioned))
        .values(
            match_id=staged(s.match_id),
            digest=staged(s.digest),
            expiry_date=staged(s.expiry_date),
            state=staged(
                case(
                    (departed, literal(PatronState.DEPARTED.value)),
                    else_=literal(PatronState.PRESENT.value),
                )
            ),
            # A departed patron is not in the extract: no raw digest to compare with.
            raw_digest=staged(case((departed, null()), else_=s.raw_digest)),
            raw_lines=staged(case((departed, null()), else_=s.raw_lines)),
            fold_forms=staged(s.fold_forms),
            current_version_id=select(func.max(v.id)).where(v.patron_id == p.id).scalar_subquery(),
            current_kind=staged(s.kind),
        )
    )
    # The same record, spelled anew: tomorrow its new bytes are tier 1.
    respelled = select(s.patron_id).where(
        mine, s.kind == Kind.UNCHANGED.value, s.raw_digest.is_not(None)
    )
    conn.execute(
        update(patron_t)
        .where(p.id.in_(respelled))
        .values(
            raw_digest=staged(s.raw_digest, (Kind.UNCHANGED.value,)),
            raw_lines=staged(s.raw_lines, (Kind.UNCHANGED.value,)),
        )
    )
    for part in chunks(departed_without_record):
        conn.execute(
            update(patron_t)
            .where(p.id.in_(part))
            .values(state=PatronState.DEPARTED.value, raw_digest=None, raw_lines=None)
        )
        _no_longer_seen(conn, select(p.current_version_id).where(p.id.in_(part)), last_seen_before)
    _held(conn, feed_id, held, now, last_seen_before)
    if absent is not None:  # only a feed with grace_days or keep_groups has absent patrons
        _absent(conn, feed_id, absent, last_seen_before)
    _index_identifiers(conn, feed_id)
    _refresh_statistics(conn, feed_id)
    conn.execute(delete(staged_t).where(mine))
    conn.execute(delete(staged_identifier_t).where(staged_identifier_t.c.feed_id == feed_id))


def _refresh_statistics(conn: Connection, feed_id: int) -> None:
    """After a large change, tell PostgreSQL's planner how large the snapshot now is.

    Without it the planner plans what follows (linking 100,000 new versions to their batch)
    for the tables as they were: on a first run after another feed's, each statement read the
    whole version table, for minutes in all.
    """
    if conn.dialect.name != "postgresql":
        return
    staged = conn.execute(
        select(func.count()).select_from(staged_t).where(staged_t.c.feed_id == feed_id)
    ).scalar_one()
    refresh_statistics(conn, staged, patron_t, version_t, identifier_t)


def _no_longer_seen(conn: Connection, versions: Any, seen_last: dt.datetime | None) -> None:
    """Give these versions the time they were last seen, unless they have one."""
    if seen_last is None:
        return
    v = version_t.c
    conn.execute(
        update(version_t)
        .where(v.id.in_(versions), v.last_seen.is_(None))
        .values(last_seen=seen_last)
    )


def _held(
    conn: Connection,
    feed_id: int,
    held: list[int],
    now: dt.datetime,
    seen_last: dt.datetime | None,
) -> None:
    """Patrons held back: their stored record was not seen in this extract. Patrons held
    before and not now are seen again, unless they left."""
    p, v = patron_t.c, version_t.c
    for part in chunks(held):
        conn.execute(
            update(patron_t)
            .where(p.id.in_(part))
            .values(held_since=func.coalesce(p.held_since, now))
        )
        _no_longer_seen(conn, select(p.current_version_id).where(p.id.in_(part)), seen_last)
    released = conn.execute(
        select(p.id, p.state, p.current_version_id).where(
            p.feed_id == feed_id, p.held_since.is_not(None)
        )
    ).all()
    still = set(held)
    back = [row for row in released if row.id not in still]
    for part in chunks([row.id for row in back]):
        conn.execute(update(patron_t).where(p.id.in_(part)).values(held_since=None))
    present = [
        row.current_version_id
        for row in back
        if row.state == PatronState.PRESENT and row.current_version_id is not None
    ]
    for part in chunks(present):
        conn.execute(update(version_t).where(v.id.in_(part)).values(last_seen=None))


def _absent(
    conn: Connection, feed_id: int, absent: list[int], seen_last: dt.datetime | None
) -> None:
    """Patrons missing but not departed keep the time they were last seen (the grace runs
    from it); those missing before and seen again are seen in every extract again."""
    p, v = patron_t.c, version_t.c
    away = set(absent)
    missed = conn.execute(
        select(p.id, p.current_version_id)
        .join(version_t, v.id == p.current_version_id)
        .where(
            p.feed_id == feed_id,
            p.state == PatronState.PRESENT.value,
            p.held_since.is_(None),
            v.last_seen.is_not(None),
        )
    ).all()
    back = [version for pid, version in missed if pid not in away]
    for part in chunks(back):
        conn.execute(update(version_t).where(v.id.in_(part)).values(last_seen=None))
    for part in chunks(absent):
        _no_longer_seen(conn, select(p.current_version_id).where(p.id.in_(part)), seen_last)


def _index_identifiers(conn: Connection, feed_id: int) -> None:
    """The identifier values of every patron with a new record replace its old ones."""
    s, i, si = staged_t.c, identifier_t.c, staged_identifier_t.c
    renewed = select(s.patron_id).where(s.feed_id == feed_id, s.kind.in_(SENT))
    conn.execute(delete(identifier_t).where(i.patron_id.in_(renewed)))
    # Joined by (feed_id, match_key), which both tables index: SQLite plans it as a lookup of
    # the staged record for each staged value. (Without those indexes, or with a min() the
    # planner serves from the patron index, it walked both tables by feed_id alone: quadratic,
    # hours for a first run of 100,000 patrons.)
    conn.execute(
        insert(identifier_t).from_select(
            ["feed_id", "patron_id", "value_hash", "id_type"],
            select(si.feed_id, s.patron_id, si.value_hash, si.id_type)
            .join(
                staged_t,
                and_(s.feed_id == si.feed_id, s.match_key == si.match_key, s.kind.in_(SENT)),
            )
            .where(si.feed_id == feed_id),
        )
    )
