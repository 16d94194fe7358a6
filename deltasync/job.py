"""The daily job: extract → snapshot → diff → delta, as one transaction.

A run reads the extract once, streaming, and stages only the records to send. Either all of it
lands — snapshot, versions, extract, batch and the delta file in the outbox — or none of it:
any failure rolls the store back and removes the file, and a crash between the file's rename
and the commit leaves an orphan that the next run sets aside before it does anything else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import outbox
from .canonical import Recipe
from .config import FeedConfig, Limit
from .departure import expiration_record, needs_expiration, record_expiry
from .diff import SENT_KINDS, Counts, Diff, HeldBack, Kind
from .errors import GuardRefused
from .extract import Progress, read_records, sha256_of
from .store import Store
from .store import snapshot as snap

Checkpoint = Callable[[str], None]
"""Called with the name of each step as a run passes it (for tests that inject failures)."""

STEPS = ("opened", "scanned", "staged", "batch-written", "applied", "published")


@dataclass(frozen=True)
class BatchInfo:
    """The delta file a run produced."""

    seq: int
    file: Path
    records: int
    parts: int
    sha256: str


@dataclass(frozen=True)
class RunResult:
    """What a run did, or in a dry run would have done."""

    feed: str
    extract: Path
    sha256: str
    records: int
    counts: Counts
    batch: BatchInfo | None
    held_back: list[HeldBack] = field(default_factory=list)
    dry_run: bool = False
    already_ingested_at: dt.datetime | None = None
    rehashed: int = 0
    departed_without_record: int = 0
    orphans: list[Path] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The ``run --json`` object: a contract scripts rely on."""
        return {
            "feed": self.feed,
            "extract": {"path": str(self.extract), "sha256": self.sha256, "records": self.records},
            "counts": self.counts.as_dict(),
            "batch": None
            if self.batch is None
            else {
                "seq": self.batch.seq,
                "file": str(self.batch.file),
                "records": self.batch.records,
            },
            "dry_run": self.dry_run,
            "already_ingested": self.already_ingested_at is not None,
            "held_back": [
                {"match_id": h.match_id, "reason": h.reason, "where": list(h.where)}
                for h in self.held_back
            ],
        }


class _DryRunDone(Exception):
    """Carries a dry run's result out of its transaction, which is then rolled back."""

    def __init__(self, result: RunResult) -> None:
        super().__init__("dry run")
        self.result = result


def run(
    store: Store,
    feed: FeedConfig,
    extract_path: Path,
    *,
    dry_run: bool = False,
    force: bool = False,
    now: dt.datetime | None = None,
    progress: Progress | None = None,
    checkpoint: Checkpoint | None = None,
) -> RunResult:
    """Diff the full extract at ``extract_path`` against the snapshot and write the delta."""
    job = _Run(
        store,
        feed,
        extract_path.resolve(),
        dry_run=dry_run,
        force=force,
        now=now or dt.datetime.now(dt.UTC),
        progress=progress,
        checkpoint=checkpoint or (lambda _step: None),
    )
    try:
        return job.execute()
    except _DryRunDone as done:
        return done.result
    except BaseException:
        job.discard_file()
        raise


class _Run:
    def __init__(
        self,
        store: Store,
        feed: FeedConfig,
        path: Path,
        *,
        dry_run: bool,
        force: bool,
        now: dt.datetime,
        progress: Progress | None,
        checkpoint: Checkpoint,
    ) -> None:
        self.store = store
        self.feed = feed
        self.path = path
        self.dry_run = dry_run
        self.force = force
        self.now = now
        self.progress = progress
        self.step = checkpoint
        self.recipe = Recipe(feed.ignore)
        self.delta: outbox.DeltaFile | None = None

    def discard_file(self) -> None:
        if self.delta is not None:
            outbox.discard(self.delta)

    def execute(self) -> RunResult:
        sha256 = sha256_of(self.path)
        with self.store.begin() as conn:
            feed_row = snap.ensure_feed(
                conn, self.feed.name, str(self.feed.match_id), self.recipe, self.now
            )
            orphans: list[Path] = []
            if not self.dry_run:
                known = snap.batch_file_names(conn, feed_row.id)
                orphans = outbox.sweep(self.feed.outbox, self.feed.name, known)
            self.step("opened")
            previous = snap.find_extract(conn, feed_row.id, sha256)
            if previous is not None:
                return RunResult(
                    self.feed.name,
                    self.path,
                    sha256,
                    previous.records,
                    Counts(),
                    None,
                    dry_run=self.dry_run,
                    already_ingested_at=previous.ingested_at,
                    orphans=orphans,
                )
            rehashed = snap.rehash(conn, feed_row, self.recipe)
            diff = Diff(snap.load_index(conn, feed_row.id))
            stager = snap.Stager(conn, feed_row.id)
            self._scan(diff, stager)
            self.step("scanned")
            if diff.records == 0 and not diff.held_back:
                raise GuardRefused(
                    f"{self.path}: the extract holds no <user> records; refusing to treat "
                    "every patron as departed"
                )
            stager.withdraw(diff.held_back_keys)
            departures = [entry.patron_id for _key, entry in diff.departed()]
            present_before = sum(1 for entry in diff.snapshot.values() if entry.present)
            counts = diff.counts(departed=len(departures))
            self._guard(counts, present_before)
            without_record = self._stage_departures(conn, stager, departures)
            self.step("staged")
            total = stager.count()
            result = RunResult(
                self.feed.name,
                self.path,
                sha256,
                diff.records,
                counts,
                None,
                held_back=diff.held_back,
                dry_run=self.dry_run,
                rehashed=rehashed,
                departed_without_record=len(without_record),
                orphans=orphans,
            )
            if self.dry_run:
                raise _DryRunDone(result)
            batch_id: int | None = None
            batch: BatchInfo | None = None
            if total:
                seq = snap.next_batch_seq(conn, feed_row.id)
                name = outbox.file_name(self.feed.name, seq, self.now)
                self.delta = outbox.write(
                    self.feed.outbox,
                    name,
                    stager.payloads(),
                    total=total,
                    records_per_part=self.feed.records_per_part,
                    created_at=self.now,
                )
                self.step("batch-written")
                batch_id = snap.record_batch(
                    conn,
                    {
                        "feed_id": feed_row.id,
                        "seq": seq,
                        "file_name": name,
                        "sha256": self.delta.sha256,
                        "size": self.delta.size,
                        "status": "built",
                        "created_at": self.now,
                        "records": self.delta.records,
                        "parts": self.delta.parts,
                        "new": counts.new,
                        "changed": counts.changed,
                        "returned": counts.returned,
                        "departed": counts.departed - len(without_record),
                    },
                )
                batch = BatchInfo(
                    seq, self.delta.path, self.delta.records, self.delta.parts, self.delta.sha256
                )
            extract_id = snap.record_extract(
                conn,
                feed_id=feed_row.id,
                name=str(self.path),
                sha256=sha256,
                records=diff.records,
                counts=counts,
                now=self.now,
                batch_id=batch_id,
            )
            snap.apply(
                conn,
                feed_id=feed_row.id,
                extract_id=extract_id,
                batch_id=batch_id,
                now=self.now,
                departed_without_record=without_record,
            )
            self.step("applied")
            if self.delta is not None:
                outbox.publish(self.delta)
            self.step("published")
        return replace(result, batch=batch)

    def _scan(self, diff: Diff, stager: snap.Stager) -> None:
        rule = self.feed.match_id
        recipe = self.recipe
        for record in read_records(self.path, self.progress):
            user = record.element
            match_id = rule.value(user)
            if match_id is None:
                diff.observe_unidentified(record.where, f"the record has no {rule}")
                continue
            key = rule.key(match_id)
            digest = recipe.digest(user)
            kind = diff.observe(key, match_id, digest, record.where)
            if kind in SENT_KINDS:
                entry = diff.snapshot.get(key)
                stager.add(
                    match_key=key,
                    match_id=match_id,
                    patron_id=None if entry is None else entry.patron_id,
                    kind=kind,
                    digest=digest,
                    payload=recipe.payload(user),
                    expiry_date=record_expiry(user),
                )

    def _guard(self, counts: Counts, present_before: int) -> None:
        if self.force or present_before == 0:
            return
        limits: list[tuple[str, int, Limit, str]] = [
            ("max_departures", counts.departed, self.feed.departure.max_departures, "depart"),
            ("max_changes", counts.changed, self.feed.departure.max_changes, "change"),
        ]
        for key, count, limit, verb in limits:
            if count > limit.ceiling(present_before):
                share = 100 * count / present_before
                raise GuardRefused(
                    f"{self.path}: {count} of {present_before} patrons would {verb} "
                    f"({share:.1f}%), over {key} = {limit} for feed {self.feed.name!r}. "
                    "Check the extract; if it is right, run again with --force"
                )

    def _stage_departures(self, conn: Any, stager: snap.Stager, patron_ids: list[int]) -> list[int]:
        """Stage an expiration record per departure; returns the patrons that need none."""
        policy = self.feed.departure
        expiry = policy.policy_date(self.now, self.feed.timezone)
        without_record: list[int] = []
        for last in snap.last_sent(conn, patron_ids):
            if not needs_expiration(last.expiry_date, expiry):
                without_record.append(last.patron_id)
                continue
            user = expiration_record(last.payload, policy, expiry)
            stager.add(
                match_key=last.match_key,
                match_id=last.match_id,
                patron_id=last.patron_id,
                kind=Kind.DEPARTED,
                digest=self.recipe.digest(user),
                payload=self.recipe.payload(user),
                expiry_date=expiry,
            )
        return without_record
