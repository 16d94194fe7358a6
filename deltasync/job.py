"""The daily job, as named steps: reconcile → ingest → build the delta → deliver → prune.

``run`` composes them: the ledger first learns what Alma did with earlier batches
(:mod:`ledger`), then in one transaction the extract is ingested (:mod:`ingest`) and the delta
built (:mod:`delta.build`) — either all of it lands, snapshot, versions, extract, batch and
the file in the outbox, or none of it — then the batch is delivered and retention applied.
``baseline`` ingests and adopts; ``replay`` builds and delivers without an extract. A dry run
is ``ingest`` in a transaction that is always rolled back. Every run is logged
(:mod:`store.runs`), failures too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from . import extract_order, retention
from .canonical import Recipe
from .checks import Policy, Report
from .config import AlmaApiConfig, Config, FeedConfig
from .delivery import Transport, check_credentials
from .delta import outbox
from .delta.build import BatchInfo, Built, build
from .diff import Counts, HeldBack
from .errors import DeltasyncError, GuardRefused, NotFound
from .ingest import AlreadyIngested, Ingested, ingest, recipe_of
from .ledger import Ledger
from .source.factory import identify
from .source.files import Progress
from .store import Store, batches, extracts, feeds, runs
from .store import snapshot as snap
from .store.feeds import FeedRow
from .store.lock import feed_lock

if TYPE_CHECKING:
    from .alma_api import AlmaJobs

__all__ = ["STEPS", "BatchInfo", "Checkpoint", "RunResult", "baseline", "replay", "run"]

Checkpoint = Callable[[str], None]
"""Called with the name of each step as a run passes it (for tests that inject failures)."""

STEPS = ("opened", "scanned", "staged", "applied", "batch-written", "published")


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
    stepped_aside: str | None = None
    """Why the extract was read in full, not the fast way (by its bytes); None: fast."""

    def as_json(self) -> dict[str, Any]:
        """The ``run --json`` object: a contract scripts rely on."""
        return {
            "feed": self.feed,
            "extract": {
                "path": str(self.extract),
                "sha256": self.sha256,
                "records": self.records,
                "read_in_full": self.stepped_aside,
            },
            "counts": self.counts.as_dict(),
            "policy": self.counts.policy_dict(),
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


@dataclass
class _Extract:
    """The extract a run reads: where it is, and what it is (found before the transaction)."""

    path: Path
    digest: Callable[[], str]
    """Its SHA-256, worked out in the background while the run reads the file."""
    mtime: dt.datetime

    @classmethod
    def at(cls, feed: FeedConfig, path: Path | None) -> _Extract:
        found = identify(feed, path)
        return cls(found.path, found.sha256, found.mtime)

    @property
    def sha256(self) -> str:
        return self.digest()


def run(
    store: Store,
    feed: FeedConfig,
    extract_path: Path | None,
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
    moment = now or dt.datetime.now(dt.UTC)
    step = checkpoint or (lambda _step: None)
    if dry_run:
        return _held_back_attention(
            _dry_run(store, feed, _Extract.at(feed, extract_path), moment, force, progress, step)
        )

    def work() -> RunResult:
        if transport is None and feed.delivery is not None:
            check_credentials(feed.delivery)
        extract = _Extract.at(feed, extract_path)
        with feed_lock(store, feed.name):
            return _run_locked(
                store, feed, extract, alma, transport, jobs, moment, force, progress, step
            )

    return _logged(store, feed.name, "run", moment, _name(feed, extract_path), work)


def _run_locked(
    store: Store,
    feed: FeedConfig,
    extract: _Extract,
    alma: AlmaApiConfig | None,
    transport: Transport | None,
    jobs: AlmaJobs | None,
    now: dt.datetime,
    force: bool,
    progress: Progress | None,
    step: Checkpoint,
) -> RunResult:
    ledger: Ledger | None = None
    try:
        with store.read() as conn:
            existing = feeds.find_feed(conn, feed.name)
        if existing is not None:
            ledger = Ledger(store, alma, feed, existing.id, transport, jobs)
            ledger.reconcile(now)
        with _outbox_file() as written, store.begin() as conn:
            feed_row = feeds.ensure_feed(conn, feed.name, str(feed.match_id), _recipe(feed), now)
            orphans = outbox.sweep(feed.outbox, feed.name, batches.file_names(conn, feed_row.id))
            step("opened")
            result, extract_id = _ingest_step(
                conn, feed, feed_row, extract, now, force, progress, step
            )
            result = replace(result, orphans=orphans)
            step("applied")
            built = build_delta(conn, feed, feed_row.id, now, result, extract_id)
            if built is not None:
                written.append(built.delta)
                step("batch-written")
                outbox.publish(built.delta)
                result = _with_batch(result, built.info)
            step("published")
        # Committed: from here on the file belongs to the ledger.
        result = _held_back_attention(result)
        if ledger is None:
            ledger = Ledger(store, alma, feed, feed_row.id, transport, jobs)
        ledger.deliver(now)
        result = _with_report(result, ledger)
        return _pruned(store, feed, feed_row.id, now, ledger, result)
    finally:
        if ledger is not None:
            ledger.close()


@contextmanager
def _outbox_file() -> Iterator[list[outbox.DeltaFile]]:
    """A place for the delta file a transaction writes: discarded unless the block ends well
    (the transaction inside it then committed)."""
    written: list[outbox.DeltaFile] = []
    try:
        yield written
    except BaseException:
        for delta in written:
            outbox.discard(delta)
        raise


def _ingest_step(
    conn: Connection,
    feed: FeedConfig,
    feed_row: FeedRow,
    extract: _Extract,
    now: dt.datetime,
    force: bool,
    progress: Progress | None,
    step: Checkpoint,
    *,
    apply_it: bool = True,
) -> tuple[RunResult, int | None]:
    """Ingest the extract (or find it was ingested before): its result, without a batch, and
    the new extract's id (None when nothing new was ingested).

    Whether the file was ingested before is known only once its SHA-256 is, which a thread
    works out while the pass reads the file: :func:`ingest` asks after the pass (and before
    refusing the file for its age), and stops if so.
    """

    def ingested_before() -> Any | None:
        previous = extracts.find(conn, feed_row.id, extract.sha256)
        if previous is not None:
            extract_order.check_same_file(
                extract.path,
                extracts.ingested(previous),
                extracts.last(conn, feed_row.id),
                force=force,
            )
        return previous

    try:
        done = ingest(
            conn,
            feed,
            feed_row,
            extract.path,
            sha256=extract.digest,
            mtime=extract.mtime,
            now=now,
            force=force,
            apply_it=apply_it,
            progress=progress,
            step=step,
            ingested_before=ingested_before,
        )
    except AlreadyIngested as already_ingested:
        previous = already_ingested.earlier
        # Already ingested: nothing to diff, but unconfirmed patrons still go out.
        already = RunResult(
            feed.name,
            extract.path,
            extract.sha256,
            previous.records,
            Counts(),
            None,
            dry_run=not apply_it,
            already_ingested_at=previous.ingested_at,
        )
        return already, None
    return _result(feed, extract, done, dry_run=not apply_it), done.extract_id


def build_delta(
    conn: Connection,
    feed: FeedConfig,
    feed_id: int,
    now: dt.datetime,
    result: RunResult,
    extract_id: int | None = None,
) -> Built | None:
    """Build the batch of every patron Alma has not confirmed, unless each of them already
    waits, unread, in a batch of its own (then nothing is new to send)."""
    rows = batches.pending(conn, feed_id)
    waiting = batches.waiting(conn, feed_id)
    if all((r.patron_id, r.version_id) in waiting for r in rows):
        return None
    departed = result.counts.departed - result.departed_without_record
    built = build(conn, feed, feed_id, rows, now, result.counts, departed)
    if extract_id is not None:
        extracts.link(conn, extract_id, built.batch_id)
    return built


def _with_batch(result: RunResult, info: BatchInfo) -> RunResult:
    counts = result.counts
    departed = counts.departed - result.departed_without_record
    sent_now = counts.new + counts.changed + counts.returned + counts.renewed + counts.refreshed
    carried = max(0, info.records - sent_now - departed)
    return replace(result, batch=info, carried_over=carried)


def _dry_run(
    store: Store,
    feed: FeedConfig,
    extract: _Extract,
    now: dt.datetime,
    force: bool,
    progress: Progress | None,
    step: Checkpoint,
) -> RunResult:
    """Ingest in a transaction that is always rolled back: what a run would do."""
    with store.read() as conn:
        row = feeds.find_feed(conn, feed.name)
    # The trial writes stored rows only when they must change before anything can be read:
    # a snapshot to re-hash, an identifier index to build (then it takes the write lock).
    write = row is not None and (
        row.hash_recipe != _recipe(feed).fingerprint
        or row.identifier_index != snap.IDENTIFIER_INDEX
    )
    with store.trial(write=write) as conn:
        if row is None:
            # A dry run of a feed that never ran creates nothing; this id is nobody's.
            row = FeedRow(0, feed.name, _recipe(feed).fingerprint)
        step("opened")
        result, _none = _ingest_step(
            conn, feed, row, extract, now, force, progress, step, apply_it=False
        )
        return result


def baseline(
    store: Store,
    feed: FeedConfig,
    extract_path: Path | None,
    *,
    now: dt.datetime | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Adopt a feed whose patrons Alma already holds from full loads: ingest the extract
    and record every patron as confirmed, sending nothing. The next run sends only what
    changed since. Refused (GuardRefused) for a feed that already has a snapshot."""
    moment = now or dt.datetime.now(dt.UTC)

    def work() -> RunResult:
        extract = _Extract.at(feed, extract_path)
        with feed_lock(store, feed.name), store.begin() as conn:
            feed_row = feeds.ensure_feed(conn, feed.name, str(feed.match_id), _recipe(feed), moment)
            if snap.has_patrons(conn, feed_row.id):
                raise GuardRefused(
                    f"feed {feed.name!r} already has a snapshot; baseline adopts only a "
                    "feed that has never run (configure a new feed to start over)"
                )
            if extracts.find(conn, feed_row.id, extract.sha256) is not None:
                raise GuardRefused(
                    f"{extract.path}: this extract was already ingested for feed "
                    f"{feed.name!r}; baseline adopts a new extract"
                )
            done = ingest(
                conn,
                feed,
                feed_row,
                extract.path,
                sha256=extract.digest,
                mtime=extract.mtime,
                now=moment,
                force=True,
                apply_it=True,
                progress=progress,
            )
            assert done.extract_id is not None
            snap.adopt(conn, feed_row.id, done.extract_id, done.repaired)
        return _held_back_attention(_result(feed, extract, done, dry_run=False))

    return _logged(store, feed.name, "baseline", moment, _name(feed, extract_path), work)


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
    with store.read() as conn:
        row = feeds.find_feed(conn, feed.name)
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
    try:
        ledger.reconcile(moment)
        with _outbox_file() as written, store.begin() as conn:
            # Staff asked for it: rejected records count as unsent again until Alma says more.
            batches.forget_rejections(conn, feed_id)
            rows = batches.pending(conn, feed_id, since_seq=since)
            if rows:
                built = build(conn, feed, feed_id, rows, moment, Counts(), 0)
                written.append(built.delta)
                outbox.publish(built.delta)
                info = built.info
        ledger.deliver(moment)
    finally:
        ledger.close()
    result = RunResult(
        feed.name, Path(), "", 0, Counts(), info, carried_over=0 if info is None else info.records
    )
    return _with_report(result, ledger)


def _pruned(
    store: Store,
    feed: FeedConfig,
    feed_id: int,
    now: dt.datetime,
    ledger: Ledger,
    result: RunResult,
) -> RunResult:
    """Apply the retention window after the run (``retention_days``; 0 keeps everything)."""
    if not feed.retention_days:
        return result
    with store.begin() as conn:
        pruned = retention.prune(conn, feed, feed_id, days=feed.retention_days, now=now)
    # After a remote failure (already reported) the cleanup there waits a run.
    remote = None if ledger.remote_failed else ledger.transport
    pruned = retention.prune_files(store, feed, feed_id, pruned, remote)
    return replace(result, pruned=pruned, attention=[*result.attention, *pruned.problems])


def _result(feed: FeedConfig, extract: _Extract, done: Ingested, *, dry_run: bool) -> RunResult:
    return RunResult(
        feed.name,
        extract.path,
        extract.sha256,
        done.records,
        done.counts,
        None,
        held_back=done.held_back,
        findings=done.findings,
        dry_run=dry_run,
        rehashed=done.rehashed,
        departed_without_record=done.departed_without_record,
        attention=list(done.notices),
        stepped_aside=done.stepped_aside,
    )


def _name(feed: FeedConfig, path: Path | None) -> str:
    """The extract as the run log names it (a feed of several sources: every one)."""
    if path is not None:
        return str(path.resolve())
    return ", ".join(s.extract or str(s.mapping) for s in feed.sources)


def _recipe(feed: FeedConfig) -> Recipe:
    return recipe_of(feed)


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
