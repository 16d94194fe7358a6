"""Build a batch: the delta file of every patron whose desired record Alma has not confirmed.

The file is written under a hidden name and the batch recorded in the caller's transaction;
the caller publishes the file (gives it its final name) just before it commits, and discards
it if anything fails, so a file in the outbox always has its batch in the store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection

from ..config import FeedConfig
from ..diff import Counts
from ..store import batches
from ..store.tables import BatchStatus
from . import outbox


@dataclass(frozen=True)
class BatchInfo:
    """The delta file a run produced."""

    seq: int
    file: Path
    records: int
    parts: int
    sha256: str


@dataclass(frozen=True)
class Built:
    """A batch recorded in the store and its file, written but not published yet."""

    info: BatchInfo
    delta: outbox.DeltaFile
    batch_id: int


def build(
    conn: Connection,
    feed: FeedConfig,
    feed_id: int,
    rows: Sequence[batches.Pending],
    now: dt.datetime,
    counts: Counts,
    departed_with_record: int,
) -> Built:
    """Write the delta file of ``rows`` (not yet published) and record its batch."""
    seq = batches.next_seq(conn, feed_id)
    name = outbox.file_name(feed.name, seq, now)
    delta = outbox.write(
        feed.outbox,
        name,
        batches.payloads(conn, [r.version_id for r in rows]),
        total=len(rows),
        records_per_part=feed.records_per_part,
        created_at=now,
    )
    try:
        batch_id = batches.record(
            conn,
            {
                "feed_id": feed_id,
                "seq": seq,
                "file_name": name,
                "sha256": delta.sha256,
                "size": delta.size,
                "status": BatchStatus.BUILT.value,
                "created_at": now,
                "records": delta.records,
                "parts": delta.parts,
                "new": counts.new,
                "changed": counts.changed,
                "returned": counts.returned,
                "departed": departed_with_record,
                "records_per_part": feed.records_per_part,
            },
        )
        batches.add_members(conn, batch_id, rows)
        state = batches.batch_by_seq(conn, feed_id, seq)
        assert state is not None
        batches.note(conn, state, now, f"built: {delta.records} records in {delta.parts} part(s)")
        if feed.delivery is None:
            batches.transition(
                conn,
                state,
                BatchStatus.CONFIRMED,
                now,
                "no delivery configured: taken as confirmed when written",
            )
    except BaseException:
        outbox.discard(delta)
        raise
    info = BatchInfo(seq, delta.path, delta.records, delta.parts, delta.sha256)
    return Built(info, delta, batch_id)
