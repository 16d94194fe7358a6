"""Scratch space of one run's transaction: the records read in full, and their identifiers.

Every record the pass reads in full is staged, whatever becomes of it (sent, unchanged but
spelled anew, held back), so that duplicates, identifier conflicts and the new snapshot are
worked out in SQL rather than in memory: memory stays flat however large the extract.

Staged rows live in temporary tables of the run's own connection (:func:`own_tables`), which
hide the store's ``staged_record`` and ``staged_identifier`` from it: SQLite and PostgreSQL
both look in the session's temporary schema first. So staging writes no journal, leaves no
dead rows behind in a shared table (on PostgreSQL, 100,000 deleted rows slowed every query of
the next run), and runs of different feeds never see each other's rows. The store's own tables
stay, empty, for older code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Index, MetaData, Table, delete, func, select, update

from .tables import bulk_insert, chunks, staged_identifier_t, staged_t

FLUSH_ROWS = 2000
"""Rows per executemany: large enough for bulk speed, small enough for flat memory."""
RECORD_COLUMNS = (
    "feed_id",
    "match_key",
    "match_id",
    "patron_id",
    "kind",
    "digest",
    "payload",
    "expiry_date",
    "raw_digest",
    "raw_lines",
    "source",
    "line",
    "fold_forms",
)
IDENTIFIER_COLUMNS = ("feed_id", "match_key", "value_hash", "id_type")


@dataclass(frozen=True, slots=True)
class StagedRow:
    """A staged record, as the store reads it back."""

    match_key: str
    match_id: str
    patron_id: int | None
    kind: str
    source: str | None
    line: int | None


def own_tables(conn: Connection) -> None:
    """Give this connection temporary staging tables of its own, unless it has them.

    On PostgreSQL they go at the end of the transaction (``ON COMMIT DROP``); on SQLite they
    stay with the connection, emptied by every run, and a rolled-back transaction takes their
    creation back with it. Their indexes are the store's.
    """
    dialect = conn.dialect.name
    for staged in (staged_t, staged_identifier_t):
        if dialect == "sqlite":
            found = conn.exec_driver_sql(
                "SELECT 1 FROM sqlite_temp_master WHERE type = 'table' AND name = ?",
                (staged.name,),
            ).first()
        else:
            found = conn.exec_driver_sql(f"SELECT to_regclass('pg_temp.{staged.name}')").scalar()
        if found is not None:
            continue
        columns = [
            Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in staged.columns
        ]
        # Named for PostgreSQL only: a dialect's keyword makes SQLAlchemy import that dialect,
        # 55 ms of a SQLite run's start.
        on_commit: dict[str, Any] = {}
        if dialect == "postgresql":
            on_commit["postgresql_on_commit"] = "DROP"
        mine = Table(staged.name, MetaData(), *columns, prefixes=["TEMPORARY"], **on_commit)
        for index in staged.indexes:
            assert index.name is not None
            Index(f"tmp_{index.name}", *(mine.c[c.name] for c in index.columns))
        mine.create(conn)


class Staging:
    """Buffers staged records and identifier values and writes them in chunks."""

    def __init__(self, conn: Connection, feed_id: int) -> None:
        own_tables(conn)
        self.conn = conn
        self.feed_id = feed_id
        self._records: list[tuple[Any, ...]] = []
        self._identifiers: list[tuple[Any, ...]] = []
        self.clear()

    def clear(self) -> None:
        """Forget everything staged (a new pass starts over)."""
        self._records.clear()
        self._identifiers.clear()
        self.conn.execute(delete(staged_t).where(staged_t.c.feed_id == self.feed_id))
        self.conn.execute(
            delete(staged_identifier_t).where(staged_identifier_t.c.feed_id == self.feed_id)
        )

    def add(
        self,
        *,
        match_key: str,
        match_id: str,
        patron_id: int | None,
        kind: str,
        digest: bytes,
        payload: bytes | None = None,
        expiry_date: dt.date | None = None,
        raw_digest: bytes | None = None,
        raw_lines: int | None = None,
        source: str | None = None,
        line: int | None = None,
        fold_forms: str | None = None,
    ) -> None:
        """Stage one record (``payload`` only for a record that becomes the snapshot's)."""
        self._records.append(
            (
                self.feed_id,
                match_key,
                match_id,
                patron_id,
                kind,
                digest,
                payload,
                expiry_date,
                raw_digest,
                raw_lines,
                source,
                line,
                fold_forms,
            )
        )
        if len(self._records) >= FLUSH_ROWS:
            self.flush()

    def add_identifiers(self, match_key: str, values: Iterable[tuple[str, int]]) -> None:
        """Stage the ``(id_type, value hash)`` pairs of a staged record."""
        feed_id = self.feed_id
        self._identifiers.extend(
            (feed_id, match_key, value_hash, id_type[:64]) for id_type, value_hash in values
        )
        if len(self._identifiers) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write what is buffered."""
        if self._records:
            bulk_insert(self.conn, staged_t, RECORD_COLUMNS, self._records)
            self._records = []
        if self._identifiers:
            bulk_insert(self.conn, staged_identifier_t, IDENTIFIER_COLUMNS, self._identifiers)
            self._identifiers = []

    def finish(self) -> None:
        """Write what is buffered, at the end of a pass: on PostgreSQL, also give the planner
        statistics of the scratch tables. Autovacuum never looks at a temporary table, and
        without them the settling queries are planned for a few rows: finding the identifier
        values two of 100,000 staged records share ran for over nine minutes as a nested loop.
        (ANALYZE counts the rows this transaction staged.)"""
        self.flush()
        if self.conn.dialect.name == "postgresql":
            self.conn.exec_driver_sql("ANALYZE staged_record, staged_identifier")

    def find(self, match_keys: Iterable[str]) -> list[StagedRow]:
        """The staged rows of these match keys, in the order they were staged."""
        self.flush()
        s = staged_t.c
        found: list[StagedRow] = []
        for part in chunks(sorted(set(match_keys))):
            rows = self.conn.execute(
                select(s.match_key, s.match_id, s.patron_id, s.kind, s.source, s.line, s.id)
                .where(s.feed_id == self.feed_id, s.match_key.in_(part))
                .order_by(s.id)
            )
            found.extend(StagedRow(*row[:6]) for row in rows)
        return found

    def repeated_keys(self) -> list[str]:
        """Match keys staged more than once: the extract holds them twice."""
        self.flush()
        s = staged_t.c
        rows = self.conn.execute(
            select(s.match_key)
            .where(s.feed_id == self.feed_id)
            .group_by(s.match_key)
            .having(func.count() > 1)
        )
        return [key for (key,) in rows]

    def hold(self, match_keys: Iterable[str], kinds: Iterable[str] | None = None) -> None:
        """Make these staged records held back: they are not applied or sent."""
        self.flush()
        s = staged_t.c
        for part in chunks(sorted(set(match_keys))):
            query = update(staged_t).where(s.feed_id == self.feed_id, s.match_key.in_(part))
            if kinds is not None:
                query = query.where(s.kind.in_(list(kinds)))
            self.conn.execute(query.values(kind="held_back", payload=None))

    def kinds(self) -> dict[str, int]:
        """How many staged records of each kind."""
        self.flush()
        s = staged_t.c
        rows = self.conn.execute(
            select(s.kind, func.count()).where(s.feed_id == self.feed_id).group_by(s.kind)
        )
        return {kind: int(count) for kind, count in rows}

    def shared_values(self) -> Iterator[tuple[str, str, int]]:
        """``(match key, id_type, value hash)`` of every staged value that another staged
        record holds too."""
        self.flush()
        i = staged_identifier_t.c
        shared = (
            select(i.value_hash)
            .where(i.feed_id == self.feed_id)
            .group_by(i.value_hash)
            .having(func.count(func.distinct(i.match_key)) > 1)
        )
        rows = self.conn.execute(
            select(i.match_key, i.id_type, i.value_hash)
            .where(i.feed_id == self.feed_id, i.value_hash.in_(shared))
            .order_by(i.id)
        )
        for key, id_type, value in rows:
            yield str(key), str(id_type), int(value)

    def staged_values(self) -> Iterator[tuple[str, str, int]]:
        """Every staged ``(match key, id_type, value hash)``."""
        self.flush()
        i = staged_identifier_t.c
        rows = self.conn.execute(
            select(i.match_key, i.id_type, i.value_hash)
            .where(i.feed_id == self.feed_id)
            .order_by(i.id)
        )
        for key, id_type, value in rows:
            yield str(key), str(id_type), int(value)
