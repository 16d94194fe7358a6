"""The snapshot: each patron's desired record, read the way the pass and the ledger need it.

The pass reads the snapshot in pieces — the raw digests of present patrons (tier 1), match
keys in batches (tier 2), the present patrons once at the end (departures) — so memory never
holds the whole of it. Records a run reads in full are written back by :mod:`store.apply`.
"""

from __future__ import annotations

import datetime as dt
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from lxml import etree
from sqlalchemy import (
    BigInteger,
    Connection,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    select,
    update,
)

from ..canonical import Recipe
from ..checks.identifiers import value_hash
from ..userxml import identifier_values, parse_payload
from .feeds import FeedRow, record_settings
from .tables import (
    Digests,
    PatronState,
    chunks,
    driver_pages,
    extract_t,
    feed_t,
    identifier_t,
    member_t,
    patron_t,
    version_t,
)

IDENTIFIER_INDEX = "v1"
"""The version of the identifier index; a feed whose index is older is indexed again."""
PAGE = 5000


@dataclass(frozen=True, slots=True)
class Known:
    """What the snapshot knows of one match key: enough to classify, nothing personal."""

    patron_id: int
    match_id: str
    digest: bytes
    present: bool
    raw_digest: bytes | None


@dataclass(frozen=True)
class LastSent:
    """The last record sent for a patron, as needed to expire it."""

    patron_id: int
    match_key: str
    match_id: str
    expiry_date: dt.date | None
    payload: bytes


@dataclass(frozen=True)
class FoldParticipant:
    """A present patron whose match ID other case foldings would read differently."""

    patron_id: int
    match_key: str
    match_id: str
    raw_digest: bytes | None
    folds: tuple[tuple[str, str], ...]
    """(folding, form) pairs."""


def encode_folds(folds: dict[str, str]) -> str | None:
    """The ``fold_forms`` column's text for an ID's other foldings (None when it has none)."""
    return "\n".join(f"{name}\t{form}" for name, form in sorted(folds.items())) or None


def _decode_folds(text: str) -> tuple[tuple[str, str], ...]:
    pairs = (line.split("\t", 1) for line in text.split("\n") if "\t" in line)
    return tuple((name, form) for name, form in pairs)


# -- for the pass ----------------------------------------------------------------------------


def present_patrons(conn: Connection, feed_id: int) -> Iterator[PresentPage]:
    """What a pass needs to know of every present patron before it reads a record, a page at
    a time (one query; the driver's rows). Columns, not rows: a pass takes each column of a
    page whole into its arrays and index, not value by value (0.2 s of a day-1 run at
    100,000 patrons went to unpacking rows one at a time)."""
    p = patron_t.c
    # The line ends go with the patron's id in one number, made by the database: the pass
    # keys its index of raw digests by it, and would otherwise set them patron by patron.
    known = and_(p.raw_lines.is_not(None), p.raw_lines.between(0, MAX_KEYED_LINES))
    lines = cast(p.raw_lines, BigInteger) + 1  # times 2**40: beyond PostgreSQL's integer
    with_lines = p.id + case((known, lines * literal(LINES_UNIT, BigInteger)), else_=0)
    query = select(p.id, p.digest, p.raw_digest, with_lines).where(
        p.feed_id == feed_id, p.state == PatronState.PRESENT
    )
    for page in driver_pages(conn, query):
        ids, digests, raws, keys = zip(*page, strict=True)
        if not isinstance(digests[0], bytes):  # a driver that gives buffers (memoryview)
            digests = tuple(bytes(d) for d in digests)
            raws = tuple(None if r is None else bytes(r) for r in raws)
        yield PresentPage(ids, digests, raws, keys)


LINES_BITS = 40
LINES_UNIT = 1 << LINES_BITS
"""A keyed patron (:class:`PresentPage`) is ``id + (line ends + 1) * LINES_UNIT``: ids stay
below 2**40, and 0 line ends above it means they are not known."""
MAX_KEYED_LINES = (1 << 22) - 2
"""More line ends than this in one record are not keyed (they are counted again)."""


def keyed_patron(keyed: int) -> tuple[int, int]:
    """``(patron id, line ends)`` of a keyed patron; -1 line ends: not known."""
    return keyed & (LINES_UNIT - 1), (keyed >> LINES_BITS) - 1


def keyed(patron: int, lines: int) -> int:
    """The keyed form of a patron whose raw bytes hold ``lines`` line ends (-1: unknown)."""
    return patron + (lines + 1) * LINES_UNIT if 0 <= lines <= MAX_KEYED_LINES else patron


class PresentPage(NamedTuple):
    """Present patrons, as columns: ``ids[i]`` has digest ``digests[i]``, and so on."""

    ids: tuple[int, ...]
    digests: tuple[bytes, ...]
    raw_digests: tuple[bytes | None, ...]
    """None: a patron whose raw digest was not stored (read in full every day until it is)."""
    keyed: tuple[int, ...]
    """Each patron's id with the line ends of its raw bytes (:func:`keyed_patron`)."""


class CountedLines:
    """Line ends counted in records read by their bytes, for patrons whose count was not
    stored (a store from before counts were kept): kept, once, with the raw digest they
    belong to. Arrays: 28 bytes a patron, however many."""

    def __init__(self) -> None:
        self.patrons = array("q")
        self.raw = Digests()
        self.lines = array("l")

    def add(self, patron: int, raw_digest: bytes, lines: int) -> None:
        self.raw.append(raw_digest)
        self.patrons.append(patron)
        self.lines.append(lines)

    def store(self, conn: Connection) -> None:
        """Write the counts, each only where the patron still has that raw digest."""
        p = patron_t.c
        statement = (
            update(patron_t)
            .where(p.id == bindparam("pid"), p.raw_digest == bindparam("raw"))
            .values(raw_lines=bindparam("n"))
        )
        total = len(self.patrons)
        for start in range(0, total, PAGE):
            rows = [
                {"pid": self.patrons[i], "raw": self.raw[i], "n": self.lines[i]}
                for i in range(start, min(total, start + PAGE))
            ]
            conn.execute(statement, rows)


def patron_range(conn: Connection, feed_id: int) -> tuple[int, int]:
    """The lowest and highest patron id of the feed; ``(0, -1)`` when it has none."""
    low, high = conn.execute(
        select(func.min(patron_t.c.id), func.max(patron_t.c.id)).where(
            patron_t.c.feed_id == feed_id
        )
    ).one()
    return (0, -1) if low is None else (int(low), int(high))


def lookup(conn: Connection, feed_id: int, keys: Iterable[str]) -> dict[str, Known]:
    """What the snapshot holds of these match keys."""
    p = patron_t.c
    found: dict[str, Known] = {}
    for part in chunks(sorted(set(keys))):
        rows = conn.execute(
            select(p.match_key, p.id, p.match_id, p.digest, p.state, p.raw_digest).where(
                p.feed_id == feed_id, p.match_key.in_(part)
            )
        )
        for key, pid, match_id, digest, state, raw in rows:
            found[key] = Known(
                int(pid),
                match_id,
                bytes(digest),
                state == PatronState.PRESENT,
                None if raw is None else bytes(raw),
            )
    return found


def current_payloads(conn: Connection, patron_ids: list[int]) -> dict[int, bytes]:
    """Patron id → its current (desired) record."""
    p, v = patron_t.c, version_t.c
    found: dict[int, bytes] = {}
    for part in chunks(patron_ids):
        rows = conn.execute(
            select(p.id, v.payload)
            .join(version_t, v.id == p.current_version_id)
            .where(p.id.in_(part), v.payload.is_not(None))
        )
        found.update((int(pid), bytes(payload)) for pid, payload in rows)
    return found


def keys_of(conn: Connection, patron_ids: list[int]) -> dict[int, tuple[str, str]]:
    """Patron id → (match key, match ID)."""
    p = patron_t.c
    found: dict[int, tuple[str, str]] = {}
    for part in chunks(patron_ids):
        for pid, key, match_id in conn.execute(
            select(p.id, p.match_key, p.match_id).where(p.id.in_(part))
        ):
            found[int(pid)] = (key, match_id)
    return found


def fold_participants(conn: Connection, feed_id: int) -> list[FoldParticipant]:
    """Present patrons with non-ASCII match IDs that another case folding reads otherwise."""
    p = patron_t.c
    rows = conn.execute(
        select(p.id, p.match_key, p.match_id, p.raw_digest, p.fold_forms).where(
            p.feed_id == feed_id, p.state == PatronState.PRESENT, p.fold_forms.is_not(None)
        )
    )
    return [
        FoldParticipant(
            int(pid), key, match_id, None if raw is None else bytes(raw), _decode_folds(forms)
        )
        for pid, key, match_id, raw, forms in rows
    ]


# -- the identifier index --------------------------------------------------------------------


def has_identifiers(conn: Connection, feed_id: int) -> bool:
    """Whether any patron of the feed holds an identifier value in the index."""
    found = conn.execute(
        select(identifier_t.c.id).where(identifier_t.c.feed_id == feed_id).limit(1)
    )
    return found.first() is not None


def identifier_holders(
    conn: Connection, feed_id: int, hashes: Iterable[int]
) -> dict[int, list[str]]:
    """Value hash → match keys of the stored patrons whose record holds it."""
    i, p = identifier_t.c, patron_t.c
    found: dict[int, list[str]] = defaultdict(list)
    for part in chunks(sorted(set(hashes))):
        rows = conn.execute(
            select(i.value_hash, p.match_key)
            .join(patron_t, p.id == i.patron_id)
            .where(i.feed_id == feed_id, i.value_hash.in_(part))
        )
        for hashed, key in rows:
            found[int(hashed)].append(key)
    return found


def identifier_values_of(
    conn: Connection, feed_id: int, keys: Iterable[str]
) -> dict[str, set[int]]:
    """Match key → the value hashes its stored record holds."""
    i, p = identifier_t.c, patron_t.c
    found: dict[str, set[int]] = defaultdict(set)
    for part in chunks(sorted(set(keys))):
        rows = conn.execute(
            select(p.match_key, i.value_hash)
            .join(patron_t, p.id == i.patron_id)
            .where(p.feed_id == feed_id, p.match_key.in_(part))
        )
        for key, hashed in rows:
            found[key].add(int(hashed))
    return found


def ensure_identifier_index(conn: Connection, feed: FeedRow) -> int:
    """Index the identifiers of every stored record if the feed's index is not complete
    (a store from before the index); returns how many patrons were indexed."""
    if feed.identifier_index == IDENTIFIER_INDEX:
        return 0
    conn.execute(identifier_t.delete().where(identifier_t.c.feed_id == feed.id))
    p, v = patron_t.c, version_t.c
    done = 0
    last_id = 0
    while True:
        rows = conn.execute(
            select(p.id, v.payload)
            .join(version_t, v.id == p.current_version_id)
            .where(p.feed_id == feed.id, p.id > last_id)
            .order_by(p.id)
            .limit(PAGE)
        ).all()
        if not rows:
            break
        values: list[dict[str, Any]] = []
        for pid, payload in rows:
            if payload is None:
                continue
            try:
                user = parse_payload(bytes(payload))
            except etree.XMLSyntaxError:
                continue  # a damaged stored record holds no identifier we can trust
            values.extend(
                {
                    "feed_id": feed.id,
                    "patron_id": pid,
                    "value_hash": value_hash(value),
                    "id_type": id_type[:64],
                }
                for id_type, value in identifier_values(user)
            )
        if values:
            conn.execute(insert(identifier_t), values)
        done += len(rows)
        last_id = rows[-1].id
    record_settings(conn, feed.id, identifier_index=IDENTIFIER_INDEX)
    return done


# -- one patron's records ---------------------------------------------------------------------


def find_patron(conn: Connection, feed_id: int, match_key: str) -> int | None:
    """The id of the feed's patron with this match key, if the snapshot holds one."""
    found = conn.execute(
        select(patron_t.c.id).where(
            patron_t.c.feed_id == feed_id, patron_t.c.match_key == match_key
        )
    ).scalar_one_or_none()
    return None if found is None else int(found)


def has_patrons(conn: Connection, feed_id: int) -> bool:
    """Whether the feed's snapshot holds anyone."""
    found = conn.execute(select(patron_t.c.id).where(patron_t.c.feed_id == feed_id).limit(1))
    return found.first() is not None


def last_sent(conn: Connection, patron_ids: list[int]) -> Iterator[LastSent]:
    """The last-sent record of each of these patrons."""
    p, v = patron_t.c, version_t.c
    for part in chunks(patron_ids):
        rows = conn.execute(
            select(p.id, p.match_key, p.match_id, p.expiry_date, v.payload)
            .join(version_t, v.id == p.current_version_id)
            .where(p.id.in_(part))
            .order_by(p.id)
        )
        for row in rows:
            yield LastSent(row.id, row.match_key, row.match_id, row.expiry_date, bytes(row.payload))


def earlier_payloads(conn: Connection, patron_id: int) -> list[bytes]:
    """The payloads of a patron's versions before the current one, newest first (pruned ones
    have none)."""
    v = version_t.c
    rows = conn.execute(
        select(v.payload)
        .where(
            v.patron_id == patron_id,
            v.payload.is_not(None),
            v.id
            < select(patron_t.c.current_version_id)
            .where(patron_t.c.id == patron_id)
            .scalar_subquery(),
        )
        .order_by(v.id.desc())
    )
    return [bytes(payload) for (payload,) in rows]


def adopt(conn: Connection, feed_id: int, extract_id: int, repaired: set[str]) -> None:
    """Record the snapshot as what Alma holds: every patron confirmed, the extract a baseline.

    Records a fix changed are left unconfirmed: Alma holds the SIS's form, so the repaired
    one goes out with the next run.
    """
    p = patron_t.c
    conn.execute(
        update(patron_t)
        .where(p.feed_id == feed_id)
        .values(confirmed_digest=p.digest, confirmed_expiry=p.expiry_date)
    )
    for part in chunks(sorted(repaired)):
        conn.execute(
            update(patron_t)
            .where(p.feed_id == feed_id, p.match_key.in_(part))
            .values(confirmed_digest=None)
        )
    conn.execute(update(extract_t).where(extract_t.c.id == extract_id).values(baseline=True))


# -- a changed recipe --------------------------------------------------------------------------


def rehash(conn: Connection, feed: FeedRow, recipe: Recipe) -> int:
    """Re-hash the snapshot when the recipe changed; returns how many patrons.

    Every digest that names a record moves to the new recipe together: the versions, the
    patron's desired, confirmed and rejected digests, and what each batch carried. Otherwise
    a changed ``ignore`` list would make every confirmed patron look unconfirmed. The raw
    digests are seeded with the recipe, so none of them is trusted afterwards.
    """
    if feed.hash_recipe == recipe.fingerprint:
        return 0
    p, v, m = patron_t.c, version_t.c, member_t.c
    done = 0
    last_id = 0
    while True:
        patrons = conn.execute(
            select(p.id, p.current_version_id, p.confirmed_digest, p.rejected_digest)
            .where(p.feed_id == feed.id, p.id > last_id)
            .order_by(p.id)
            .limit(PAGE)
        ).all()
        if not patrons:
            break
        versions = conn.execute(
            select(v.id, v.patron_id, v.digest, v.payload).where(
                v.patron_id.in_([row.id for row in patrons])
            )
        ).all()
        # A pruned version keeps its old digest: it is history, never compared again.
        new_digest = {
            row.id: recipe.digest_payload(bytes(row.payload))
            for row in versions
            if row.payload is not None
        }
        renamed = {
            (row.patron_id, bytes(row.digest)): new_digest[row.id]
            for row in versions
            if row.id in new_digest
        }
        moved = [{"vid": vid, "new": digest} for vid, digest in new_digest.items()]
        if moved:
            conn.execute(
                update(version_t).where(v.id == bindparam("vid")).values(digest=bindparam("new")),
                moved,
            )
            conn.execute(
                update(member_t)
                .where(m.version_id == bindparam("vid"))
                .values(digest=bindparam("new")),
                moved,
            )
        changed = [
            {
                "pid": row.id,
                "new_digest": new_digest[row.current_version_id],
                "new_confirmed": _moved(renamed, row.id, row.confirmed_digest),
                "new_rejected": _moved(renamed, row.id, row.rejected_digest),
            }
            for row in patrons
            if row.current_version_id in new_digest
        ]
        if changed:
            conn.execute(
                update(patron_t)
                .where(p.id == bindparam("pid"))
                .values(
                    digest=bindparam("new_digest"),
                    confirmed_digest=bindparam("new_confirmed"),
                    rejected_digest=bindparam("new_rejected"),
                ),
                changed,
            )
        done += len(patrons)
        last_id = patrons[-1].id
    conn.execute(
        update(feed_t).where(feed_t.c.id == feed.id).values(hash_recipe=recipe.fingerprint)
    )
    return done


def _moved(renamed: dict[tuple[int, bytes], bytes], patron_id: int, old: Any) -> bytes | None:
    """A stored digest under the new recipe (unknown ones are kept)."""
    return None if old is None else renamed.get((patron_id, bytes(old)), bytes(old))
