"""Repairs staff ask for: re-create a batch's file, and send chosen patrons again.

Delta files are deterministic: the same records, split the same way, stamped with the same
time, give the same bytes. ``rebuild_batch`` relies on that to re-create a file whose outbox
copy and server copy are both gone, and ``restore_outbox_file`` to repair an outbox copy found
damaged before an upload; both check the result against the SHA-256 in the ledger.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, select, update

from .config import FeedConfig
from .delta import outbox
from .errors import DeltasyncError
from .store import Store, batches, feeds
from .store import snapshot as snap
from .store.lock import feed_lock
from .store.tables import batch_t, member_t, patron_t

CHUNK = 1000


class RebuildError(DeltasyncError):
    """A batch file cannot be re-created as it was."""


@dataclass(frozen=True)
class Rebuilt:
    """A re-created batch file."""

    seq: int
    path: Path
    sha256: str
    records: int


def rebuild_batch(store: Store, feed: FeedConfig, seq: int, folder: Path | None = None) -> Rebuilt:
    """Write batch ``seq``'s file again into ``folder`` (default: the outbox), byte for byte.

    Refuses to overwrite a file that is there, and removes its own output again when the
    bytes do not match the ledger's SHA-256 (say, payloads pruned by retention).
    """
    target = folder or feed.outbox
    with store.read() as conn:
        _feed_id, batch = batches.find_batch(conn, feed.name, seq)
        if os.path.lexists(target / batch.file_name):
            raise RebuildError(
                f"{target / batch.file_name} exists; move it away first (deltasync never "
                "overwrites a delta file)"
            )
        delta = _write_again(conn, feed, batch, target)
    outbox.publish(delta)
    return Rebuilt(seq, delta.path, delta.sha256, delta.records)


def restore_outbox_file(store: Store, feed: FeedConfig, seq: int) -> Rebuilt:
    """Replace batch ``seq``'s outbox file, missing or damaged, with its byte-for-byte rebuild.

    The damaged file is removed only once the rebuild has matched the ledger's SHA-256.
    """
    with store.read() as conn:
        _feed_id, batch = batches.find_batch(conn, feed.name, seq)
        delta = _write_again(conn, feed, batch, feed.outbox)
    try:
        delta.path.unlink(missing_ok=True)
    except OSError as exc:
        outbox.discard(delta)
        raise RebuildError(f"{delta.path}: cannot remove the damaged file: {exc.strerror}") from exc
    outbox.publish(delta)
    return Rebuilt(seq, delta.path, delta.sha256, delta.records)


def _write_again(
    conn: Connection, feed: FeedConfig, batch: batches.BatchState, target: Path
) -> outbox.DeltaFile:
    """Batch's file, written again under a temporary name in ``target`` and checked."""
    row = conn.execute(select(batch_t).where(batch_t.c.id == batch.id)).one()
    versions = _members(conn, batch.id)
    if len(versions) != row.records:
        raise RebuildError(
            f"batch {batch.seq} carried {row.records} records but the store links "
            f"{len(versions)}: patrons forgotten by retention cannot be sent again as they were"
        )
    # Batches from before the split was stored: one part means any split >= records.
    per_part = row.records_per_part or (
        max(row.records, 1) if row.parts == 1 else feed.records_per_part
    )
    try:
        delta = outbox.write(
            target,
            row.file_name,
            batches.payloads(conn, versions),
            total=len(versions),
            records_per_part=per_part,
            created_at=row.created_at,
        )
    except batches.RecordPruned as exc:
        raise RebuildError(
            f"batch {batch.seq}: a record it carried was pruned by retention "
            "(retention_days); the file cannot be re-created"
        ) from exc
    if delta.sha256 != row.sha256:
        outbox.discard(delta)
        raise RebuildError(
            f"batch {batch.seq}: the re-created file differs from the original (SHA-256 "
            f"{delta.sha256[:12]}… instead of {row.sha256[:12]}…); records_per_part or the "
            "zlib library may have changed since it was built"
        )
    return delta


def _members(conn: Connection, batch_id: int) -> list[int]:
    """The version ids a batch carried, in the order the file holds them (by match key)."""
    m, p = member_t.c, patron_t.c
    rows = conn.execute(
        select(m.version_id)
        .join(patron_t, p.id == m.patron_id)
        .where(m.batch_id == batch_id)
        .order_by(p.match_key)
    )
    return [int(vid) for (vid,) in rows]


def resend(store: Store, feed: FeedConfig, match_ids: list[str]) -> tuple[list[str], list[str]]:
    """Put these patrons into the next delta (their current record, in full), as if Alma
    had never confirmed it; returns (marked, unknown). Clears a rejection too."""
    p = patron_t.c
    marked: list[str] = []
    unknown: list[str] = []
    with feed_lock(store, feed.name), store.begin() as conn:
        feed_row = feeds.find_feed(conn, feed.name)
        # Batches built so far cannot confirm these patrons again, or hide them as in flight:
        # only a batch built after the resend carries what staff asked for.
        latest = 0 if feed_row is None else batches.next_seq(conn, feed_row.id) - 1
        for match_id in dict.fromkeys(m.strip() for m in match_ids if m.strip()):
            key = feed.match_id.key(match_id)
            found = None if feed_row is None else snap.find_patron(conn, feed_row.id, key)
            if found is None:
                unknown.append(match_id)
                continue
            conn.execute(
                update(patron_t)
                .where(p.id == found)
                .values(
                    confirmed_digest=None,
                    confirmed_seq=latest,
                    rejected_digest=None,
                    rejected_reason=None,
                )
            )
            marked.append(match_id)
    return marked, unknown
