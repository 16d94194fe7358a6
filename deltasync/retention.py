"""Retention of personal data: prune old superseded records, forget purged patrons, delete
old delta files.

A superseded version older than the window loses its payload (the record itself) but keeps
its digest, kind, dates and batch links, so ``history`` still shows that something changed and
when. A departed patron whose purge date has passed, whose expiration Alma confirmed, is
forgotten entirely: Alma's purge job deletes them there too. Nothing that a batch still in
flight needs is touched, and the current record of a patron is never pruned (expiration
records are built from it).

Files go after the store's prune has committed: the outbox copy of every batch resolved
(confirmed, failed, superseded) before the window, orphans set aside before it, and in the
remote folder deltasync's own hidden files (taken back, or left by an interrupted upload) from
before it. Alma's ``.handled`` files are its record of what it read: they are never touched.
"""

from __future__ import annotations

import datetime as dt
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from lxml import etree
from sqlalchemy import Connection, and_, delete, exists, func, or_, select, update

from .config import FeedConfig
from .delivery import Transport, hidden_original, open_transport
from .delta import outbox
from .errors import DeltasyncError
from .store import Store, feeds, runs
from .store.lock import feed_lock
from .store.tables import (
    OPEN,
    BatchStatus,
    PatronState,
    batch_t,
    identifier_t,
    member_t,
    patron_t,
    version_t,
)
from .userxml import parse_alma_date, parse_payload

CHUNK = 1000
RESOLVED = (BatchStatus.CONFIRMED, BatchStatus.FAILED, BatchStatus.SUPERSEDED)


@dataclass(frozen=True)
class Pruned:
    """What one prune removed."""

    cutoff: dt.datetime
    payloads: int
    """Superseded records whose payload was removed."""
    patrons: int
    """Departed patrons forgotten because their purge date had passed."""
    outbox_files: int = 0
    """Delta files of resolved batches, and set-aside orphans, deleted from the outbox."""
    remote_files: int = 0
    """deltasync's own hidden files (withdrawn, interrupted uploads) deleted from remote_dir."""
    problems: tuple[str, ...] = ()
    """Files that could not be deleted; they are tried again by the next prune."""
    runs: int = 0
    """Entries of the run log older than the window (they name held-back patrons)."""


def prune_feed(
    store: Store,
    feed: FeedConfig,
    *,
    days: int,
    now: dt.datetime,
    transport: Transport | None = None,
) -> Pruned:
    """Apply the retention window to ``feed`` under the feed lock: the store in a transaction
    of its own, then the files. ``transport`` replaces the one the feed describes (tests)."""
    with feed_lock(store, feed.name):
        with store.begin() as conn:
            row = feeds.find_feed(conn, feed.name)
            if row is None:
                return Pruned(now - dt.timedelta(days=days), 0, 0)
            pruned = prune(conn, feed, row.id, days=days, now=now)
        if transport is None and feed.delivery is not None:
            transport = open_transport(feed.delivery)
            try:
                return prune_files(store, feed, row.id, pruned, transport)
            finally:
                transport.close()
        return prune_files(store, feed, row.id, pruned, transport)


def prune_files(
    store: Store, feed: FeedConfig, feed_id: int, pruned: Pruned, transport: Transport | None
) -> Pruned:
    """Delete the files older than ``pruned.cutoff`` that no batch needs any more.

    Call it after the store's prune committed. A file that cannot be deleted is reported in
    ``problems``, never raised: the prune itself has succeeded.
    """
    b = batch_t.c
    with store.begin() as conn:
        expired = set(
            conn.execute(
                select(b.file_name).where(
                    b.feed_id == feed_id,
                    b.status.in_(RESOLVED),
                    func.coalesce(b.resolved_at, b.created_at) < pruned.cutoff,
                )
            ).scalars()
        )
    problems: list[str] = []
    local = _prune_outbox(feed.outbox, expired, pruned.cutoff, problems)
    remote = 0 if transport is None else _prune_remote(transport, feed.name, pruned, problems)
    return replace(pruned, outbox_files=local, remote_files=remote, problems=tuple(problems))


def _prune_outbox(folder: Path, expired: set[str], cutoff: dt.datetime, problems: list[str]) -> int:
    try:
        candidates = [p for p in _entries(folder) if p.name in expired]
        # Set aside by a crashed run, so the store never knew them: their age is their mtime.
        candidates += [p for p in _entries(folder / outbox.ORPHANS) if _older(p, cutoff)]
    except OSError as exc:
        problems.append(f"{exc.filename or folder}: cannot list old delta files: {exc.strerror}")
        return 0
    deleted = 0
    for path in sorted(candidates):
        try:
            path.unlink()
        except OSError as exc:
            problems.append(f"{path}: cannot delete an old delta file: {exc.strerror}")
        else:
            deleted += 1
    return deleted


def _entries(folder: Path) -> list[Path]:
    """The regular files in ``folder`` (none when it does not exist)."""
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if stat.S_ISREG(p.lstat().st_mode)]


def _older(path: Path, cutoff: dt.datetime) -> bool:
    return path.lstat().st_mtime < cutoff.timestamp()


def _prune_remote(transport: Transport, feed: str, pruned: Pruned, problems: list[str]) -> int:
    deleted = 0
    try:
        for remote in transport.list():
            original = hidden_original(remote.name)
            if original is None or not outbox.is_delta_name(original, feed):
                continue
            if remote.mtime < pruned.cutoff.timestamp():
                transport.remove(remote.name)
                deleted += 1
    except DeltasyncError as exc:  # unreachable, refused, or a key's passphrase missing
        problems.append(f"cannot delete old withdrawn files from remote_dir: {exc}")
    return deleted


def prune(
    conn: Connection, feed: FeedConfig, feed_id: int, *, days: int, now: dt.datetime
) -> Pruned:
    """Apply the retention window of ``days`` to one feed, inside the caller's transaction."""
    cutoff = now - dt.timedelta(days=days)
    v, p, m, b = version_t.c, patron_t.c, member_t.c, batch_t.c
    in_flight = exists(
        select(m.id)
        .join(batch_t, b.id == m.batch_id)
        # By patron first: batch_patron is indexed by patron, not by version.
        .where(m.patron_id == v.patron_id, m.version_id == v.id, b.status.in_(OPEN))
    )
    # Led by the versions last seen before the window (an index finds the few there are):
    # asked by feed first, SQLite read every version of the feed on every run.
    old = version_t.alias("old")
    superseded = exists(
        select(p.id).where(
            p.id == v.patron_id,
            p.feed_id == feed_id,
            or_(p.current_version_id.is_(None), p.current_version_id != v.id),
        )
    )
    pruned = conn.execute(
        update(version_t)
        .where(
            v.id.in_(select(old.c.id).where(old.c.last_seen < cutoff, old.c.payload.is_not(None))),
            superseded,
            ~in_flight,
        )
        .values(payload=None)
    ).rowcount
    today = now.astimezone(feed.timezone).date()
    forgotten = _forget_purged(conn, feed_id, today)
    logged = runs.prune(conn, feed.name, cutoff)
    return Pruned(cutoff, int(pruned or 0), forgotten, runs=logged)


def _forget_purged(conn: Connection, feed_id: int, today: dt.date) -> int:
    v, p, m, b = version_t.c, patron_t.c, member_t.c, batch_t.c
    in_flight = exists(
        select(m.id)
        .join(batch_t, b.id == m.batch_id)
        .where(m.patron_id == p.id, b.status.in_(OPEN))
    )
    candidates = conn.execute(
        select(p.id, v.payload)
        .join(version_t, v.id == p.current_version_id)
        .where(
            p.feed_id == feed_id,
            p.state == PatronState.DEPARTED,
            and_(p.confirmed_digest.is_not(None), p.confirmed_digest == p.digest),
            ~in_flight,
        )
    )
    purged: list[int] = []
    for patron_id, payload in candidates:
        try:
            record = parse_payload(bytes(payload))
        except etree.XMLSyntaxError:
            continue  # a damaged record tells no purge date: keep the patron (run reports it)
        purge = parse_alma_date(record.findtext("purge_date"))
        if purge is not None and purge < today:
            purged.append(int(patron_id))
    for start in range(0, len(purged), CHUNK):
        chunk = purged[start : start + CHUNK]
        conn.execute(delete(member_t).where(m.patron_id.in_(chunk)))
        conn.execute(delete(identifier_t).where(identifier_t.c.patron_id.in_(chunk)))
        conn.execute(delete(version_t).where(v.patron_id.in_(chunk)))
        conn.execute(delete(patron_t).where(p.id.in_(chunk)))
    return len(purged)
