"""The run log: every run of a feed's job, how it ended, and what it held back.

Reports, the status of many feeds and metrics read it. A run is logged after it ends, in a
transaction of its own, whatever the end: done, done but needing attention, refused by a
guard, or stopped by an error (then the run changed no data, but the log says it happened).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from .tables import run_held_t, run_t


class Outcome(StrEnum):
    """How a run ended; each has the exit code the CLI gives it."""

    OK = "ok"
    ATTENTION = "attention"
    REFUSED = "refused"
    ERROR = "error"

    @property
    def exit_code(self) -> int:
        """0 done, 4 done but needs attention, 3 refused by a guard, 1 error."""
        return {"ok": 0, "attention": 4, "refused": 3, "error": 1}[self.value]


@dataclass(frozen=True)
class RunEntry:
    """One logged run."""

    feed: str
    command: str
    started_at: dt.datetime
    finished_at: dt.datetime
    outcome: Outcome
    extract: str | None = None
    batch_seq: int | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    attention: list[str] = field(default_factory=list)
    error: str | None = None
    id: int | None = None


def log(conn: Connection, entry: RunEntry, held_back: Iterable[tuple[str | None, str]]) -> int:
    """Record a run and the ``(match ID, code)`` of each record it held back; its id."""
    key = conn.execute(
        insert(run_t).values(
            feed=entry.feed,
            command=entry.command,
            started_at=entry.started_at,
            finished_at=entry.finished_at,
            outcome=entry.outcome.value,
            exit_code=entry.outcome.exit_code,
            extract=entry.extract,
            batch_seq=entry.batch_seq,
            counts=json.dumps(entry.counts, sort_keys=True),
            attention=json.dumps(entry.attention),
            error=entry.error,
        )
    ).inserted_primary_key
    assert key is not None
    run_id = int(key[0])
    rows = [{"run_id": run_id, "match_id": m, "code": c} for m, c in held_back]
    if rows:
        conn.execute(insert(run_held_t), rows)
    return run_id


def runs(
    conn: Connection, feed: str, *, since: dt.datetime | None = None, limit: int | None = None
) -> list[RunEntry]:
    """The feed's logged runs, newest first; from ``since`` on, at most ``limit``."""
    query = select(run_t).where(run_t.c.feed == feed)
    if since is not None:
        query = query.where(run_t.c.started_at >= since)
    query = query.order_by(run_t.c.started_at.desc(), run_t.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [_entry(row) for row in conn.execute(query)]


def last(conn: Connection, feed: str) -> RunEntry | None:
    """The feed's newest logged run."""
    found = runs(conn, feed, limit=1)
    return found[0] if found else None


def held_back(conn: Connection, run_id: int) -> list[tuple[str | None, str]]:
    """``(match ID, code)`` of each record the run held back."""
    rows = conn.execute(
        select(run_held_t.c.match_id, run_held_t.c.code)
        .where(run_held_t.c.run_id == run_id)
        .order_by(run_held_t.c.id)
    )
    return [(m, c) for m, c in rows]


def prune(conn: Connection, feed: str, before: dt.datetime) -> int:
    """Forget the feed's runs started before ``before`` (they name patrons); how many."""
    old = select(run_t.c.id).where(run_t.c.feed == feed, run_t.c.started_at < before)
    conn.execute(delete(run_held_t).where(run_held_t.c.run_id.in_(old)))
    count = conn.execute(
        select(func.count())
        .select_from(run_t)
        .where(run_t.c.feed == feed, run_t.c.started_at < before)
    ).scalar_one()
    conn.execute(delete(run_t).where(run_t.c.feed == feed, run_t.c.started_at < before))
    return int(count)


def _entry(row: Any) -> RunEntry:
    return RunEntry(
        feed=row.feed,
        command=row.command,
        started_at=row.started_at,
        finished_at=row.finished_at,
        outcome=Outcome(row.outcome),
        extract=row.extract,
        batch_seq=row.batch_seq,
        counts=json.loads(row.counts),
        attention=json.loads(row.attention),
        error=row.error,
        id=row.id,
    )
