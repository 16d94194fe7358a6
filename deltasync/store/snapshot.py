"""Reading and writing the snapshot inside one run's transaction.

Records to send are staged in ``staged_record`` as they stream past, so memory holds only the
per-patron index, never payloads. Applying a run is a handful of set-based statements that work
the same on SQLite and PostgreSQL (correlated subqueries rather than UPDATE … FROM, which older
SQLite builds on enterprise Linux lack).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)

from ..canonical import Recipe
from ..diff import Counts, Kind, SnapshotEntry
from ..errors import StoreError
from ..extract_order import Ingested
from .models import Batch, Extract, Feed, Patron, PatronVersion, StagedRecord

PRESENT = "present"
DEPARTED = "departed"
CHUNK = 1000

feed_t = cast(Table, Feed.__table__)
batch_t = cast(Table, Batch.__table__)
extract_t = cast(Table, Extract.__table__)
patron_t = cast(Table, Patron.__table__)
version_t = cast(Table, PatronVersion.__table__)
staged_t = cast(Table, StagedRecord.__table__)


@dataclass(frozen=True)
class FeedRow:
    """The stored identity of a feed."""

    id: int
    name: str
    hash_recipe: str
    fixes: str | None = None


@dataclass(frozen=True)
class LastSent:
    """The last record sent for a patron, as needed to expire it."""

    patron_id: int
    match_key: str
    match_id: str
    expiry_date: dt.date | None
    payload: bytes


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
    return FeedRow(row.id, row.name, row.hash_recipe, row.fixes)


def find_feed(conn: Connection, name: str) -> FeedRow | None:
    """The feed's row if any run has created it."""
    row = conn.execute(select(feed_t).where(feed_t.c.name == name)).one_or_none()
    return None if row is None else FeedRow(row.id, row.name, row.hash_recipe, row.fixes)


def find_patron(conn: Connection, feed_id: int, match_key: str) -> int | None:
    """The id of the feed's patron with this match key, if the snapshot holds one."""
    found = conn.execute(
        select(patron_t.c.id).where(
            patron_t.c.feed_id == feed_id, patron_t.c.match_key == match_key
        )
    ).scalar_one_or_none()
    return None if found is None else int(found)


def find_extract(conn: Connection, feed_id: int, sha256: str) -> Any | None:
    """The ingested extract with this SHA-256, if any."""
    return conn.execute(
        select(extract_t).where(extract_t.c.feed_id == feed_id, extract_t.c.sha256 == sha256)
    ).one_or_none()


def ingested(row: Any) -> Ingested:
    """An extract row as the order guards see it."""
    return Ingested(row.id, row.name, row.ingested_at, row.mtime, row.fingerprint)


def last_extract(conn: Connection, feed_id: int) -> Ingested | None:
    """The extract the feed ingested last."""
    row = conn.execute(
        select(extract_t)
        .where(extract_t.c.feed_id == feed_id)
        .order_by(extract_t.c.id.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else ingested(row)


def extract_with_content(conn: Connection, feed_id: int, fingerprint: str) -> Ingested | None:
    """The newest ingested extract with this content fingerprint."""
    row = conn.execute(
        select(extract_t)
        .where(extract_t.c.feed_id == feed_id, extract_t.c.fingerprint == fingerprint)
        .order_by(extract_t.c.id.desc())
        .limit(1)
    ).one_or_none()
    return None if row is None else ingested(row)


def rehash(conn: Connection, feed: FeedRow, recipe: Recipe) -> int:
    """Re-hash the snapshot when the recipe changed; returns how many patrons.

    Every digest that names a record moves to the new recipe together: the versions, the
    patron's desired, confirmed and rejected digests, and what each batch carried. Otherwise
    a changed ``ignore`` list would make every confirmed patron look unconfirmed.
    """
    if feed.hash_recipe == recipe.fingerprint:
        return 0
    from .ledger import member_t  # the ledger module imports this one

    done = 0
    last_id = 0
    while True:
        patrons = conn.execute(
            select(
                patron_t.c.id,
                patron_t.c.current_version_id,
                patron_t.c.confirmed_digest,
                patron_t.c.rejected_digest,
            )
            .where(patron_t.c.feed_id == feed.id, patron_t.c.id > last_id)
            .order_by(patron_t.c.id)
            .limit(CHUNK)
        ).all()
        if not patrons:
            break
        versions = conn.execute(
            select(
                version_t.c.id, version_t.c.patron_id, version_t.c.digest, version_t.c.payload
            ).where(version_t.c.patron_id.in_([p.id for p in patrons]))
        ).all()
        # A pruned version keeps its old digest: it is history, never compared again.
        new_digest = {
            v.id: recipe.digest_payload(bytes(v.payload)) for v in versions if v.payload is not None
        }
        renamed = {
            (v.patron_id, bytes(v.digest)): new_digest[v.id] for v in versions if v.id in new_digest
        }
        if new_digest:
            conn.execute(
                update(version_t)
                .where(version_t.c.id == bindparam("vid"))
                .values(digest=bindparam("new")),
                [{"vid": vid, "new": digest} for vid, digest in new_digest.items()],
            )
            conn.execute(
                update(member_t)
                .where(member_t.c.version_id == bindparam("vid"))
                .values(digest=bindparam("new")),
                [{"vid": vid, "new": digest} for vid, digest in new_digest.items()],
            )

        conn.execute(
            update(patron_t)
            .where(patron_t.c.id == bindparam("pid"))
            .values(
                digest=bindparam("new_digest"),
                confirmed_digest=bindparam("new_confirmed"),
                rejected_digest=bindparam("new_rejected"),
            ),
            [
                {
                    "pid": p.id,
                    "new_digest": new_digest[p.current_version_id],
                    "new_confirmed": _moved(renamed, p.id, p.confirmed_digest),
                    "new_rejected": _moved(renamed, p.id, p.rejected_digest),
                }
                for p in patrons
                if p.current_version_id in new_digest
            ],
        )
        done += len(patrons)
        last_id = patrons[-1].id
    conn.execute(
        update(feed_t).where(feed_t.c.id == feed.id).values(hash_recipe=recipe.fingerprint)
    )
    return done


def _moved(renamed: dict[tuple[int, bytes], bytes], patron_id: int, old: Any) -> bytes | None:
    """A stored digest under the new recipe (unknown ones are kept)."""
    return None if old is None else renamed.get((patron_id, bytes(old)), bytes(old))


def load_index(conn: Connection, feed_id: int) -> dict[str, SnapshotEntry]:
    """The per-patron index the diff runs against: match key → digest and presence."""
    result = conn.execute(
        select(patron_t.c.match_key, patron_t.c.id, patron_t.c.digest, patron_t.c.state).where(
            patron_t.c.feed_id == feed_id
        )
    )
    return {
        key: SnapshotEntry(pid, bytes(digest), state == PRESENT)
        for key, pid, digest, state in result
    }


class Stager:
    """Buffers records chosen for the delta and writes them to ``staged_record`` in chunks."""

    def __init__(self, conn: Connection, feed_id: int) -> None:
        self.conn = conn
        self.feed_id = feed_id
        self.rows: list[dict[str, Any]] = []
        conn.execute(delete(staged_t).where(staged_t.c.feed_id == feed_id))

    def add(
        self,
        *,
        match_key: str,
        match_id: str,
        patron_id: int | None,
        kind: Kind,
        digest: bytes,
        payload: bytes,
        expiry_date: dt.date | None,
    ) -> None:
        self.rows.append(
            {
                "feed_id": self.feed_id,
                "match_key": match_key,
                "match_id": match_id,
                "patron_id": patron_id,
                "kind": kind.value,
                "digest": digest,
                "payload": payload,
                "expiry_date": expiry_date,
            }
        )
        if len(self.rows) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.conn.execute(insert(staged_t), self.rows)
            self.rows = []

    def withdraw(self, match_keys: Iterable[str]) -> None:
        """Drop staged records of these match keys (held back after all)."""
        self.flush()
        keys = list(match_keys)
        for start in range(0, len(keys), CHUNK):
            self.conn.execute(
                delete(staged_t).where(
                    staged_t.c.feed_id == self.feed_id,
                    staged_t.c.match_key.in_(keys[start : start + CHUNK]),
                )
            )


def _last_seen(conn: Connection, patron_ids: list[int]) -> list[tuple[int, dt.datetime]]:
    """``(version id, last_seen)`` of these patrons' current versions."""
    found: list[tuple[int, dt.datetime]] = []
    for start in range(0, len(patron_ids), CHUNK):
        rows = conn.execute(
            select(version_t.c.id, version_t.c.last_seen)
            .join(patron_t, patron_t.c.current_version_id == version_t.c.id)
            .where(patron_t.c.id.in_(patron_ids[start : start + CHUNK]))
        )
        found.extend((row.id, row.last_seen) for row in rows)
    return found


def last_sent(conn: Connection, patron_ids: list[int]) -> Iterator[LastSent]:
    """The last-sent record of each of these patrons."""
    for start in range(0, len(patron_ids), CHUNK):
        rows = conn.execute(
            select(
                patron_t.c.id,
                patron_t.c.match_key,
                patron_t.c.match_id,
                patron_t.c.expiry_date,
                version_t.c.payload,
            )
            .join(version_t, version_t.c.id == patron_t.c.current_version_id)
            .where(patron_t.c.id.in_(patron_ids[start : start + CHUNK]))
            .order_by(patron_t.c.id)
        )
        for row in rows:
            yield LastSent(row.id, row.match_key, row.match_id, row.expiry_date, bytes(row.payload))


def earlier_payloads(conn: Connection, patron_id: int) -> list[bytes]:
    """The payloads of a patron's versions before the current one, newest first (pruned ones
    have none)."""
    rows = conn.execute(
        select(version_t.c.payload)
        .where(
            version_t.c.patron_id == patron_id,
            version_t.c.payload.is_not(None),
            version_t.c.id
            < select(patron_t.c.current_version_id)
            .where(patron_t.c.id == patron_id)
            .scalar_subquery(),
        )
        .order_by(version_t.c.id.desc())
    )
    return [bytes(payload) for (payload,) in rows]


def current_payload(conn: Connection, patron_id: int) -> bytes:
    """The stored record a patron's snapshot holds now."""
    payload = conn.execute(
        select(version_t.c.payload)
        .join(patron_t, patron_t.c.current_version_id == version_t.c.id)
        .where(patron_t.c.id == patron_id)
    ).scalar_one()
    return bytes(payload)


def record_fixes(conn: Connection, feed_id: int, fixes: str) -> None:
    """Note the fixes the snapshot's digests are now made with."""
    conn.execute(update(feed_t).where(feed_t.c.id == feed_id).values(fixes=fixes))


def has_patrons(conn: Connection, feed_id: int) -> bool:
    """Whether the feed's snapshot holds anyone."""
    found = conn.execute(select(patron_t.c.id).where(patron_t.c.feed_id == feed_id).limit(1))
    return found.first() is not None


def adopt(conn: Connection, feed_id: int, extract_id: int, repaired: set[str]) -> None:
    """Record the snapshot as what Alma holds: every patron confirmed, the extract a baseline.

    Records a fix changed are left unconfirmed: Alma holds the SIS's form, so the repaired
    one goes out with the next run.
    """
    conn.execute(
        update(patron_t)
        .where(patron_t.c.feed_id == feed_id)
        .values(confirmed_digest=patron_t.c.digest)
    )
    keys = list(repaired)
    for start in range(0, len(keys), CHUNK):
        conn.execute(
            update(patron_t)
            .where(
                patron_t.c.feed_id == feed_id, patron_t.c.match_key.in_(keys[start : start + CHUNK])
            )
            .values(confirmed_digest=None)
        )
    conn.execute(update(extract_t).where(extract_t.c.id == extract_id).values(baseline=True))


def batch_file_names(conn: Connection, feed_id: int) -> set[str]:
    """Every delta file name the store knows for the feed."""
    return set(
        conn.execute(select(batch_t.c.file_name).where(batch_t.c.feed_id == feed_id)).scalars()
    )


def next_batch_seq(conn: Connection, feed_id: int) -> int:
    """The sequence number the feed's next batch gets."""
    top = conn.execute(
        select(func.max(batch_t.c.seq)).where(batch_t.c.feed_id == feed_id)
    ).scalar_one()
    return int(top or 0) + 1


def record_batch(conn: Connection, values: dict[str, Any]) -> int:
    """Insert a batch row; returns its id."""
    key = conn.execute(insert(batch_t).values(**values)).inserted_primary_key
    assert key is not None
    return int(key[0])


def record_extract(
    conn: Connection,
    *,
    feed_id: int,
    name: str,
    sha256: str,
    records: int,
    counts: Counts,
    now: dt.datetime,
    mtime: dt.datetime | None = None,
    fingerprint: str | None = None,
) -> int:
    """Insert the ingested extract's row; returns its id (its batch is linked later)."""
    key = conn.execute(
        insert(extract_t).values(
            feed_id=feed_id,
            name=name,
            sha256=sha256,
            records=records,
            ingested_at=now,
            mtime=mtime,
            fingerprint=fingerprint,
            **counts.as_dict(),
        )
    ).inserted_primary_key
    assert key is not None
    return int(key[0])


def link_extract(conn: Connection, extract_id: int, batch_id: int) -> None:
    """Record the batch that carried an extract's changes."""
    conn.execute(update(extract_t).where(extract_t.c.id == extract_id).values(batch_id=batch_id))


def apply(
    conn: Connection,
    *,
    feed_id: int,
    extract_id: int,
    now: dt.datetime,
    departed_without_record: list[int],
    held_back: list[int] | None = None,
) -> None:
    """Make the staged records the new snapshot and the next version of each patron.

    Versions are linked to the batch that first carries them when a batch is built
    (``ledger.add_members``), not here: a version may wait for a later batch. The
    ``held_back`` patrons were in the extract with a record that was not taken, so their
    stored version was not seen again: its ``last_seen`` stays.
    """
    staged = staged_t.c
    kept = _last_seen(conn, held_back or [])
    conn.execute(
        insert(patron_t).from_select(
            ["feed_id", "match_key", "match_id", "digest", "state", "expiry_date"],
            select(
                staged.feed_id,
                staged.match_key,
                staged.match_id,
                staged.digest,
                literal(PRESENT),
                staged.expiry_date,
            ).where(staged.feed_id == feed_id, staged.kind == Kind.NEW.value),
        )
    )
    conn.execute(
        update(staged_t)
        .where(staged.feed_id == feed_id, staged.patron_id.is_(None))
        .values(
            patron_id=select(patron_t.c.id)
            .where(patron_t.c.feed_id == staged.feed_id, patron_t.c.match_key == staged.match_key)
            .scalar_subquery()
        )
    )
    conn.execute(
        insert(version_t).from_select(
            [
                "patron_id",
                "kind",
                "digest",
                "payload",
                "first_seen",
                "last_seen",
                "extract_id",
            ],
            select(
                staged.patron_id,
                staged.kind,
                staged.digest,
                staged.payload,
                literal(now, version_t.c.first_seen.type),
                literal(now, version_t.c.last_seen.type),
                literal(extract_id, version_t.c.extract_id.type),
            )
            .where(staged.feed_id == feed_id)
            .order_by(staged.id),
        )
    )

    def from_staged(column: Any) -> Any:
        return select(column).where(staged.patron_id == patron_t.c.id).scalar_subquery()

    conn.execute(
        update(patron_t)
        .where(patron_t.c.id.in_(select(staged.patron_id).where(staged.feed_id == feed_id)))
        .values(
            match_id=from_staged(staged.match_id),
            digest=from_staged(staged.digest),
            expiry_date=from_staged(staged.expiry_date),
            state=from_staged(
                case(
                    (staged.kind == Kind.DEPARTED.value, literal(DEPARTED)), else_=literal(PRESENT)
                )
            ),
            current_version_id=select(func.max(version_t.c.id))
            .where(version_t.c.patron_id == patron_t.c.id)
            .scalar_subquery(),
        )
    )
    for start in range(0, len(departed_without_record), CHUNK):
        conn.execute(
            update(patron_t)
            .where(patron_t.c.id.in_(departed_without_record[start : start + CHUNK]))
            .values(state=DEPARTED)
        )
    conn.execute(
        update(version_t)
        .where(
            version_t.c.id.in_(
                select(patron_t.c.current_version_id).where(
                    and_(patron_t.c.feed_id == feed_id, patron_t.c.state == PRESENT)
                )
            )
        )
        .values(last_seen=now)
    )
    if kept:
        conn.execute(
            update(version_t)
            .where(version_t.c.id == bindparam("vid"))
            .values(last_seen=bindparam("seen")),
            [{"vid": vid, "seen": seen} for vid, seen in kept],
        )
    conn.execute(delete(staged_t).where(staged.feed_id == feed_id))
