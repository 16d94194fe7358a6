"""Batches in the store: their ledger states, their history, and what each batch carried.

A batch moves built → uploaded → picked_up → confirmed, or ends failed or superseded. Every
transition and every failed attempt is an event. ``batch_patron`` records which patron each batch
carried with which digest; confirming a batch advances each patron's ``confirmed_digest`` (what
Alma holds), never backwards.
"""

from __future__ import annotations

import datetime as dt
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from ..errors import NotFound, StoreError
from .feeds import find_feed
from .tables import (
    TRANSITIONS,
    BatchStatus,
    Digests,
    MemberOutcome,
    batch_t,
    bulk_insert,
    chunks,
    event_t,
    member_t,
    patron_t,
    refresh_statistics,
    version_t,
)

SENT_ONCE_KINDS = ("departed", "returned", "renewed", "refreshed")
"""Kinds of version that must reach Alma once, whatever their digest (diff.Kind and
diff.Resent values: a refreshed record digests like the one Alma holds)."""


@dataclass(frozen=True)
class BatchState:
    """A batch as the ledger sees it."""

    id: int
    seq: int
    file_name: str
    status: str
    created_at: dt.datetime
    uploaded_at: dt.datetime | None
    picked_up_at: dt.datetime | None
    attempts: int
    last_error: str | None
    job_instance: str | None
    sha256: str
    """Of the delta file as it was built: every upload is checked against it."""


@dataclass(frozen=True, slots=True)
class Pending:
    """A patron whose desired record Alma does not hold yet."""

    patron_id: int
    version_id: int
    digest: bytes


class PendingRows(Sequence[Pending]):
    """Patrons to send, in match key order, kept in arrays rather than as an object each: a
    first run sends every patron, and a million objects took 266 MB (this: 34 MB)."""

    def __init__(self) -> None:
        self._patrons = array("q")
        self._versions = array("q")
        self._digests = Digests()

    def append(self, patron_id: int, version_id: int, digest: bytes) -> None:
        self._digests.append(digest)
        self._patrons.append(patron_id)
        self._versions.append(version_id)

    def __len__(self) -> int:
        return len(self._patrons)

    def _at(self, i: int) -> Pending:
        return Pending(self._patrons[i], self._versions[i], self._digests[i])

    @overload
    def __getitem__(self, index: int) -> Pending: ...

    @overload
    def __getitem__(self, index: slice) -> list[Pending]: ...

    def __getitem__(self, index: int | slice) -> Pending | list[Pending]:
        if isinstance(index, slice):
            return [self._at(i) for i in range(*index.indices(len(self)))]
        return self._at(range(len(self))[index])

    def __iter__(self) -> Iterator[Pending]:
        return (self._at(i) for i in range(len(self)))


def listed(
    conn: Connection,
    feed_id: int,
    statuses: Iterable[str] | None = None,
) -> list[BatchState]:
    """The feed's batches in sequence order, optionally only those in ``statuses``."""
    query = select(batch_t).where(batch_t.c.feed_id == feed_id).order_by(batch_t.c.seq)
    if statuses is not None:
        query = query.where(batch_t.c.status.in_(list(statuses)))
    return [_state(row) for row in conn.execute(query)]


def batch_by_seq(conn: Connection, feed_id: int, seq: int) -> BatchState | None:
    """One batch of the feed by its sequence number."""
    row = conn.execute(
        select(batch_t).where(batch_t.c.feed_id == feed_id, batch_t.c.seq == seq)
    ).one_or_none()
    return None if row is None else _state(row)


def find_batch(conn: Connection, feed_name: str, seq: int) -> tuple[int, BatchState]:
    """The feed's id and its batch ``seq``; NotFound when either does not exist."""
    feed = find_feed(conn, feed_name)
    batch = None if feed is None else batch_by_seq(conn, feed.id, seq)
    if feed is None or batch is None:
        raise NotFound(f"feed {feed_name!r} has no batch {seq}")
    return feed.id, batch


class RecordPruned(StoreError):
    """A stored record needed now was removed by retention."""


def _state(row: Any) -> BatchState:
    return BatchState(
        row.id,
        row.seq,
        row.file_name,
        row.status,
        row.created_at,
        row.uploaded_at,
        row.picked_up_at,
        row.attempts,
        row.last_error,
        row.job_instance,
        row.sha256,
    )


def transition(
    conn: Connection,
    batch: BatchState,
    status: BatchStatus,
    now: dt.datetime,
    message: str | None = None,
    **fields: Any,
) -> None:
    """Move a batch to ``status`` and record the event; only the moves of
    :data:`~deltasync.store.tables.TRANSITIONS` are allowed."""
    if BatchStatus(status) not in TRANSITIONS[BatchStatus(batch.status)]:
        raise StoreError(
            f"batch {batch.seq} cannot go from {batch.status} to {status} (a bug: please report)"
        )
    values: dict[str, Any] = {"status": status, **fields}
    if status == BatchStatus.UPLOADED:
        values.setdefault("uploaded_at", now)
        values["last_error"] = None
    elif status == BatchStatus.PICKED_UP:
        values.setdefault("picked_up_at", now)
    elif status in (BatchStatus.CONFIRMED, BatchStatus.FAILED, BatchStatus.SUPERSEDED):
        values.setdefault("resolved_at", now)
    conn.execute(update(batch_t).where(batch_t.c.id == batch.id).values(**values))
    conn.execute(insert(event_t).values(batch_id=batch.id, at=now, status=status, message=message))
    if status == BatchStatus.CONFIRMED:
        _advance_confirmed(conn, batch)


def attempt_failed(conn: Connection, batch: BatchState, now: dt.datetime, error: str) -> None:
    """Record a failed attempt (upload, take-back, query) without changing the state."""
    conn.execute(
        update(batch_t)
        .where(batch_t.c.id == batch.id)
        .values(attempts=batch_t.c.attempts + 1, last_error=error)
    )
    conn.execute(
        insert(event_t).values(batch_id=batch.id, at=now, status="attempt_failed", message=error)
    )


def note(conn: Connection, batch: BatchState, now: dt.datetime, message: str) -> None:
    """Record an event that does not change the batch's state."""
    conn.execute(
        insert(event_t).values(batch_id=batch.id, at=now, status=batch.status, message=message)
    )


def _advance_confirmed(conn: Connection, batch: BatchState) -> None:
    m = member_t.c
    carried = (
        select(m.digest)
        .where(m.batch_id == batch.id, m.patron_id == patron_t.c.id)
        .scalar_subquery()
    )
    expiry = (
        select(version_t.c.expiry_date)
        .join(member_t, m.version_id == version_t.c.id)
        .where(m.batch_id == batch.id, m.patron_id == patron_t.c.id)
        .scalar_subquery()
    )
    confirmed = conn.execute(
        update(patron_t)
        .where(
            patron_t.c.id.in_(
                select(m.patron_id).where(m.batch_id == batch.id, m.outcome == MemberOutcome.SENT)
            ),
            # A batch confirmed late never overwrites what a newer batch already confirmed.
            or_(patron_t.c.confirmed_seq.is_(None), patron_t.c.confirmed_seq < batch.seq),
        )
        .values(confirmed_digest=carried, confirmed_seq=batch.seq, confirmed_expiry=expiry)
    ).rowcount
    # A first batch confirmed: what is unconfirmed is no longer every patron. Planned with the
    # statistics of before, finding the next run's ~1,000 patrons to send out of 100,000 took
    # 128 ms instead of 16.
    refresh_statistics(conn, confirmed, patron_t, member_t)


def reject(conn: Connection, batch: BatchState, reasons: dict[int, str]) -> None:
    """Mark members Alma rejected (patron id → reason); they are not re-sent unchanged."""
    member = member_t.c
    for patron_id, reason in reasons.items():
        conn.execute(
            update(member_t)
            .where(member.batch_id == batch.id, member.patron_id == patron_id)
            .values(outcome=MemberOutcome.REJECTED, reason=reason)
        )
        conn.execute(
            update(patron_t)
            .where(patron_t.c.id == patron_id)
            .values(
                rejected_digest=select(member.digest)
                .where(member.batch_id == batch.id, member.patron_id == patron_id)
                .scalar_subquery(),
                rejected_reason=reason,
            )
        )
        # Recorded after the batch was confirmed (staff, pickup mode): Alma does not hold it.
        conn.execute(
            update(patron_t)
            .where(patron_t.c.id == patron_id, patron_t.c.confirmed_seq == batch.seq)
            .values(confirmed_digest=None, confirmed_seq=None, confirmed_expiry=None)
        )


def members(conn: Connection, batch: BatchState) -> dict[str, int]:
    """The match keys a batch carried, with their patron ids."""
    rows = conn.execute(
        select(patron_t.c.match_key, patron_t.c.id)
        .join(member_t, member_t.c.patron_id == patron_t.c.id)
        .where(member_t.c.batch_id == batch.id)
    )
    return {key: pid for key, pid in rows}


def forget_rejections(conn: Connection, feed_id: int) -> None:
    """Treat every record Alma rejected as not sent yet (``replay``)."""
    conn.execute(
        update(patron_t)
        .where(patron_t.c.feed_id == feed_id, patron_t.c.rejected_digest.is_not(None))
        .values(rejected_digest=None)
    )


def _unconfirmed() -> ColumnElement[bool]:
    """A patron whose desired record Alma does not hold: its digest differs from the one
    confirmed, or it is a departure or a return that no confirmed batch carried.

    The kind counts as well as the digest: with ``ignore = ["expiry_date"]`` an expiration
    record digests like the record before it, and a return like the expiration record, yet
    Alma holds the other one.
    """
    p, m, b = patron_t.c, member_t.c, batch_t.c
    once = p.current_kind.in_(SENT_ONCE_KINDS) & ~exists(
        select(m.id)
        .join(batch_t, b.id == m.batch_id)
        .where(
            m.patron_id == p.id,
            m.version_id == p.current_version_id,
            m.outcome == MemberOutcome.SENT,
            b.status == BatchStatus.CONFIRMED,
        )
    )
    return or_(p.confirmed_digest.is_(None), p.confirmed_digest != p.digest, once)


def pending(conn: Connection, feed_id: int, *, since_seq: int | None = None) -> PendingRows:
    """Patrons to send: desired ≠ confirmed, unless Alma already has that record in hand.

    Left out: a patron in a picked-up, unresolved batch with the same record, and one whose
    same record Alma rejected. With ``since_seq`` every patron carried by that batch or a
    later one is included, confirmed or not.
    """
    p, m, b = patron_t.c, member_t.c, batch_t.c
    # The version, not the digest, says which record Alma has in hand or rejected: an
    # expiration record may digest like the record before it.
    in_flight = exists(
        select(m.id)
        .join(batch_t, b.id == m.batch_id)
        .where(
            m.patron_id == p.id,
            m.version_id == p.current_version_id,
            b.status == BatchStatus.PICKED_UP,
            # Only batches after what Alma confirmed (after a `resend`, nothing older counts).
            b.seq > func.coalesce(p.confirmed_seq, 0),
        )
    )
    rejected = and_(
        p.rejected_digest.is_not(None),  # cleared by `replay` and `resend`
        p.rejected_digest == p.digest,
        exists(
            select(m.id).where(
                m.patron_id == p.id,
                m.version_id == p.current_version_id,
                m.outcome == MemberOutcome.REJECTED,
            )
        ),
    )
    picked_up = conn.execute(
        select(b.id).where(b.feed_id == feed_id, b.status == BatchStatus.PICKED_UP).limit(1)
    ).first()
    # Most runs find no batch in Alma's hands: the test for one, asked of every patron the
    # planner expects to qualify (it cannot tell how few differ from what Alma confirmed),
    # made PostgreSQL plan an anti-join in patron id order, 67 ms against 23 without it at
    # 100,000 patrons.
    differs = and_(_unconfirmed(), ~rejected, *([~in_flight] if picked_up else []))
    condition = differs
    if since_seq is not None:
        carried = (
            select(m.patron_id)
            .join(batch_t, b.id == m.batch_id)
            .where(b.feed_id == feed_id, b.seq >= since_seq)
        )
        condition = or_(differs, p.id.in_(carried))
    # Ordered by the column itself, the planner walks the (feed, match key) index and fetches
    # every patron's row out of order to test the condition: on SQLite 0.23 s of a day-1 run
    # at 100,000 patrons, for the 1 % that qualify; on PostgreSQL 99-190 ms. By an expression
    # equal to it (the same collation), the table is scanned in order and only those found
    # are sorted: 0.05 s and 23 ms.
    rows = conn.execute(
        select(p.id, p.current_version_id, p.digest)
        .where(p.feed_id == feed_id, p.current_version_id.is_not(None), condition)
        .order_by(p.match_key.concat(""))
    )
    found = PendingRows()
    for pid, vid, digest in rows:
        found.append(int(pid), int(vid), bytes(digest))
    return found


def waiting(conn: Connection, feed_id: int) -> set[tuple[int, int]]:
    """(patron, version) carried by batches built or uploaded but not picked up yet.

    By version, not digest: an expiration record may digest like the record it replaces.
    """
    m, b = member_t.c, batch_t.c
    rows = conn.execute(
        select(m.patron_id, m.version_id)
        .join(batch_t, b.id == m.batch_id)
        .where(b.feed_id == feed_id, b.status.in_([BatchStatus.BUILT, BatchStatus.UPLOADED]))
    )
    return {(int(pid), int(vid)) for pid, vid in rows}


def add_members(conn: Connection, batch_id: int, rows: Sequence[Pending]) -> None:
    """Record what a new batch carries, and link first-time versions to it."""
    for chunk in chunks(rows):
        bulk_insert(
            conn,
            member_t,
            ("batch_id", "patron_id", "version_id", "digest", "outcome"),
            [
                (batch_id, r.patron_id, r.version_id, r.digest, MemberOutcome.SENT.value)
                for r in chunk
            ],
        )
        # By the versions' ids (their primary key), not a join with the rows just written:
        # how many versions are unsent and which members a new batch has, the planner's
        # statistics never know, and a join planned on them ran a nested loop over both
        # (119 ms for a day's thousand records, against 24 ms this way).
        conn.execute(
            update(version_t)
            .where(
                version_t.c.id.in_([r.version_id for r in chunk]), version_t.c.batch_id.is_(None)
            )
            .values(batch_id=batch_id)
        )


def payloads(conn: Connection, version_ids: list[int]) -> Iterator[bytes]:
    """The payloads of these versions, in the order given, read in pages.

    Raises RecordPruned for a version whose payload retention removed.
    """
    for chunk in chunks(version_ids):
        found = dict(
            conn.execute(
                select(version_t.c.id, version_t.c.payload).where(version_t.c.id.in_(chunk))
            ).all()
        )
        for version_id in chunk:
            payload = found.get(version_id)
            if payload is None:
                raise RecordPruned(f"version {version_id} has no payload: pruned by retention")
            yield bytes(payload)


def events(conn: Connection, batch_id: int) -> list[tuple[dt.datetime, str, str | None]]:
    """A batch's ledger history, oldest first."""
    rows = conn.execute(
        select(event_t.c.at, event_t.c.status, event_t.c.message)
        .where(event_t.c.batch_id == batch_id)
        .order_by(event_t.c.id)
    )
    return [(at, status, message) for at, status, message in rows]


def awaiting_confirmation(conn: Connection, feed_id: int) -> int:
    """How many patrons' desired records Alma has not confirmed."""
    p = patron_t.c
    return int(
        conn.execute(
            select(func.count())
            .select_from(patron_t)
            .where(
                p.feed_id == feed_id,
                p.current_version_id.is_not(None),
                _unconfirmed(),
            )
        ).scalar_one()
    )


def file_names(conn: Connection, feed_id: int) -> set[str]:
    """Every delta file name the store knows for the feed."""
    return set(
        conn.execute(select(batch_t.c.file_name).where(batch_t.c.feed_id == feed_id)).scalars()
    )


def next_seq(conn: Connection, feed_id: int) -> int:
    """The sequence number the feed's next batch gets."""
    top = conn.execute(
        select(func.max(batch_t.c.seq)).where(batch_t.c.feed_id == feed_id)
    ).scalar_one()
    return int(top or 0) + 1


def record(conn: Connection, values: dict[str, Any]) -> int:
    """Insert a batch row; returns its id."""
    key = conn.execute(insert(batch_t).values(**values)).inserted_primary_key
    assert key is not None
    return int(key[0])
