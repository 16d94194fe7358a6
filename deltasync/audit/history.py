"""One patron over time: every version with its batches, and the record as it stood then."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, and_, func, null, or_, select

from ..config import FeedConfig
from ..errors import NotFound
from ..store import Store, feeds
from ..store import snapshot as snap
from ..store.tables import BatchStatus, MemberOutcome, batch_t, extract_t, member_t, version_t
from .fields import FieldChange, payload_changes


class View(StrEnum):
    """Which record ``show`` answers with."""

    EXTRACT = "extract"
    """The record the extract held (after fixes): the snapshot's desired record."""
    SENT = "sent"
    """The record last delivered to Alma's folder."""
    CONFIRMED = "confirmed"
    """The record Alma last confirmed loading (or adopted by ``baseline``)."""


@dataclass(frozen=True)
class VersionRow:
    """One stored version of a patron's record."""

    kind: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    batch_seq: int | None
    batch_file: str | None
    batch_status: str | None
    digest: str
    record: str | None
    """The record as canonical XML; None once retention pruned it."""
    carried_by: list[tuple[int, str]] = field(default_factory=list)
    """Every batch that carried this version, (sequence, ledger state), oldest first."""
    changes: list[FieldChange] | None = None
    """What differs from the previous version (empty for the first); None when either
    record was pruned."""
    baseline: bool = False
    """Adopted by ``baseline``: Alma already held it, nothing was sent."""


@dataclass(frozen=True)
class Shown:
    """A patron's record as it stood at some moment, in one view."""

    match_id: str
    view: View
    as_of: dt.datetime
    kind: str
    first_seen: dt.datetime
    batch_seq: int | None
    record: str | None


def patron_id(conn: Connection, feed: FeedConfig, match_id: str) -> int:
    """The stored id of the patron ``match_id`` of ``feed``; NotFound when there is none."""
    key = feed.match_id.key(match_id.strip())
    row = feeds.find_feed(conn, feed.name)
    found = None if row is None else snap.find_patron(conn, row.id, key)
    if found is None:
        raise NotFound(f"feed {feed.name!r} has no patron with match ID {match_id!r}")
    return found


def _feed_id(conn: Connection, feed: FeedConfig) -> int:
    row = feeds.find_feed(conn, feed.name)
    assert row is not None  # the patron was found in it
    return row.id


def history(store: Store, feed: FeedConfig, match_id: str) -> list[VersionRow]:
    """Every stored version of one patron, oldest first, with the batches that carried it
    and what changed from the version before."""
    v, b, e = version_t.c, batch_t.c, extract_t.c
    with store.read() as conn:
        pid = patron_id(conn, feed, match_id)
        rows = conn.execute(
            select(
                v.id,
                v.kind,
                v.first_seen,
                v.last_seen,
                v.digest,
                v.payload,
                b.seq,
                b.file_name,
                b.status,
                e.baseline,
            )
            .outerjoin(batch_t, b.id == v.batch_id)
            .outerjoin(extract_t, e.id == v.extract_id)
            .where(v.patron_id == pid)
            .order_by(v.id)
        ).all()
        carriers = _carriers(conn, pid)
        # A version still seen keeps no time of its own: it was seen by the latest extract.
        latest = conn.execute(
            select(func.max(e.ingested_at)).where(e.feed_id == _feed_id(conn, feed))
        ).scalar_one()
    versions: list[VersionRow] = []
    previous: bytes | None = None
    for number, r in enumerate(rows):
        payload = None if r.payload is None else bytes(r.payload)
        diff: list[FieldChange] | None = []  # the first version has nothing before it
        if number:
            diff = payload_changes(previous, payload) if previous is not None else None
        versions.append(
            VersionRow(
                r.kind,
                r.first_seen,
                r.last_seen or latest or r.first_seen,
                r.seq,
                r.file_name,
                r.status,
                bytes(r.digest).hex(),
                None if payload is None else payload.decode("utf-8"),
                carriers.get(int(r.id), []),
                diff,
                bool(r.baseline),
            )
        )
        previous = payload
    return versions


def show(store: Store, feed: FeedConfig, match_id: str, *, as_of: dt.datetime, view: View) -> Shown:
    """The record of ``match_id`` as it stood at ``as_of`` in ``view``."""
    v, b, m = version_t.c, batch_t.c, member_t.c
    with store.read() as conn:
        pid = patron_id(conn, feed, match_id)
        query: Any
        if view == View.EXTRACT:
            query = select(v.id, null().label("seq")).where(
                v.patron_id == pid, v.first_seen <= as_of
            )
        else:
            moment: Any
            if view == View.SENT:
                moment = func.coalesce(b.uploaded_at, b.created_at)
                # Delivered, or written by a feed without delivery; a file taken back
                # unread (superseded) never reached Alma.
                done = and_(
                    b.status != BatchStatus.SUPERSEDED,
                    or_(
                        b.uploaded_at.is_not(None),
                        and_(b.status == BatchStatus.CONFIRMED, b.uploaded_at.is_(None)),
                    ),
                )
            else:
                moment = b.resolved_at
                done = and_(b.status == BatchStatus.CONFIRMED, m.outcome == MemberOutcome.SENT)
            query = (
                select(m.version_id, b.seq)
                .join(batch_t, b.id == m.batch_id)
                .where(m.patron_id == pid, done, moment <= as_of)
            )
        candidates = conn.execute(query.order_by(query.selected_columns[0].desc()).limit(1))
        found = candidates.first()
        if view == View.CONFIRMED:
            found = _later_baseline(conn, pid, as_of, found)
        if found is None:
            raise NotFound(f"patron {match_id!r}: no {view.value} record at {as_of.isoformat()}")
        version = conn.execute(select(version_t).where(v.id == found[0])).one()
    if view == View.EXTRACT and version.kind == "departed":
        raise NotFound(
            f"patron {match_id!r} was not in the extract at {as_of.isoformat()}: departed "
            f"{version.first_seen.isoformat()} (--view sent shows the expiration record)"
        )
    record = None if version.payload is None else bytes(version.payload).decode("utf-8")
    return Shown(match_id, view, as_of, version.kind, version.first_seen, found[1], record)


def _later_baseline(conn: Connection, pid: int, as_of: dt.datetime, found: Any) -> Any:
    """A version adopted by ``baseline`` counts as confirmed from when it was recorded."""
    v, e = version_t.c, extract_t.c
    adopted = conn.execute(
        select(v.id)
        .join(extract_t, e.id == v.extract_id)
        .where(v.patron_id == pid, e.baseline.is_(True), v.first_seen <= as_of)
        .order_by(v.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if adopted is not None and (found is None or int(found[0]) < adopted):
        return (adopted, None)
    return found


def _carriers(conn: Connection, pid: int) -> dict[int, list[tuple[int, str]]]:
    b, m = batch_t.c, member_t.c
    carriers: dict[int, list[tuple[int, str]]] = {}
    for version_id, seq, status in conn.execute(
        select(m.version_id, b.seq, b.status)
        .join(batch_t, b.id == m.batch_id)
        .where(m.patron_id == pid)
        .order_by(b.seq)
    ):
        carriers.setdefault(int(version_id), []).append((int(seq), str(status)))
    return carriers
