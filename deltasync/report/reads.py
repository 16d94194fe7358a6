"""What the reports read from the store: batches, their ledger events, rejections, held backs.

Read-only queries on one connection, returning plain rows; :mod:`run` and :mod:`period` make
reports of them. Patrons are named by match ID only.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, select

from ..store import runs
from ..store import tables as tb

_VALUE = re.compile(r"\bvalue\s+\S+")
_EMAIL = re.compile(r"[^\s@<>()\"']+@[^\s@<>()\"']+")


@dataclass(frozen=True)
class Batch:
    """A batch with its ledger times."""

    seq: int
    file: str
    status: str
    records: int
    created_at: dt.datetime
    uploaded_at: dt.datetime | None
    picked_up_at: dt.datetime | None
    resolved_at: dt.datetime | None
    attempts: int
    last_error: str | None

    @property
    def since(self) -> dt.datetime:
        """When it reached its present state, as far as the ledger's times tell."""
        return self.resolved_at or self.picked_up_at or self.uploaded_at or self.created_at


@dataclass(frozen=True)
class Event:
    """One entry of a batch's ledger history."""

    seq: int
    at: dt.datetime
    status: str
    message: str | None


@dataclass(frozen=True)
class Rejected:
    """A patron Alma rejected in a batch, with the reason in words (values masked)."""

    match_id: str
    seq: int
    reason: str
    at: dt.datetime


def reason_code(reason: str | None) -> str:
    """Alma's reason for a rejection, without the values it quotes (identifiers, addresses).

    Alma's event descriptions name the identifier that was taken ("Identifier of type BARCODE
    and value 2309… is already taken"); reports, e-mails and logs name patrons by match ID
    only, so values are masked, which also makes equal reasons group together.
    """
    text = _VALUE.sub("value …", reason or "rejected by Alma")
    text = _EMAIL.sub("…", text)
    return text.strip()[:200]


def batches(
    conn: Connection,
    feed_id: int,
    *,
    statuses: Iterable[str] | None = None,
    since: dt.datetime | None = None,
) -> list[Batch]:
    """The feed's batches in sequence order: those in ``statuses``, or touched since ``since``."""
    b = tb.batch_t.c
    query = select(tb.batch_t).where(b.feed_id == feed_id).order_by(b.seq)
    if statuses is not None:
        query = query.where(b.status.in_(list(statuses)))
    rows = [
        Batch(
            r.seq,
            r.file_name,
            r.status,
            r.records,
            r.created_at,
            r.uploaded_at,
            r.picked_up_at,
            r.resolved_at,
            r.attempts,
            r.last_error,
        )
        for r in conn.execute(query)
    ]
    if since is not None:
        rows = [r for r in rows if r.status in tb.OPEN or r.since >= since or r.created_at >= since]
    return rows


def events(conn: Connection, feed_id: int, since: dt.datetime) -> list[Event]:
    """The ledger events of the feed's batches recorded at or after ``since``, oldest first."""
    e, b = tb.event_t.c, tb.batch_t.c
    rows = conn.execute(
        select(b.seq, e.at, e.status, e.message)
        .join(tb.batch_t, b.id == e.batch_id)
        .where(b.feed_id == feed_id, e.at >= since)
        .order_by(e.id)
    )
    return [Event(seq, at, status, message) for seq, at, status, message in rows]


def rejected(conn: Connection, feed_id: int, seqs: Iterable[int] | None = None) -> list[Rejected]:
    """Patrons Alma rejected, in the given batches or in every batch, by batch and match ID."""
    m, p, b = tb.member_t.c, tb.patron_t.c, tb.batch_t.c
    query = (
        select(p.match_id, b.seq, m.reason, b.resolved_at, b.created_at)
        .join(tb.patron_t, p.id == m.patron_id)
        .join(tb.batch_t, b.id == m.batch_id)
        .where(b.feed_id == feed_id, m.outcome == tb.MemberOutcome.REJECTED)
        .order_by(b.seq, p.match_key)
    )
    if seqs is not None:
        query = query.where(b.seq.in_(list(seqs)))
    return [
        Rejected(match_id, seq, reason_code(reason), resolved or created)
        for match_id, seq, reason, resolved, created in conn.execute(query)
    ]


def still_rejected(conn: Connection, feed_id: int) -> list[Rejected]:
    """Patrons whose current record Alma rejected: it is not sent again until it changes."""
    m, p, b = tb.member_t.c, tb.patron_t.c, tb.batch_t.c
    rows = conn.execute(
        select(p.match_id, b.seq, m.reason, b.resolved_at, b.created_at)
        .join(tb.member_t, and_(m.patron_id == p.id, m.version_id == p.current_version_id))
        .join(tb.batch_t, b.id == m.batch_id)
        .where(
            p.feed_id == feed_id,
            m.outcome == tb.MemberOutcome.REJECTED,
            p.rejected_digest.is_not(None),
            p.rejected_digest == p.digest,
        )
        .order_by(p.match_key, b.seq)
    )
    latest: dict[str, Rejected] = {}
    for match_id, seq, reason, resolved, created in rows:
        if match_id not in latest:  # the first batch that rejected this record: since then
            latest[match_id] = Rejected(match_id, seq, reason_code(reason), resolved or created)
    return list(latest.values())


@dataclass(frozen=True)
class Ingest:
    """A logged run that ingested an extract, and what it held back."""

    run: runs.RunEntry
    held_back: list[tuple[str | None, str]]


def ingests(conn: Connection, feed_name: str, feed_id: int, since: dt.datetime) -> list[Ingest]:
    """The runs (and baselines) that ingested an extract from ``since`` on, oldest first.

    A run that found its extract already ingested held nothing back because it checked
    nothing; only the run that recorded an extract (at the run's own start) says what the
    snapshot holds back now.
    """
    e = tb.extract_t.c
    ingested_at = {
        at
        for (at,) in conn.execute(
            select(e.ingested_at).where(e.feed_id == feed_id, e.ingested_at >= since)
        )
    }
    found: list[Ingest] = []
    for entry in reversed(runs.runs(conn, feed_name, since=since)):
        if entry.command in ("run", "baseline") and entry.started_at in ingested_at:
            assert entry.id is not None
            found.append(Ingest(entry, runs.held_back(conn, entry.id)))
    return found


def last_ingest(conn: Connection, feed_name: str, feed_id: int) -> Ingest | None:
    """The newest run that ingested an extract, if the run log still has it."""
    e = tb.extract_t.c
    newest = conn.execute(
        select(e.ingested_at).where(e.feed_id == feed_id).order_by(e.id.desc()).limit(1)
    ).scalar_one_or_none()
    if newest is None:
        return None
    found = ingests(conn, feed_name, feed_id, newest)
    return found[-1] if found else None
