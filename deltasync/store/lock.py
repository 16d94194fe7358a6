"""One run per feed at a time, on SQLite and PostgreSQL, released if the process dies.

SQLite: an exclusive ``flock`` on a file beside the database (the kernel drops it with the
process). PostgreSQL: a session-level advisory lock on a dedicated connection (the server drops
it with the connection), so runs on different machines sharing one server exclude each other.
Holding the lock also takes the feed's lease (lease.py), which the run's commits and remote
changes check, because a lock can be lost while its run goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from ..errors import DeltasyncError, StoreError
from . import lease
from .engine import PRIVATE_FILE_MODE
from .failures import describe
from .store import Store

POLL_SECONDS = 0.2
WAIT_SECONDS = 10.0
"""How long a second run waits for the first before giving up."""


class FeedBusy(DeltasyncError):
    """Another run of the same feed holds the lock."""


@contextlib.contextmanager
def feed_lock(store: Store, feed: str, wait_seconds: float | None = None) -> Iterator[lease.Lease]:
    """Hold the feed's run lock and lease; waits up to ``wait_seconds``, then raises
    :class:`FeedBusy`. While it is held, ``store`` checks the lease before every commit.
    Re-entrant: a handle that holds the feed already keeps its lock and lease."""
    if store.lease is not None and store.lease.feed == feed:
        # Held already through this very handle: run --all checks a feed under its lock
        # before it runs it, and the run must not wait for itself.
        yield store.lease
        return
    if wait_seconds is None:
        wait_seconds = WAIT_SECONDS
    url = store.engine.url
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        held = _file_lock(Path(f"{url.database}.{feed}.lock"), feed, wait_seconds)
    else:
        held = _advisory_lock(store, feed, wait_seconds)
    with held as lock_intact:
        taken = lease.take(store, feed, lock_intact)
        outer, store.lease = store.lease, taken
        try:
            yield taken
        finally:
            store.lease = outer


def _busy(feed: str, wait_seconds: float) -> FeedBusy:
    return FeedBusy(
        f"another deltasync run of feed {feed!r} is in progress (waited {wait_seconds:g} s); "
        "this run did nothing. If no other run exists, the lock was released with its "
        "process: run again"
    )


@contextlib.contextmanager
def _file_lock(path: Path, feed: str, wait_seconds: float) -> Iterator[lease.LockCheck]:
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, PRIVATE_FILE_MODE)
    except OSError as exc:
        raise StoreError(f"cannot create the lock file {path}: {exc.strerror}") from exc
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _busy(feed, wait_seconds) from None
                time.sleep(POLL_SECONDS)
        held = os.fstat(fd)

        def intact(_conn: Connection) -> str | None:
            # A run that finds no lock file makes a new one and locks that.
            try:
                now = os.stat(path)
            except FileNotFoundError:
                return f"its lock file {path} was removed"
            if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
                return f"its lock file {path} was replaced"
            return None

        try:
            yield intact
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _advisory_lock(store: Store, feed: str, wait_seconds: float) -> Iterator[lease.LockCheck]:
    key = int.from_bytes(
        hashlib.sha256(f"deltasync:{feed}".encode()).digest()[:8], "big", signed=True
    )
    url = store.engine.url
    try:
        conn = store.engine.connect()
    except SQLAlchemyError as exc:
        raise StoreError(describe(exc, url)) from exc
    try:
        try:
            deadline = time.monotonic() + wait_seconds
            while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                conn.rollback()
                if time.monotonic() >= deadline:
                    raise _busy(feed, wait_seconds)
                time.sleep(POLL_SECONDS)
            backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            conn.commit()
        except SQLAlchemyError as exc:
            raise StoreError(describe(exc, url)) from exc
        unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
        # How pg_locks shows a one-bigint advisory lock: the high and low 32 bits, objsubid 1.
        held = {"pid": backend, "high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF}

        def intact(check: Connection) -> str | None:
            # Asked on the run's own connection: the session holding the lock is alive only
            # if the server still lists its lock.
            found = check.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = :pid AND classid::bigint = :high AND objid::bigint = :low"
                    " AND objsubid = 1 AND database ="
                    " (SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                held,
            ).scalar_one()
            return None if found else "the connection to PostgreSQL that held it was lost"

        yield intact
    finally:
        _release(conn, key)


def _release(conn: Connection, key: int) -> None:
    """Unlock and close; a lock whose connection is gone went with it, so that is no error
    (and must not hide the error that ended the run)."""
    try:
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        conn.commit()
    except SQLAlchemyError:
        with contextlib.suppress(SQLAlchemyError):
            conn.invalidate()  # never hand a session that may still hold the lock back
    finally:
        with contextlib.suppress(SQLAlchemyError):
            conn.close()
