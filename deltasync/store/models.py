"""The tables of the state store, as SQLAlchemy 2.x typed models.

Every table belongs to one feed. ``patron`` is the snapshot: one row per match ID with the
digest of the record last sent. ``patron_version`` keeps every distinct version a patron went
through (a new row whenever the record differs from the one before), with the batch that sent
it. ``staged_record`` is scratch space used inside one run's transaction and empty outside it.
"""

from __future__ import annotations

import datetime as dt
import zlib
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")
PAYLOAD_LEVEL = 1
"""zlib level of stored records. Measured on 5,000 generated patrons' records: level 1 makes
them 2.53 times smaller, the default level 6 only 2.68 times, in 15 % more time."""


class Timestamp(TypeDecorator[dt.datetime]):
    """A moment stored in UTC and read back time-zone aware on every database.

    SQLite keeps no zone and hands back naive values; this makes both backends alike.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be time-zone aware")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        return value.astimezone(dt.UTC)  # type: ignore[no-any-return]


class Payload(TypeDecorator[bytes]):
    """A stored record: canonical XML, kept zlib-compressed (about 40 % of its size).

    Written compressed since migration 0010; a value that starts with ``<`` is one written
    before it, as it was, and reads back as it is. So does a value that is neither (a damaged
    row): the caller finds it unreadable as XML, as it would have before.
    """

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: bytes | None, dialect: Dialect) -> Any:
        return None if value is None else zlib.compress(value, PAYLOAD_LEVEL)

    def process_result_value(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        stored = bytes(value)
        if stored[:1] == b"<":
            return stored
        try:
            return zlib.decompress(stored)
        except zlib.error:
            return stored


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Feed(Base):
    """A population of patrons synchronised as one Alma integration profile."""

    __tablename__ = "feed"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    match_id: Mapped[str] = mapped_column(String(300))
    hash_recipe: Mapped[str] = mapped_column(Text)
    # The fixes (checks with policy "fix") the snapshot's digests were made with: while they
    # stay the same, a record whose digest matches the snapshot needs no fixing or checking.
    fixes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp())
    # What the patrons' raw digests were made with (recipe, fixes, checks, source): under
    # another seed no raw digest is trusted, and every record is read in full once.
    raw_seed: Mapped[str | None] = mapped_column(Text)
    # The identifier index (patron_identifier) is complete for this feed; NULL: build it.
    identifier_index: Mapped[str | None] = mapped_column(String(32))


class Batch(Base):
    """One delta file built for a feed, numbered by ``seq`` within the feed."""

    __tablename__ = "batch"
    __table_args__ = (UniqueConstraint("feed_id", "seq"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("feed.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp())
    records: Mapped[int] = mapped_column(Integer)
    parts: Mapped[int] = mapped_column(Integer)
    new: Mapped[int] = mapped_column(Integer)
    changed: Mapped[int] = mapped_column(Integer)
    returned: Mapped[int] = mapped_column(Integer)
    departed: Mapped[int] = mapped_column(Integer)
    # The delivery ledger: built → uploaded → picked_up → confirmed, or failed, or superseded.
    uploaded_at: Mapped[dt.datetime | None] = mapped_column(Timestamp())
    picked_up_at: Mapped[dt.datetime | None] = mapped_column(Timestamp())
    resolved_at: Mapped[dt.datetime | None] = mapped_column(Timestamp())
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    job_instance: Mapped[str | None] = mapped_column(String(64))
    # How the file was split, so `batch rebuild` writes the same bytes after a config change.
    records_per_part: Mapped[int | None] = mapped_column(Integer)


class BatchEvent(Base):
    """One entry of a batch's ledger history: a transition or a failed attempt."""

    __tablename__ = "batch_event"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp())
    status: Mapped[str] = mapped_column(String(20))
    message: Mapped[str | None] = mapped_column(Text)


class BatchPatron(Base):
    """A patron a batch carries, with the digest of the record it carried."""

    __tablename__ = "batch_patron"
    __table_args__ = (UniqueConstraint("batch_id", "patron_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id"))
    patron_id: Mapped[int] = mapped_column(ForeignKey("patron.id"), index=True)
    version_id: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[bytes] = mapped_column(LargeBinary(16))
    outcome: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(Text)


class Extract(Base):
    """An SIS extract that was ingested; the same file (by SHA-256) is ingested once."""

    __tablename__ = "extract"
    __table_args__ = (UniqueConstraint("feed_id", "sha256"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("feed.id"), index=True)
    name: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(Integer)
    ingested_at: Mapped[dt.datetime] = mapped_column(Timestamp())
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batch.id"))
    new: Mapped[int] = mapped_column(Integer)
    changed: Mapped[int] = mapped_column(Integer)
    unchanged: Mapped[int] = mapped_column(Integer)
    departed: Mapped[int] = mapped_column(Integer)
    returned: Mapped[int] = mapped_column(Integer)
    held_back: Mapped[int] = mapped_column(Integer)
    # Adopted with `baseline`: recorded as what Alma already holds, nothing sent.
    baseline: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # The file's own modification time and its content (match keys and digests, in any
    # order, under the recipe of the day): an older or earlier extract is refused. NULL for
    # extracts ingested before 0004.
    mtime: Mapped[dt.datetime | None] = mapped_column(Timestamp())
    fingerprint: Mapped[str | None] = mapped_column(String(32))


class Patron(Base):
    """The snapshot: the desired record of one match ID of a feed, and what Alma confirmed."""

    __tablename__ = "patron"
    __table_args__ = (
        UniqueConstraint("feed_id", "match_key"),
        Index("ix_patron_feed_id_held_since", "feed_id", "held_since"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("feed.id"))
    # match_key is how IDs compare (primary IDs folded as Alma compares them, see matchid);
    # match_id is as last written.
    match_key: Mapped[str] = mapped_column(String(300))
    match_id: Mapped[str] = mapped_column(String(300))
    digest: Mapped[bytes] = mapped_column(LargeBinary(16))
    state: Mapped[str] = mapped_column(String(10))
    expiry_date: Mapped[dt.date | None] = mapped_column(Date)
    # The newest patron_version row; not a foreign key, which would make the two tables
    # refer to each other and complicate every migration.
    current_version_id: Mapped[int | None] = mapped_column(BigInteger)
    # The kind of that version (new, changed, departed, ...): asked of every patron by every
    # run, and cheaper here than one read into the version table each.
    current_kind: Mapped[str | None] = mapped_column(String(10))
    # What Alma holds: the digest of the newest confirmed record, and the batch that sent it.
    confirmed_digest: Mapped[bytes | None] = mapped_column(LargeBinary(16))
    confirmed_seq: Mapped[int | None] = mapped_column(Integer)
    # The expiry date of the record Alma last confirmed: what an expiry policy renews from.
    confirmed_expiry: Mapped[dt.date | None] = mapped_column(Date)
    # A record Alma rejected is not sent again until it changes (or on replay).
    rejected_digest: Mapped[bytes | None] = mapped_column(LargeBinary(16))
    rejected_reason: Mapped[str | None] = mapped_column(Text)
    # The hash of the record's bytes as the source last gave them (feed.raw_seed): the same
    # bytes tomorrow mean the same record, without parsing it.
    raw_digest: Mapped[bytes | None] = mapped_column(LargeBinary(16))
    # For a match ID that is not plain ASCII: the forms other case foldings make of it, one
    # per line, so that a new ID another folding merges with it is held back.
    fold_forms: Mapped[str | None] = mapped_column(Text)
    # Since when the extract's record of this patron is held back (not taken): NULL when it
    # is not. The stored record stands meanwhile.
    held_since: Mapped[dt.datetime | None] = mapped_column(Timestamp())


class PatronVersion(Base):
    """One distinct version of a patron's record, kept for audit and for expirations."""

    __tablename__ = "patron_version"
    __table_args__ = (
        Index("ix_patron_version_patron_id_id", "patron_id", "id"),
        # `changes --since` reads versions by when they were first seen.
        Index("ix_patron_version_first_seen", "first_seen"),
        # Retention reads versions last seen before its window, on every run.
        Index("ix_patron_version_last_seen", "last_seen"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    patron_id: Mapped[int] = mapped_column(ForeignKey("patron.id"))
    kind: Mapped[str] = mapped_column(String(10))
    digest: Mapped[bytes] = mapped_column(LargeBinary(16))
    # NULL once retention pruned a superseded version; its digest and dates stay.
    payload: Mapped[bytes | None] = mapped_column(Payload)
    # The record's expiry date (NULL for versions older than migration 0008 that were
    # neither current nor confirmed then): confirming a batch copies it to the patron.
    expiry_date: Mapped[dt.date | None] = mapped_column(Date)
    first_seen: Mapped[dt.datetime] = mapped_column(Timestamp())
    # NULL while this is the current record of a patron in the latest extract: it was seen in
    # every extract since first_seen (nothing is written per unchanged patron per day). Set
    # when the version is superseded, or its patron departs or is held back.
    last_seen: Mapped[dt.datetime | None] = mapped_column(Timestamp())
    extract_id: Mapped[int | None] = mapped_column(ForeignKey("extract.id"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batch.id"), index=True)


class PatronIdentifier(Base):
    """The identifier values of each patron's current record, primary ID included, by hash.

    Alma keeps identifiers unique across users, departed ones included until they are purged,
    so a value a new record shares with any of them is taken. Only hashes are kept (64 bits,
    case-folded), as in the check that reads them.
    """

    __tablename__ = "patron_identifier"
    __table_args__ = (
        Index("ix_patron_identifier_feed_id_value_hash", "feed_id", "value_hash"),
        Index("ix_patron_identifier_patron_id", "patron_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("feed.id"))
    patron_id: Mapped[int] = mapped_column(ForeignKey("patron.id"))
    value_hash: Mapped[int] = mapped_column(BigInteger)
    id_type: Mapped[str] = mapped_column(String(64))


class StagedRecord(Base):
    """A record chosen for the delta being built; lives only inside one run's transaction."""

    __tablename__ = "staged_record"
    __table_args__ = (
        Index("ix_staged_record_feed_id_match_key", "feed_id", "match_key"),
        # Applying a run looks staged records up by patron once per patron; with the feed in
        # the index, SQLite uses it rather than the match key index's feed prefix (which
        # made each lookup read every staged record: quadratic on a reformat day).
        Index("ix_staged_record_feed_id_patron_id", "feed_id", "patron_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("feed.id"))
    match_key: Mapped[str] = mapped_column(String(300))
    match_id: Mapped[str] = mapped_column(String(300))
    patron_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(10))
    digest: Mapped[bytes] = mapped_column(LargeBinary(16))
    payload: Mapped[bytes | None] = mapped_column(Payload)
    expiry_date: Mapped[dt.date | None] = mapped_column(Date)
    raw_digest: Mapped[bytes | None] = mapped_column(LargeBinary(16))
    # Where the record stands in the extract, for messages about it.
    source: Mapped[str | None] = mapped_column(Text)
    line: Mapped[int | None] = mapped_column(Integer)
    fold_forms: Mapped[str | None] = mapped_column(Text)


class StagedIdentifier(Base):
    """An identifier value of a record read in full this run; scratch space like
    ``staged_record``, used to find values two patrons share."""

    __tablename__ = "staged_identifier"
    __table_args__ = (
        Index("ix_staged_identifier_feed_id_value_hash", "feed_id", "value_hash"),
        # Joined to staged_record by match key when the index is renewed: without it SQLite
        # reads every staged value for every staged record (quadratic on day 0).
        Index("ix_staged_identifier_feed_id_match_key", "feed_id", "match_key"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("feed.id"))
    match_key: Mapped[str] = mapped_column(String(300))
    value_hash: Mapped[int] = mapped_column(BigInteger)
    id_type: Mapped[str] = mapped_column(String(64))


class RunLease(Base):
    """Which run holds a feed: a fencing token bumped by every run that takes the feed's lock.

    A lock can be lost while its run goes on (a PostgreSQL restart ends the advisory lock's
    session); a run proves it still holds the feed by finding its own token here, in the
    transaction it is about to commit, and before it changes anything on the server.
    """

    __tablename__ = "run_lease"

    # The feed's name, not its id: the lock is taken before a first run creates the feed.
    feed: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str] = mapped_column(String(300))
    taken_at: Mapped[dt.datetime] = mapped_column(Timestamp())


class Run(Base):
    """One run of a feed's job (run, replay, baseline) and how it ended.

    The log behind reports, ``status`` of many feeds and metrics. It is written after the run,
    in a transaction of its own, also when the run failed: a failed run changes no data, but
    it is part of the feed's story.
    """

    __tablename__ = "run"
    __table_args__ = (Index("ix_run_feed_started_at", "feed", "started_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # The feed's name, not its id: a first run may fail before the feed row exists.
    feed: Mapped[str] = mapped_column(String(64))
    command: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(Timestamp())
    finished_at: Mapped[dt.datetime] = mapped_column(Timestamp())
    outcome: Mapped[str] = mapped_column(String(16))
    exit_code: Mapped[int] = mapped_column(Integer)
    extract: Mapped[str | None] = mapped_column(Text)
    batch_seq: Mapped[int | None] = mapped_column(Integer)
    # JSON: the run's counts, and the reasons it needs attention (or the error that ended it).
    counts: Mapped[str] = mapped_column(Text)
    attention: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)


class RunHeldBack(Base):
    """A record a run held back, by the code that held it (match IDs only, nothing else)."""

    __tablename__ = "run_held_back"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id"), index=True)
    match_id: Mapped[str | None] = mapped_column(String(300))
    code: Mapped[str] = mapped_column(String(64))
