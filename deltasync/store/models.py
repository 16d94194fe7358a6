"""The tables of the state store, as SQLAlchemy Core tables on one ``metadata``.

Every table belongs to one feed. ``patron`` is the snapshot: one row per match ID with the
digest of the record last sent. ``patron_version`` keeps every distinct version a patron went
through (a new row whenever the record differs from the one before), with the batch that sent
it. ``staged_record`` is scratch space used inside one run's transaction and empty outside it.

Core tables, not ORM classes: every query is written in Core, and declaring the tables with the
ORM imported ``sqlalchemy.orm`` into every start of the command for nothing (this module took
about 90 ms to import with the ORM, 7 ms without).

A column is nullable unless it says ``nullable=False`` or is a primary key, as in the
migrations.
"""

from __future__ import annotations

import datetime as dt
import zlib
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
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


metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Every table of the store: what ``check``'s scratch store is created from, and what the
migrations are compared with."""

# A population of patrons synchronised as one Alma integration profile.
feed_t = Table(
    "feed",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("match_id", String(300), nullable=False),
    Column("hash_recipe", Text, nullable=False),
    # The fixes (checks with policy "fix") the snapshot's digests were made with: while they
    # stay the same, a record whose digest matches the snapshot needs no fixing or checking.
    Column("fixes", Text),
    Column("created_at", Timestamp(), nullable=False),
    # What the patrons' raw digests were made with (recipe, fixes, checks, source): under
    # another seed no raw digest is trusted, and every record is read in full once.
    Column("raw_seed", Text),
    # The identifier index (patron_identifier) is complete for this feed; NULL: build it.
    Column("identifier_index", String(32)),
)


# One delta file built for a feed, numbered by ``seq`` within the feed.
batch_t = Table(
    "batch",
    metadata,
    Column("id", Id, primary_key=True),
    Column("feed_id", ForeignKey("feed.id"), nullable=False, index=True),
    Column("seq", Integer, nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", Timestamp(), nullable=False),
    Column("records", Integer, nullable=False),
    Column("parts", Integer, nullable=False),
    Column("new", Integer, nullable=False),
    Column("changed", Integer, nullable=False),
    Column("returned", Integer, nullable=False),
    Column("departed", Integer, nullable=False),
    # The delivery ledger: built → uploaded → picked_up → confirmed, or failed, or superseded.
    Column("uploaded_at", Timestamp()),
    Column("picked_up_at", Timestamp()),
    Column("resolved_at", Timestamp()),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("job_instance", String(64)),
    # How the file was split, so `batch rebuild` writes the same bytes after a config change.
    Column("records_per_part", Integer),
    UniqueConstraint("feed_id", "seq"),
)


# One entry of a batch's ledger history: a transition or a failed attempt.
event_t = Table(
    "batch_event",
    metadata,
    Column("id", Id, primary_key=True),
    Column("batch_id", ForeignKey("batch.id"), nullable=False, index=True),
    Column("at", Timestamp(), nullable=False),
    Column("status", String(20), nullable=False),
    Column("message", Text),
)


# A patron a batch carries, with the digest of the record it carried.
member_t = Table(
    "batch_patron",
    metadata,
    Column("id", Id, primary_key=True),
    Column("batch_id", ForeignKey("batch.id"), nullable=False),
    Column("patron_id", ForeignKey("patron.id"), nullable=False, index=True),
    Column("version_id", BigInteger, nullable=False),
    Column("digest", LargeBinary(16), nullable=False),
    Column("outcome", String(10), nullable=False),
    Column("reason", Text),
    UniqueConstraint("batch_id", "patron_id"),
)


# An SIS extract that was ingested; the same file (by SHA-256) is ingested once.
extract_t = Table(
    "extract",
    metadata,
    Column("id", Id, primary_key=True),
    Column("feed_id", ForeignKey("feed.id"), nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("records", Integer, nullable=False),
    Column("ingested_at", Timestamp(), nullable=False),
    Column("batch_id", ForeignKey("batch.id")),
    Column("new", Integer, nullable=False),
    Column("changed", Integer, nullable=False),
    Column("unchanged", Integer, nullable=False),
    Column("departed", Integer, nullable=False),
    Column("returned", Integer, nullable=False),
    Column("held_back", Integer, nullable=False),
    # Adopted with `baseline`: recorded as what Alma already holds, nothing sent.
    Column("baseline", Boolean, nullable=False, server_default=false()),
    # The file's own modification time and its content (match keys and digests, in any
    # order, under the recipe of the day): an older or earlier extract is refused. NULL for
    # extracts ingested before 0004.
    Column("mtime", Timestamp()),
    Column("fingerprint", String(32)),
    UniqueConstraint("feed_id", "sha256"),
)


# The snapshot: the desired record of one match ID of a feed, and what Alma confirmed.
patron_t = Table(
    "patron",
    metadata,
    Column("id", Id, primary_key=True),
    Column("feed_id", ForeignKey("feed.id"), nullable=False),
    # match_key is how IDs compare (primary IDs folded as Alma compares them, see matchid);
    # match_id is as last written.
    Column("match_key", String(300), nullable=False),
    Column("match_id", String(300), nullable=False),
    Column("digest", LargeBinary(16), nullable=False),
    Column("state", String(10), nullable=False),
    Column("expiry_date", Date),
    # The newest patron_version row; not a foreign key, which would make the two tables
    # refer to each other and complicate every migration.
    Column("current_version_id", BigInteger),
    # The kind of that version (new, changed, departed, ...): asked of every patron by every
    # run, and cheaper here than one read into the version table each.
    Column("current_kind", String(10)),
    # What Alma holds: the digest of the newest confirmed record, and the batch that sent it.
    Column("confirmed_digest", LargeBinary(16)),
    Column("confirmed_seq", Integer),
    # The expiry date of the record Alma last confirmed: what an expiry policy renews from.
    Column("confirmed_expiry", Date),
    # A record Alma rejected is not sent again until it changes (or on replay).
    Column("rejected_digest", LargeBinary(16)),
    Column("rejected_reason", Text),
    # The hash of the record's bytes as the source last gave them (feed.raw_seed): the same
    # bytes tomorrow mean the same record, without parsing it.
    Column("raw_digest", LargeBinary(16)),
    # How many line ends those bytes hold (NULL: not known yet): a record read by its bytes
    # is not read again to count the lines of the records after it.
    Column("raw_lines", Integer),
    # For a match ID that is not plain ASCII: the forms other case foldings make of it, one
    # per line, so that a new ID another folding merges with it is held back.
    Column("fold_forms", Text),
    # Since when the extract's record of this patron is held back (not taken): NULL when it
    # is not. The stored record stands meanwhile.
    Column("held_since", Timestamp()),
    UniqueConstraint("feed_id", "match_key"),
    Index("ix_patron_feed_id_held_since", "feed_id", "held_since"),
)


# One distinct version of a patron's record, kept for audit and for expirations.
version_t = Table(
    "patron_version",
    metadata,
    Column("id", Id, primary_key=True),
    Column("patron_id", ForeignKey("patron.id"), nullable=False),
    Column("kind", String(10), nullable=False),
    Column("digest", LargeBinary(16), nullable=False),
    # NULL once retention pruned a superseded version; its digest and dates stay.
    Column("payload", Payload),
    # The record's expiry date (NULL for versions older than migration 0008 that were
    # neither current nor confirmed then): confirming a batch copies it to the patron.
    Column("expiry_date", Date),
    Column("first_seen", Timestamp(), nullable=False),
    # NULL while this is the current record of a patron in the latest extract: it was seen in
    # every extract since first_seen (nothing is written per unchanged patron per day). Set
    # when the version is superseded, or its patron departs or is held back.
    Column("last_seen", Timestamp()),
    Column("extract_id", ForeignKey("extract.id")),
    Column("batch_id", ForeignKey("batch.id"), index=True),
    Index("ix_patron_version_patron_id_id", "patron_id", "id"),
    # `changes --since` reads versions by when they were first seen.
    Index("ix_patron_version_first_seen", "first_seen"),
    # Retention reads versions last seen before its window, on every run.
    Index("ix_patron_version_last_seen", "last_seen"),
)


# The identifier values of each patron's current record, primary ID included, by hash.
#
# Alma keeps identifiers unique across users, departed ones included until they are purged,
# so a value a new record shares with any of them is taken. Only hashes are kept (64 bits,
# case-folded), as in the check that reads them.
identifier_t = Table(
    "patron_identifier",
    metadata,
    Column("id", Id, primary_key=True),
    Column("feed_id", ForeignKey("feed.id"), nullable=False),
    Column("patron_id", ForeignKey("patron.id"), nullable=False),
    Column("value_hash", BigInteger, nullable=False),
    Column("id_type", String(64), nullable=False),
    Index("ix_patron_identifier_feed_id_value_hash", "feed_id", "value_hash"),
    Index("ix_patron_identifier_patron_id", "patron_id"),
)


# A record chosen for the delta being built; lives only inside one run's transaction.
staged_t = Table(
    "staged_record",
    metadata,
    Column("id", Id, primary_key=True),
    Column("feed_id", ForeignKey("feed.id"), nullable=False),
    Column("match_key", String(300), nullable=False),
    Column("match_id", String(300), nullable=False),
    Column("patron_id", BigInteger),
    Column("kind", String(10), nullable=False),
    Column("digest", LargeBinary(16), nullable=False),
    Column("payload", Payload),
    Column("expiry_date", Date),
    Column("raw_digest", LargeBinary(16)),
    Column("raw_lines", Integer),
    # Where the record stands in the extract, for messages about it.
    Column("source", Text),
    Column("line", Integer),
    Column("fold_forms", Text),
    Index("ix_staged_record_feed_id_match_key", "feed_id", "match_key"),
    # Applying a run looks staged records up by patron once per patron; with the feed in
    # the index, SQLite uses it rather than the match key index's feed prefix (which
    # made each lookup read every staged record: quadratic on a reformat day).
    Index("ix_staged_record_feed_id_patron_id", "feed_id", "patron_id"),
)


# An identifier value of a record read in full this run; scratch space like
# ``staged_record``, used to find values two patrons share.
staged_identifier_t = Table(
    "staged_identifier",
    metadata,
    Column("id", Id, primary_key=True),
    Column("feed_id", ForeignKey("feed.id"), nullable=False),
    Column("match_key", String(300), nullable=False),
    Column("value_hash", BigInteger, nullable=False),
    Column("id_type", String(64), nullable=False),
    Index("ix_staged_identifier_feed_id_value_hash", "feed_id", "value_hash"),
    # Joined to staged_record by match key when the index is renewed: without it SQLite
    # reads every staged value for every staged record (quadratic on day 0).
    Index("ix_staged_identifier_feed_id_match_key", "feed_id", "match_key"),
)


# Which run holds a feed: a fencing token bumped by every run that takes the feed's lock.
#
# A lock can be lost while its run goes on (a PostgreSQL restart ends the advisory lock's
# session); a run proves it still holds the feed by finding its own token here, in the
# transaction it is about to commit, and before it changes anything on the server.
lease_t = Table(
    "run_lease",
    metadata,
    # The feed's name, not its id: the lock is taken before a first run creates the feed.
    Column("feed", String(64), primary_key=True),
    Column("token", BigInteger, nullable=False),
    Column("holder", String(300), nullable=False),
    Column("taken_at", Timestamp(), nullable=False),
)


# One run of a feed's job (run, replay, baseline) and how it ended.
#
# The log behind reports, ``status`` of many feeds and metrics. It is written after the run,
# in a transaction of its own, also when the run failed: a failed run changes no data, but
# it is part of the feed's story.
run_t = Table(
    "run",
    metadata,
    Column("id", Id, primary_key=True),
    # The feed's name, not its id: a first run may fail before the feed row exists.
    Column("feed", String(64), nullable=False),
    Column("command", String(16), nullable=False),
    Column("started_at", Timestamp(), nullable=False),
    Column("finished_at", Timestamp(), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("exit_code", Integer, nullable=False),
    Column("extract", Text),
    Column("batch_seq", Integer),
    # JSON: the run's counts, and the reasons it needs attention (or the error that ended it).
    Column("counts", Text, nullable=False),
    Column("attention", Text, nullable=False),
    Column("error", Text),
    Index("ix_run_feed_started_at", "feed", "started_at"),
)


# A record a run held back, by the code that held it (match IDs only, nothing else).
run_held_t = Table(
    "run_held_back",
    metadata,
    Column("id", Id, primary_key=True),
    Column("run_id", ForeignKey("run.id"), nullable=False, index=True),
    Column("match_id", String(300)),
    Column("code", String(64), nullable=False),
)
