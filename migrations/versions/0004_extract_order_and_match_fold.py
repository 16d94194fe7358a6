"""extract order and content (file time, fingerprint); primary IDs folded as Alma compares them

Match keys of primary-ID feeds were made with Python's lower(); they are remade with the fold
deltasync now uses (Java's equalsIgnoreCase, letter by letter), so no patron looks new. Two
stored patrons that become one under it (µ7 and μ7, which Alma never told apart) cannot both
keep the key: the one written last keeps it, the other is retired — marked departed without an
expiration record (expiring it would expire the user Alma holds under both spellings), given a
key no extract can produce, and without a current record, so nothing ever sends it again.

The fold is copied here, not imported: a migration must do tomorrow what it did today.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

PAGE = 1000
RETIRED_PREFIX = "\x01retired:"
"""No extract can produce a key starting with U+0001: XML 1.0 forbids the character."""

feed = sa.table("feed", sa.column("id", sa.Integer), sa.column("match_id", sa.String))
patron = sa.table(
    "patron",
    sa.column("id", sa.Integer),
    sa.column("feed_id", sa.Integer),
    sa.column("match_key", sa.String),
    sa.column("match_id", sa.String),
    sa.column("state", sa.String),
    sa.column("current_version_id", sa.BigInteger),
)


def upgrade() -> None:
    op.add_column("extract", sa.Column("mtime", sa.DateTime(timezone=True), nullable=True))
    op.add_column("extract", sa.Column("fingerprint", sa.String(length=32), nullable=True))
    _rekey(_alma_fold, retire=True)


def downgrade() -> None:
    _rekey(str.lower, retire=False)
    op.drop_column("extract", "fingerprint")
    op.drop_column("extract", "mtime")


def _rekey(fold: Any, *, retire: bool) -> None:
    """Give every patron of a primary-ID feed the key ``fold`` makes of its match ID.

    Both foldings agree with lower() on ASCII, so only patrons with other letters can move;
    they and whoever holds one of their new keys are all that is held in memory.
    """
    conn = op.get_bind()
    feeds = conn.execute(sa.select(feed.c.id).where(feed.c.match_id == "primary_id"))
    columns = (
        patron.c.id,
        patron.c.match_key,
        patron.c.match_id,
        patron.c.state,
        patron.c.current_version_id,
    )
    live = ~patron.c.match_key.startswith(RETIRED_PREFIX, autoescape=True)
    for (feed_id,) in feeds.all():
        moving: dict[int, Any] = {}
        last_id = 0
        while True:
            page = conn.execute(
                sa.select(*columns)
                .where(patron.c.feed_id == feed_id, patron.c.id > last_id, live)
                .order_by(patron.c.id)
                .limit(PAGE)
            ).all()
            if not page:
                break
            moving.update((r.id, r) for r in page if not r.match_id.isascii())
            last_id = page[-1].id
        wanted = sorted({fold(r.match_id) for r in moving.values()})
        holders: dict[int, Any] = dict(moving)
        for start in range(0, len(wanted), PAGE):
            found = conn.execute(
                sa.select(*columns).where(
                    patron.c.feed_id == feed_id,
                    patron.c.match_key.in_(wanted[start : start + PAGE]),
                    live,
                )
            ).all()
            holders.update((r.id, r) for r in found)
        _apply(conn, holders.values(), fold, retire=retire)


def _apply(conn: Any, rows: Any, fold: Any, *, retire: bool) -> None:
    groups: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        groups[fold(row.match_id)].append(row)
    moves: dict[int, str] = {}
    retired: list[int] = []
    for key, group in groups.items():
        if len(group) > 1 and not retire:
            ids = ", ".join(sorted(r.match_id for r in group))
            raise RuntimeError(
                f"cannot downgrade below 0004: patrons {ids} would share one match key "
                "under the old folding; restore a backup taken before the upgrade"
            )
        group.sort(
            key=lambda r: (r.state == "present", r.current_version_id or 0, r.id),
            reverse=True,
        )
        keeper, *others = group
        if keeper.match_key != key:
            moves[keeper.id] = key
        for other in others:
            moves[other.id] = f"{RETIRED_PREFIX}{other.id}"
            retired.append(other.id)
    # Two steps, so that no key is ever held twice in between (the key is unique).
    for patron_id in moves:
        conn.execute(
            sa.update(patron)
            .where(patron.c.id == patron_id)
            .values(match_key=f"{RETIRED_PREFIX}moving:{patron_id}")
        )
    for patron_id, key in moves.items():
        conn.execute(sa.update(patron).where(patron.c.id == patron_id).values(match_key=key))
    if retired:
        conn.execute(
            sa.update(patron)
            .where(patron.c.id.in_(retired))
            .values(state="departed", current_version_id=None)
        )


def _alma_fold(value: str) -> str:
    """deltasync.matchid.alma_fold as of this revision."""
    if value.isascii():
        return value.lower()
    return "".join(_simple_lower(_simple_upper(c)) for c in value)


def _simple_upper(char: str) -> str:
    for mapped in (char.upper(), char.title()):
        if len(mapped) == 1:
            return mapped
    return char


def _simple_lower(char: str) -> str:
    if char == "\u0130":
        return "i"
    mapped = char.lower()
    return mapped if len(mapped) == 1 else char
