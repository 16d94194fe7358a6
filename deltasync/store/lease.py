"""Proof that a run still holds its feed: a fencing token, checked before every commit and
before every change on the server.

A lock can vanish under a run that goes on: PostgreSQL ends an advisory lock with its
connection (a server restart, a cut network), and a lock file can be deleted. Another run may
then take the feed, and two runs would each upload a file with the same patrons. So a run that
takes the lock also takes the feed's lease: it bumps the feed's token in ``run_lease``,
committed at once, and keeps the new value. Each of its write transactions, before it commits,
updates the lease row where the token is still its own (on PostgreSQL that locks the row, so a
newer run cannot take the feed until the commit is done) and checks that its lock is still in
place; before each upload, take-back or removal on the server it checks the same. A run that
lost the feed stops with :class:`FeedLost`, its transaction rolled back.

The check before a remote change cannot be atomic with it (an SFTP server knows nothing of
tokens): a lock lost in the seconds between check and upload still goes unnoticed there.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable

from sqlalchemy import Connection, insert, select, update

from ..errors import FeedLost
from .store import Store
from .tables import lease_t

LockCheck = Callable[[Connection], str | None]
"""Whether the lock itself is still held: None, or why not (checked through ``conn``)."""


class Lease:
    """A run's hold on its feed: the token it took, and how to tell its lock is intact."""

    def __init__(self, store: Store, feed: str, token: int, lock_intact: LockCheck) -> None:
        self.store = store
        self.feed = feed
        self.token = token
        self.lock_intact = lock_intact

    def verify(self, conn: Connection) -> None:
        """Inside a write transaction, just before it commits: raise :class:`FeedLost` unless
        this run still holds the feed (the lease row stays locked until the commit)."""
        still = conn.execute(
            update(lease_t)
            .where(lease_t.c.feed == self.feed, lease_t.c.token == self.token)
            .values(token=self.token)
        ).rowcount
        self._prove(conn, still == 1, "committing and rolled its changes back")

    def check(self, doing: str) -> None:
        """Before a change on the server (``doing`` names it): raise :class:`FeedLost` unless
        this run still holds the feed."""
        with self.store.read() as conn:
            token = conn.execute(
                select(lease_t.c.token).where(lease_t.c.feed == self.feed)
            ).scalar_one_or_none()
            self._prove(conn, token == self.token, doing)

    def _prove(self, conn: Connection, token_is_ours: bool, doing: str) -> None:
        if not token_is_ours:
            holder = conn.execute(
                select(lease_t.c.holder).where(lease_t.c.feed == self.feed)
            ).scalar_one_or_none()
            raise FeedLost(
                f"this run of feed {self.feed!r} lost its lock: another run ({holder}) took "
                f"the feed over. It stopped before {doing}; the other run carries on"
            )
        broken = self.lock_intact(conn)
        if broken is not None:
            raise FeedLost(
                f"this run of feed {self.feed!r} lost its lock: {broken}. It stopped before "
                f"{doing}; run again"
            )


def take(store: Store, feed: str, lock_intact: LockCheck) -> Lease:
    """Take the feed's lease, once its lock is held: a new token, committed at once.

    A run that lost the lock and is still inside a transaction keeps the lease row locked;
    the new token then waits until that run has committed or rolled back.
    """
    holder = f"pid {os.getpid()} on {socket.gethostname()}"
    now = dt.datetime.now(dt.UTC)
    with store.begin() as conn:
        bumped = conn.execute(
            update(lease_t)
            .where(lease_t.c.feed == feed)
            .values(token=lease_t.c.token + 1, holder=holder, taken_at=now)
        ).rowcount
        if not bumped:
            conn.execute(insert(lease_t).values(feed=feed, token=1, holder=holder, taken_at=now))
        token = conn.execute(select(lease_t.c.token).where(lease_t.c.feed == feed)).scalar_one()
    return Lease(store, feed, int(token), lock_intact)
