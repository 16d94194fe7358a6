"""Where a feed stands: counts, the last extract, every batch and its ledger state."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from ..config import FeedConfig
from ..store import Store, feeds
from ..store import batches as batch_store
from ..store.tables import (
    OPEN,
    BatchStatus,
    PatronState,
    batch_t,
    extract_t,
    member_t,
    patron_t,
    version_t,
)


@dataclass(frozen=True)
class ExtractInfo:
    """An ingested extract."""

    name: str
    sha256: str
    records: int
    ingested_at: dt.datetime


@dataclass(frozen=True)
class BatchRow:
    """A batch as the ledger holds it."""

    seq: int
    file: str
    status: str
    created_at: dt.datetime
    records: int
    parts: int
    new: int
    changed: int
    returned: int
    departed: int
    sha256: str
    uploaded_at: dt.datetime | None = None
    picked_up_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    attempts: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class FeedStatus:
    """Where a feed stands."""

    feed: str
    store: str
    outbox: str
    patrons_present: int
    patrons_departed: int
    versions: int
    extracts: int
    batches: int
    last_extract: ExtractInfo | None
    last_batch: BatchRow | None
    batches_by_status: dict[str, int] = field(default_factory=dict)
    all_batches: list[BatchRow] = field(default_factory=list)
    """Every batch with its ledger state, oldest first."""
    pending_batches: list[BatchRow] = field(default_factory=list)
    """Built, uploaded or picked up: not yet confirmed or failed."""
    failed_batches: list[BatchRow] = field(default_factory=list)
    awaiting_confirmation: int = 0
    """Patrons whose current record Alma has not confirmed."""


def as_json(value: Any) -> Any:
    """A dataclass (or list of them) as JSON-ready data, datetimes in ISO 8601."""
    if isinstance(value, list):
        return [as_json(item) for item in value]
    data = asdict(value) if hasattr(value, "__dataclass_fields__") else value
    return _plain(data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def status(store: Store, feed: FeedConfig) -> FeedStatus:
    """Counts and the latest extract and batch of ``feed``."""
    with store.read() as conn:
        row = feeds.find_feed(conn, feed.name)
        if row is None:
            return FeedStatus(feed.name, store.url, str(feed.outbox), 0, 0, 0, 0, 0, None, None)
        states: dict[str, int] = dict(
            conn.execute(
                select(patron_t.c.state, func.count())
                .where(patron_t.c.feed_id == row.id)
                .group_by(patron_t.c.state)
            ).all()
        )
        versions = conn.execute(
            select(func.count())
            .select_from(version_t)
            .join(patron_t, patron_t.c.id == version_t.c.patron_id)
            .where(patron_t.c.feed_id == row.id)
        ).scalar_one()
        extracts = conn.execute(
            select(extract_t).where(extract_t.c.feed_id == row.id).order_by(extract_t.c.id.desc())
        ).all()
        batch_rows = _batches(conn, row.id)
        awaiting = batch_store.awaiting_confirmation(conn, row.id)
    last_extract = None
    if extracts:
        e = extracts[0]
        last_extract = ExtractInfo(e.name, e.sha256, e.records, e.ingested_at)
    return FeedStatus(
        feed=feed.name,
        store=store.url,
        outbox=str(feed.outbox),
        patrons_present=int(states.get(PatronState.PRESENT, 0)),
        patrons_departed=int(states.get(PatronState.DEPARTED, 0)),
        versions=int(versions),
        extracts=len(extracts),
        batches=len(batch_rows),
        last_extract=last_extract,
        last_batch=batch_rows[-1] if batch_rows else None,
        batches_by_status=dict(Counter(b.status for b in batch_rows)),
        all_batches=batch_rows,
        pending_batches=[b for b in batch_rows if b.status in OPEN],
        failed_batches=[b for b in batch_rows if b.status == BatchStatus.FAILED],
        awaiting_confirmation=awaiting,
    )


def batches(store: Store, feed: FeedConfig) -> list[BatchRow]:
    """Every batch of ``feed``, oldest first."""
    with store.read() as conn:
        row = feeds.find_feed(conn, feed.name)
        return [] if row is None else _batches(conn, row.id)


def _batches(conn: Any, feed_id: int) -> list[BatchRow]:
    b = batch_t.c
    rows = conn.execute(select(batch_t).where(b.feed_id == feed_id).order_by(b.seq))
    return [
        BatchRow(
            r.seq,
            r.file_name,
            r.status,
            r.created_at,
            r.records,
            r.parts,
            r.new,
            r.changed,
            r.returned,
            r.departed,
            r.sha256,
            r.uploaded_at,
            r.picked_up_at,
            r.resolved_at,
            r.attempts,
            r.last_error,
        )
        for r in rows
    ]


@dataclass(frozen=True)
class Member:
    """A patron one batch carried."""

    match_id: str
    kind: str
    """The kind of the version carried: new, changed, returned or departed."""
    outcome: str
    """sent, or rejected when Alma refused it."""
    reason: str | None


@dataclass(frozen=True)
class BatchDetail:
    """One batch: its ledger row, its patrons and its ledger history."""

    batch: BatchRow
    members: list[Member]
    events: list[tuple[dt.datetime, str, str | None]]
    forgotten: int = 0
    """Patrons the batch carried whom retention has since forgotten (purged)."""


def batch_detail(store: Store, feed: FeedConfig, seq: int) -> BatchDetail:
    """Batch ``seq`` of ``feed`` with every patron it carried and every ledger event."""
    m, p, v = member_t.c, patron_t.c, version_t.c
    with store.read() as conn:
        feed_id, found = batch_store.find_batch(conn, feed.name, seq)
        [batch] = [b for b in _batches(conn, feed_id) if b.seq == seq]
        members = [
            Member(r.match_id, r.kind, r.outcome, r.reason)
            for r in conn.execute(
                select(p.match_id, v.kind, m.outcome, m.reason)
                .join(patron_t, p.id == m.patron_id)
                .join(version_t, v.id == m.version_id)
                .where(m.batch_id == found.id)
                .order_by(p.match_key)
            )
        ]
        events = batch_store.events(conn, found.id)
    return BatchDetail(batch, members, events, max(0, batch.records - len(members)))
