"""The daily job: reconcile → extract → snapshot → diff → delta → delivery.

A run reads the extract once, streaming, and stages only the records that changed. The snapshot
then holds each patron's *desired* record; the delta carries every patron whose desired record
Alma has not confirmed (catch-up), so a lost or failed file never loses a change. Ingesting and
building is one transaction: either all of it lands — snapshot, versions, extract, batch and the
file in the outbox — or none of it. Delivery and confirmation are the ledger's (ledger.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lxml import etree
from sqlalchemy import Connection

from . import extract_order, outbox, retention
from .alma_api import AlmaJobs
from .canonical import Recipe, parse_payload
from .checks import Policy, Preflight, Report
from .checks.identifiers import value_hash
from .checks.record import identifier_values
from .config import AlmaApiConfig, Config, FeedConfig, Limit
from .delivery import Transport, check_credentials
from .departure import expiration_record, is_record_of, needs_expiration, record_expiry
from .diff import Counts, Diff, HeldBack, Kind
from .errors import DeltasyncError, GuardRefused, NotFound
from .extract import Progress, sha256_of
from .ledger import Ledger
from .store import Store, runs
from .store import ledger as led
from .store import snapshot as snap
from .store.lock import feed_lock

Checkpoint = Callable[[str], None]
"""Called with the name of each step as a run passes it (for tests that inject failures)."""

STEPS = ("opened", "scanned", "staged", "applied", "batch-written", "published")


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
    findings: Report = field(default_factory=Report)
    """What the checks found in the records about to be sent (held back, warned, fixed)."""
    dry_run: bool = False
    already_ingested_at: dt.datetime | None = None
    rehashed: int = 0
    departed_without_record: int = 0
    orphans: list[Path] = field(default_factory=list)
    carried_over: int = 0
    """Records in the batch that this run's diff did not produce: catch-up of unconfirmed ones."""
    ledger_events: list[str] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)
    """Reasons a person should look (run exits 4): failed or overdue batches, delivery errors."""
    pruned: retention.Pruned | None = None
    """What the retention window removed after the run (``retention_days``)."""

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
                "carried_over": self.carried_over,
            },
            "dry_run": self.dry_run,
            "already_ingested": self.already_ingested_at is not None,
            "held_back": [
                {"match_id": h.match_id, "reason": h.reason, "where": list(h.where)}
                for h in self.held_back
            ],
            "checks": self.findings.as_json(),
            "ledger": self.ledger_events,
            "attention": self.attention,
            "pruned": None
            if self.pruned is None
            else {
                "payloads": self.pruned.payloads,
                "patrons": self.pruned.patrons,
                "outbox_files": self.pruned.outbox_files,
                "remote_files": self.pruned.remote_files,
                "runs": self.pruned.runs,
            },
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
    alma: AlmaApiConfig | None = None,
    dry_run: bool = False,
    force: bool = False,
    now: dt.datetime | None = None,
    progress: Progress | None = None,
    checkpoint: Checkpoint | None = None,
    transport: Transport | None = None,
    jobs: AlmaJobs | None = None,
) -> RunResult:
    """Reconcile the ledger, diff the extract against the snapshot, build and deliver the delta.

    ``transport`` and ``jobs`` replace the ones the feed's configuration describes (tests).
    """
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
    if dry_run:
        return _run_locked(job, alma, transport, jobs)

    def work() -> RunResult:
        if transport is None and feed.delivery is not None:
            check_credentials(feed.delivery)
        with feed_lock(store, feed.name):
            return _run_locked(job, alma, transport, jobs)

    return _logged(store, feed.name, "run", job.now, str(job.path), work)


def _run_locked(
    job: _Run, alma: AlmaApiConfig | None, transport: Transport | None, jobs: AlmaJobs | None
) -> RunResult:
    store, feed, dry_run = job.store, job.feed, job.dry_run
    ledger: Ledger | None = None
    try:
        if not dry_run:
            with store.begin() as conn:
                existing = snap.find_feed(conn, feed.name)
            if existing is not None:
                ledger = Ledger(store, alma, feed, existing.id, transport, jobs)
                ledger.reconcile(job.now)
        result = _held_back_attention(job.execute())
        job.delta = None  # committed: from here on the file belongs to the ledger
        if not dry_run:
            if ledger is None:
                ledger = Ledger(store, alma, feed, job.feed_id, transport, jobs)
            ledger.deliver(job.now)
            result = _with_report(result, ledger)
            if feed.retention_days:
                with store.begin() as conn:
                    pruned = retention.prune(
                        conn, feed, job.feed_id, days=feed.retention_days, now=job.now
                    )
                # After a remote failure (already reported) the cleanup there waits a run.
                remote = None if ledger.remote_failed else ledger.transport
                pruned = retention.prune_files(store, feed, job.feed_id, pruned, remote)
                result = replace(
                    result, pruned=pruned, attention=[*result.attention, *pruned.problems]
                )
        return result
    except _DryRunDone as done:
        return _held_back_attention(done.result)
    except BaseException:
        job.discard_file()
        raise
    finally:
        if ledger is not None:
            ledger.close()


def baseline(
    store: Store,
    feed: FeedConfig,
    extract_path: Path,
    *,
    now: dt.datetime | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Adopt a feed whose patrons Alma already holds from full loads: ingest the extract
    and record every patron as confirmed, sending nothing. The next run sends only what
    changed since. Refused (GuardRefused) for a feed that already has a snapshot."""
    job = _Run(
        store,
        feed,
        extract_path.resolve(),
        dry_run=False,
        force=True,
        now=now or dt.datetime.now(dt.UTC),
        progress=progress,
        checkpoint=lambda _step: None,
        baseline=True,
    )

    def work() -> RunResult:
        with feed_lock(store, feed.name):
            return _held_back_attention(job.execute())

    return _logged(store, feed.name, "baseline", job.now, str(job.path), work)


def replay(
    store: Store,
    config: Config,
    feed: FeedConfig,
    *,
    since: int | None = None,
    now: dt.datetime | None = None,
    transport: Transport | None = None,
    jobs: AlmaJobs | None = None,
) -> RunResult:
    """Build a catch-up delta now and deliver it; ``since`` re-sends everything batch N on carried.

    Records Alma rejected are included again (staff may have fixed the cause in Alma).
    """
    moment = now or dt.datetime.now(dt.UTC)
    with store.begin() as conn:
        row = snap.find_feed(conn, feed.name)
    if row is None:
        raise NotFound(f"feed {feed.name!r} has never run: nothing to replay")
    feed_id = row.id

    def work() -> RunResult:
        if transport is None and feed.delivery is not None:
            check_credentials(feed.delivery)
        with feed_lock(store, feed.name):
            return _replay_locked(store, config, feed, feed_id, since, moment, transport, jobs)

    return _logged(store, feed.name, "replay", moment, None, work)


def _replay_locked(
    store: Store,
    config: Config,
    feed: FeedConfig,
    feed_id: int,
    since: int | None,
    moment: dt.datetime,
    transport: Transport | None,
    jobs: AlmaJobs | None,
) -> RunResult:
    ledger = Ledger(store, config.alma, feed, feed_id, transport, jobs)
    info: BatchInfo | None = None
    delta: outbox.DeltaFile | None = None
    try:
        ledger.reconcile(moment)
        with store.begin() as conn:
            # Staff asked for it: rejected records count as unsent again until Alma says more.
            led.forget_rejections(conn, feed_id)
            rows = led.pending(conn, feed_id, since_seq=since)
            if rows:
                delta, info, _batch_id = _build_batch(
                    conn, feed, feed_id, rows, moment, Counts(), 0
                )
                outbox.publish(delta)
        delta = None  # committed: from here on the file belongs to the ledger
        ledger.deliver(moment)
    except BaseException:
        if delta is not None:
            outbox.discard(delta)
        raise
    finally:
        ledger.close()
    result = RunResult(
        feed.name, Path(), "", 0, Counts(), info, carried_over=0 if info is None else info.records
    )
    return _with_report(result, ledger)


def _logged(
    store: Store,
    feed: str,
    command: str,
    started: dt.datetime,
    extract: str | None,
    work: Callable[[], RunResult],
) -> RunResult:
    """Do ``work`` and log how it ended in the run log, whatever the end."""
    entry = runs.RunEntry(feed, command, started, started, runs.Outcome.ERROR, extract)
    try:
        result = work()
    except GuardRefused as exc:
        _log(store, replace(entry, outcome=runs.Outcome.REFUSED, error=str(exc)), [])
        raise
    except DeltasyncError as exc:
        _log(store, replace(entry, error=str(exc)), [])
        raise
    held = [(f.match_id, f.code) for f in result.findings.findings if f.policy == Policy.ERROR]
    outcome = runs.Outcome.ATTENTION if result.attention else runs.Outcome.OK
    counts: dict[str, Any] = {
        **result.counts.as_dict(),
        "records": result.records,
        "sent": 0 if result.batch is None else result.batch.records,
        "carried_over": result.carried_over,
    }
    done = replace(
        entry,
        outcome=outcome,
        batch_seq=None if result.batch is None else result.batch.seq,
        counts=counts,
        attention=list(result.attention),
        error=None,
    )
    _log(store, done, held)
    return result


def _log(store: Store, entry: runs.RunEntry, held: list[tuple[str | None, str]]) -> None:
    finished = max(entry.started_at, dt.datetime.now(dt.UTC))
    try:
        with store.begin() as conn:
            runs.log(conn, replace(entry, finished_at=finished), held)
    except DeltasyncError:
        pass  # the store may be what failed: the run's own outcome is what must be told


def _with_report(result: RunResult, ledger: Ledger) -> RunResult:
    return replace(
        result,
        ledger_events=list(ledger.report.events),
        attention=[*result.attention, *ledger.report.attention],
    )


def _held_back_attention(result: RunResult) -> RunResult:
    """Held-back records need someone to fix them in the SIS: that is worth an exit 4."""
    if not result.held_back:
        return result
    count = len(result.held_back)
    notice = (
        f"{count} record(s) held back (named in the run's output); fix them in the SIS and "
        "they go out with the first extract that passes"
    )
    return replace(result, attention=[notice, *result.attention])


def _build_batch(
    conn: Connection,
    feed: FeedConfig,
    feed_id: int,
    rows: list[led.Pending],
    now: dt.datetime,
    counts: Counts,
    departed_with_record: int,
) -> tuple[outbox.DeltaFile, BatchInfo, int]:
    """Write the delta file of ``rows`` (not yet published) and record its batch (and id)."""
    seq = snap.next_batch_seq(conn, feed_id)
    name = outbox.file_name(feed.name, seq, now)
    delta = outbox.write(
        feed.outbox,
        name,
        led.payloads(conn, [r.version_id for r in rows]),
        total=len(rows),
        records_per_part=feed.records_per_part,
        created_at=now,
    )
    try:
        batch_id = snap.record_batch(
            conn,
            {
                "feed_id": feed_id,
                "seq": seq,
                "file_name": name,
                "sha256": delta.sha256,
                "size": delta.size,
                "status": led.BUILT,
                "created_at": now,
                "records": delta.records,
                "parts": delta.parts,
                "new": counts.new,
                "changed": counts.changed,
                "returned": counts.returned,
                "departed": departed_with_record,
                "records_per_part": feed.records_per_part,
            },
        )
        led.add_members(conn, batch_id, rows)
        state = led.batch_by_seq(conn, feed_id, seq)
        assert state is not None
        led.note(conn, state, now, f"built: {delta.records} records in {delta.parts} part(s)")
        if feed.delivery is None:
            led.transition(
                conn,
                state,
                led.CONFIRMED,
                now,
                "no delivery configured: taken as confirmed when written",
            )
    except BaseException:
        outbox.discard(delta)
        raise
    info = BatchInfo(seq, delta.path, delta.records, delta.parts, delta.sha256)
    return delta, info, batch_id


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
        baseline: bool = False,
    ) -> None:
        self.baseline = baseline
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
        self.feed_id = 0
        self.fixes_before: str | None = None
        self.repaired: set[str] = set()
        self.notices: list[str] = []
        """What a person should know about this ingest (run exits 4)."""
        self.mtime = dt.datetime.min.replace(tzinfo=dt.UTC)
        """The extract file's modification time (read with its SHA-256)."""

    def discard_file(self) -> None:
        if self.delta is not None:
            outbox.discard(self.delta)

    def execute(self) -> RunResult:
        sha256 = sha256_of(self.path)
        self.mtime = extract_order.modified_at(self.path)
        with self._transaction() as conn:
            if self.dry_run and snap.find_feed(conn, self.feed.name) is None:
                # A dry run of a feed that never ran creates nothing; this id is nobody's.
                feed_row = snap.FeedRow(0, self.feed.name, self.recipe.fingerprint)
            else:
                feed_row = snap.ensure_feed(
                    conn, self.feed.name, str(self.feed.match_id), self.recipe, self.now
                )
            self.feed_id = feed_row.id
            if self.baseline and snap.has_patrons(conn, feed_row.id):
                raise GuardRefused(
                    f"feed {self.feed.name!r} already has a snapshot; baseline adopts only a "
                    "feed that has never run (configure a new feed to start over)"
                )
            orphans: list[Path] = []
            if not self.dry_run:
                known = snap.batch_file_names(conn, feed_row.id)
                orphans = outbox.sweep(self.feed.outbox, self.feed.name, known)
            self.step("opened")
            previous = snap.find_extract(conn, feed_row.id, sha256)
            if previous is not None and self.baseline:
                raise GuardRefused(
                    f"{self.path}: this extract was already ingested for feed "
                    f"{self.feed.name!r}; baseline adopts a new extract"
                )
            last = snap.last_extract(conn, feed_row.id)
            if previous is not None:
                extract_order.check_same_file(
                    self.path, snap.ingested(previous), last, force=self.force
                )
                # Already ingested: nothing to diff, but unconfirmed patrons still go out.
                result = RunResult(
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
                if self.dry_run:
                    raise _DryRunDone(result)
                departed_with_record = 0
                extract_id = None
            else:
                extract_order.check_time(self.path, self.mtime, last, force=self.force)
                result, extract_id, departed_with_record = self._ingest(
                    conn, feed_row, sha256, orphans, last
                )
            self.step("applied")
            if self.baseline:
                assert extract_id is not None
                snap.adopt(conn, feed_row.id, extract_id, self.repaired)
                return result
            rows = led.pending(conn, feed_row.id)
            waiting = led.waiting(conn, feed_row.id)
            batch: BatchInfo | None = None
            if any((r.patron_id, r.version_id) not in waiting for r in rows):
                self.delta, batch, batch_id = _build_batch(
                    conn,
                    self.feed,
                    feed_row.id,
                    rows,
                    self.now,
                    result.counts,
                    departed_with_record,
                )
                self.step("batch-written")
                if extract_id is not None:
                    snap.link_extract(conn, extract_id, batch_id)
                outbox.publish(self.delta)
            self.step("published")
        sent_now = result.counts.new + result.counts.changed + result.counts.returned
        carried = 0 if batch is None else max(0, batch.records - sent_now - departed_with_record)
        return replace(result, batch=batch, carried_over=carried)

    def _transaction(self) -> contextlib.AbstractContextManager[Connection]:
        if not self.dry_run:
            return self.store.begin()
        # A dry run must not hold SQLite's write lock while it reads the extract, or a run
        # beside it would wait: it stages in a table of its own, and writes stored rows only
        # when the snapshot must be re-hashed first (a changed ignore list).
        with self.store.read() as conn:
            row = snap.find_feed(conn, self.feed.name)
        return self.store.trial(
            write=row is not None and row.hash_recipe != self.recipe.fingerprint
        )

    def _ingest(
        self,
        conn: Connection,
        feed_row: snap.FeedRow,
        sha256: str,
        orphans: list[Path],
        last: extract_order.Ingested | None,
    ) -> tuple[RunResult, int, int]:
        """Diff the extract and make it the snapshot's desired state; no file is written."""
        rehashed = snap.rehash(conn, feed_row, self.recipe)
        self.fixes_before = feed_row.fixes
        diff = Diff(snap.load_index(conn, feed_row.id))
        stager = snap.Stager(conn, feed_row.id)
        report = self._scan(diff, stager)
        self.step("scanned")
        # Digests depend on the recipe and the fixes: so does the content they sum up to.
        fingerprint = diff.fingerprint.value(
            f"{self.recipe.fingerprint};fixes={self.feed.checks.fixes}"
        )
        same = snap.extract_with_content(conn, feed_row.id, fingerprint)
        extract_order.check_content(self.path, same, last, force=self.force)
        stager.withdraw(diff.held_back_keys)
        departures = [entry.patron_id for _key, entry in diff.departed()]
        present_before = sum(1 for entry in diff.snapshot.values() if entry.present)
        counts = diff.counts(departed=len(departures))
        self._guard(counts, present_before)
        without_record = self._stage_departures(conn, stager, departures)
        stager.flush()
        self.step("staged")
        result = RunResult(
            self.feed.name,
            self.path,
            sha256,
            diff.records,
            counts,
            None,
            held_back=diff.held_back,
            findings=report,
            dry_run=self.dry_run,
            rehashed=rehashed,
            departed_without_record=len(without_record),
            orphans=orphans,
            attention=list(self.notices),
        )
        if self.dry_run:
            raise _DryRunDone(result)
        extract_id = snap.record_extract(
            conn,
            feed_id=feed_row.id,
            name=str(self.path),
            sha256=sha256,
            records=diff.records,
            counts=counts,
            now=self.now,
            mtime=self.mtime,
            fingerprint=fingerprint,
        )
        snap.apply(
            conn,
            feed_id=feed_row.id,
            extract_id=extract_id,
            now=self.now,
            departed_without_record=without_record,
            held_back=[
                diff.snapshot[key].patron_id for key in diff.held_back_keys if key in diff.snapshot
            ],
        )
        return result, extract_id, counts.departed - len(without_record)

    def _scan(self, diff: Diff, stager: snap.Stager) -> Report:
        """Check and classify every record, staging the ones to send; returns the findings."""
        today = self.now.astimezone(self.feed.timezone).date()

        def held_before(key: str) -> set[int]:
            entry = diff.snapshot.get(key)
            if entry is None:
                return set()
            try:
                user = parse_payload(snap.current_payload(stager.conn, entry.patron_id))
            except etree.XMLSyntaxError:
                return set()  # a damaged stored record holds no identifier we can trust
            return {value_hash(value) for _type, value in identifier_values(user)}

        fixes = self.feed.checks.fixes
        preflight = Preflight(
            diff,
            self.feed.checks,
            self.feed.match_id,
            self.recipe,
            today,
            held_before,
            trust_snapshot=self.fixes_before == fixes,
        )
        if not self.dry_run:
            snap.record_fixes(stager.conn, self.feed_id, fixes)
        recipe = self.recipe

        def stage(key: str, match_id: str, kind: Kind, digest: bytes, user: Any) -> None:
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

        preflight.scan(self.path, stage, progress=self.progress, encoding=self.feed.encoding)
        self.repaired = preflight.repaired
        return preflight.report

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
            base = self._readable_record(conn, last)
            if base is None:
                without_record.append(last.patron_id)
                continue
            user = expiration_record(base, policy, expiry)
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

    def _readable_record(self, conn: Any, last: snap.LastSent) -> bytes | None:
        """The payload to build ``last``'s expiration record from: the stored record, or when
        it is damaged the newest earlier version that reads as this patron's; None if none."""
        rule = self.feed.match_id
        if is_record_of(last.payload, rule, last.match_key):
            return last.payload
        for payload in snap.earlier_payloads(conn, last.patron_id):
            if is_record_of(payload, rule, last.match_key):
                self.notices.append(
                    f"{last.match_id}: the stored record is unreadable; the expiration record "
                    "was built from an earlier version, which Alma gets in full (swap-all)"
                )
                return payload
        self.notices.append(
            f"{last.match_id}: the stored record is unreadable and no earlier version is: no "
            "expiration record was sent; expire the patron in Alma by hand"
        )
        return None
