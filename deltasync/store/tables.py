"""Table handles of the state store, the states its rows move through, and one paging helper.

Every query module imports its tables from here, so none needs another query module for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Connection, Select, Table, insert
from sqlalchemy.exc import OperationalError

from .models import (
    batch_t,
    event_t,
    extract_t,
    feed_t,
    identifier_t,
    lease_t,
    member_t,
    patron_t,
    run_held_t,
    run_t,
    staged_identifier_t,
    staged_t,
    version_t,
)

# The tables themselves are declared in models.py; this is where every query module finds them.
__all__ = [
    "BatchStatus",
    "CHUNK",
    "MemberOutcome",
    "OPEN",
    "PatronState",
    "TRANSITIONS",
    "batch_t",
    "bulk_insert",
    "chunks",
    "event_t",
    "extract_t",
    "feed_t",
    "identifier_t",
    "lease_t",
    "member_t",
    "patron_t",
    "run_held_t",
    "run_t",
    "staged_identifier_t",
    "staged_t",
    "version_t",
]

T = TypeVar("T")

CHUNK = 1000
"""Rows per statement where a list of ids goes into ``IN (…)`` or a parameter list."""
PAGE = 10_000
"""Rows fetched at a time by :func:`driver_pages`: memory stays flat however many match."""


DIGEST_BYTES = 16
"""The size of every digest the store keeps (xxh3-128: records, raw bytes)."""


class Digests:
    """Digests packed one after another in one buffer, for lists of one per patron: a bytes
    object each would cost 49 bytes beside the 16 (a million patrons)."""

    def __init__(self) -> None:
        self._packed = bytearray()

    def append(self, digest: bytes) -> None:
        if len(digest) != DIGEST_BYTES:
            raise ValueError(f"a digest of {len(digest)} bytes, not {DIGEST_BYTES}")
        self._packed += digest

    def __len__(self) -> int:
        return len(self._packed) // DIGEST_BYTES

    def __getitem__(self, index: int) -> bytes:
        start = range(len(self))[index] * DIGEST_BYTES
        return bytes(self._packed[start : start + DIGEST_BYTES])


ANALYZE_AFTER = 5000
"""Rows one statement set may rewrite before PostgreSQL's statistics of them are refreshed."""
ANALYZE_WAIT = "2s"
"""How long a refresh of statistics waits for its lock before it is given up."""
LOCK_NOT_AVAILABLE = "55P03"


def refresh_statistics(conn: Connection, rows: int, *tables: Table) -> None:
    """After ``rows`` were written to ``tables`` (at least :data:`ANALYZE_AFTER`), give
    PostgreSQL's planner their statistics now, in this transaction: autovacuum sees a change
    only after it is committed, and a minute or more later, while the same run — or the next
    one, started at once — plans its queries for the tables as they were. (SQLite's planner
    keeps no statistics it is not asked for.)

    ANALYZE holds a lock until the transaction ends, and another ANALYZE of the same table
    waits for it: another feed's run of a store several feeds share may hold it for minutes.
    Statistics only make statements faster, so the refresh waits :data:`ANALYZE_WAIT` at most
    and is otherwise given up (in a savepoint: the transaction goes on as it was)."""
    if rows < ANALYZE_AFTER or conn.dialect.name != "postgresql":
        return
    try:
        with conn.begin_nested():
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{ANALYZE_WAIT}'")
            conn.exec_driver_sql("ANALYZE " + ", ".join(table.name for table in tables))
            conn.exec_driver_sql("SET LOCAL lock_timeout TO DEFAULT")
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def bulk_insert(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert ``rows`` (values in the order of ``columns``) in one executemany.

    The same as ``conn.execute(insert(table), [dicts])``, without SQLAlchemy's per-row
    parameter machinery, which cost more than the database on a first run of 100,000 patrons
    (staged records and their identifiers). Each column's own bind processing still applies
    (dates on SQLite, compressed records), so what is stored is exactly what Core would store.
    """
    if not rows:
        return
    sql, positions, processors = _prepared(conn, table, tuple(columns))
    params: list[Any] = []
    for row in rows:
        values = list(row)
        for i, process in processors:
            if values[i] is not None:
                values[i] = process(values[i])
        params.append(
            dict(zip(columns, values, strict=True))
            if positions is None
            else tuple(values[i] for i in positions)
        )
    conn.exec_driver_sql(sql, params)


def driver_pages(conn: Connection, query: Select[Any]) -> Iterator[Sequence[Any]]:
    """The rows of ``query`` as the driver's own tuples, a page (:data:`PAGE` rows) at a
    time, in the connection's transaction.

    For the few queries that read a row of every patron of a feed: building SQLAlchemy's row
    objects took twice as long as the database (100,000 present patrons at the start of a
    pass). Values come as the driver gives them, without result processing: only for columns
    of integers, text and bytes, which both drivers return as Python's own types.
    """
    compiled = query.compile(dialect=conn.dialect)
    values = compiled.construct_params()
    params: Any = (
        tuple(values[name] for name in compiled.positiontup or [])
        if compiled.positional
        else values
    )
    cursor = conn.connection.cursor()
    try:
        cursor.execute(str(compiled), params)
        while page := cursor.fetchmany(PAGE):
            yield page
    finally:
        cursor.close()


_Prepared = tuple[str, list[int] | None, list[tuple[int, Callable[[Any], Any]]]]
_PREPARED: dict[tuple[str, tuple[str, ...], str], _Prepared] = {}


def _prepared(conn: Connection, table: Table, columns: tuple[str, ...]) -> _Prepared:
    """The INSERT of ``columns`` in the dialect's own words, compiled once: its SQL, where
    each of its positional parameters stands in ``columns`` (None: it takes names), and the
    bind processor of each column that has one."""
    dialect = conn.dialect
    key = (table.name, columns, dialect.name)
    prepared = _PREPARED.get(key)
    if prepared is None:
        compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
        positions = (
            [columns.index(name) for name in compiled.positiontup or []]
            if compiled.positional
            else None
        )
        processors: list[tuple[int, Callable[[Any], Any]]] = [
            (i, process)
            for i, name in enumerate(columns)
            if (process := table.c[name].type._cached_bind_processor(dialect)) is not None
        ]
        prepared = (str(compiled), positions, processors)
        _PREPARED[key] = prepared
    return prepared


class PatronState(StrEnum):
    """Whether a patron is in the latest extract."""

    PRESENT = "present"
    DEPARTED = "departed"


class BatchStatus(StrEnum):
    """Where a batch stands in the delivery ledger (README: Delivery and the ledger)."""

    BUILT = "built"
    UPLOADED = "uploaded"
    PICKED_UP = "picked_up"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    SUPERSEDED = "superseded"

    @property
    def open(self) -> bool:
        """Not resolved yet: Alma may still read it, or has it in hand."""
        return self in OPEN


OPEN = (BatchStatus.BUILT, BatchStatus.UPLOADED, BatchStatus.PICKED_UP)

TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    # built: uploaded (or found on the server), replaced unread, confirmed when nothing
    # delivers it (or by staff), failed (its file is gone and cannot be rebuilt, or staff).
    BatchStatus.BUILT: frozenset(
        {
            BatchStatus.UPLOADED,
            BatchStatus.SUPERSEDED,
            BatchStatus.CONFIRMED,
            BatchStatus.FAILED,
        }
    ),
    BatchStatus.UPLOADED: frozenset(
        {
            BatchStatus.PICKED_UP,
            BatchStatus.SUPERSEDED,
            BatchStatus.CONFIRMED,
            BatchStatus.FAILED,
        }
    ),
    BatchStatus.PICKED_UP: frozenset({BatchStatus.CONFIRMED, BatchStatus.FAILED}),
    BatchStatus.CONFIRMED: frozenset(),
    BatchStatus.FAILED: frozenset(),
    BatchStatus.SUPERSEDED: frozenset(),
}
"""The only moves a batch makes; resolved batches (confirmed, failed, superseded) stay."""


class MemberOutcome(StrEnum):
    """What became of one patron a batch carried."""

    SENT = "sent"
    REJECTED = "rejected"
