"""The :class:`Store` handle: one engine, migrated on open, and its transactions.

Three kinds of transaction: ``begin`` writes (on SQLite it takes the write lock at once, so
writers wait for each other instead of failing), ``read`` only reads (it never waits for a
writer, nor makes one wait), and ``trial`` is a dry run's, always rolled back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StoreError
from .engine import READ_ONLY, create_store_engine, make_private, migrate, safe_url
from .failures import describe
from .staging import own_tables

if TYPE_CHECKING:
    from .lease import Lease


class Store:
    """An opened, migrated state store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lease: Lease | None = None
        """Set while this process holds a feed's lock (``lock.feed_lock``): every write
        transaction then proves the feed is still this run's before it commits."""

    @property
    def url(self) -> str:
        """The store's URL without password."""
        return safe_url(self.engine.url)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises.
        While this process holds a feed, it commits only after proving it still does."""
        try:
            with self.engine.begin() as connection:
                yield connection
                if self.lease is not None:
                    self.lease.verify(connection)
        except SQLAlchemyError as exc:
            raise StoreError(describe(exc, self.engine.url)) from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A transaction that only reads; on SQLite it sees the store as of its first read."""
        with self._connection(read_only=True) as connection, connection.begin():
            yield connection

    @contextmanager
    def trial(self, *, write: bool = False) -> Iterator[Connection]:
        """A dry run's transaction, always rolled back.

        Records are staged in a temporary table of the connection's own, so the trial takes
        no write lock and a run beside it never waits for it; ``write`` when it must change
        stored rows too (a snapshot to re-hash), which then takes the write lock.
        """
        with self._connection(read_only=not write) as connection:
            transaction = connection.begin()
            try:
                own_tables(connection)
                yield connection
            finally:
                transaction.rollback()

    @contextmanager
    def _connection(self, *, read_only: bool) -> Iterator[Connection]:
        try:
            with self.engine.connect() as connection:
                if read_only:
                    connection.execution_options(**{READ_ONLY: True})
                yield connection
        except SQLAlchemyError as exc:
            raise StoreError(describe(exc, self.engine.url)) from exc

    def close(self) -> None:
        """Release the store's connections."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def open_store(url: str) -> Store:
    """Open the store at ``url``, creating and migrating it as needed."""
    engine = create_store_engine(url)
    try:
        migrate(engine)
        make_private(engine.url)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)
