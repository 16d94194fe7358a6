"""One run per feed at a time, on SQLite and PostgreSQL, released if the process dies.

SQLite: an exclusive ``flock`` on a file beside the database (the kernel drops it with the
process). PostgreSQL: a session-level advisory lock on a dedicated connection (the server drops
it with the connection), so runs on different machines sharing one server exclude each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import text

from ..errors import DeltasyncError
from .engine import PRIVATE_FILE_MODE
from .store import Store

POLL_SECONDS = 0.2
WAIT_SECONDS = 10.0
"""How long a second run waits for the first before giving up."""


class FeedBusy(DeltasyncError):
    """Another run of the same feed holds the lock."""


@contextlib.contextmanager
def feed_lock(store: Store, feed: str, wait_seconds: float | None = None) -> Iterator[None]:
    """Hold the feed's run lock; waits up to ``wait_seconds``, then raises :class:`FeedBusy`."""
    if wait_seconds is None:
        wait_seconds = WAIT_SECONDS
    url = store.engine.url
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        with _file_lock(Path(f"{url.database}.{feed}.lock"), feed, wait_seconds):
            yield
    else:
        with _advisory_lock(store, feed, wait_seconds):
            yield


def _busy(feed: str, wait_seconds: float) -> FeedBusy:
    return FeedBusy(
        f"another deltasync run of feed {feed!r} is in progress (waited {wait_seconds:g} s); "
        "this run did nothing. If no other run exists, the lock was released with its "
        "process: run again"
    )


@contextlib.contextmanager
def _file_lock(path: Path, feed: str, wait_seconds: float) -> Iterator[None]:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, PRIVATE_FILE_MODE)
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
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _advisory_lock(store: Store, feed: str, wait_seconds: float) -> Iterator[None]:
    key = int.from_bytes(
        hashlib.sha256(f"deltasync:{feed}".encode()).digest()[:8], "big", signed=True
    )
    with store.engine.connect() as conn:
        deadline = time.monotonic() + wait_seconds
        while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            conn.rollback()
            if time.monotonic() >= deadline:
                raise _busy(feed, wait_seconds)
            time.sleep(POLL_SECONDS)
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
