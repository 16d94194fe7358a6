"""Every configured feed in one go (``run --all``): N feeds at a time, each on its own.

Each feed runs as a single ``run`` would (its own lock, its own transactions, its report and
notices after it), in a worker thread with a store handle of its own, so one feed's failure —
a bad extract, an unreachable server, a refused guard, a fault of deltasync's own — ends that
feed and no other.

Several ``run --all`` processes (a consortium's workers on two machines, one PostgreSQL) share
a **round**: each goes through the feeds in the configured order and skips, without waiting,

- a feed whose lock another run holds (*running elsewhere*), and
- a feed whose round is done: its last logged run began this round (at most ``round_window``
  before this worker started), read the feed's newest extract after that file was last
  written, and left no batch waiting for delivery (*nothing new*).

The check is made under the feed's lock, and the run it sees is logged before that lock is
let go, so two workers never both run a feed in one round. A feed refused or stopped by its
extract this round is not tried twice either; a batch that could not be delivered is (the
other worker's network may reach the server).

SQLite lets one transaction write at a time; a run's ingest is one transaction, and a writer
that waits for another holds the busy timeout's clock. So the threads of one process take
turns to write to a SQLite store (a mutex around ``Store.begin``) and overlap only the rest:
hashing the extract, reading, SFTP. PostgreSQL writes in parallel.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from . import job
from .config import Config, FeedConfig
from .errors import DeltasyncError, NotFound
from .report import log as run_log
from .report import run as run_report
from .report.after import after_run
from .source.files import modified_at
from .store import Store, batches, feeds, runs
from .store.engine import create_store_engine
from .store.lock import FeedBusy, feed_lock
from .store.tables import BatchStatus

logger = logging.getLogger("deltasync.many")

ROUND_WINDOW = dt.timedelta(minutes=15)
"""How long before a worker starts a run of another worker still counts as this round's."""
SKIPPED = "skipped"
RUNNING_ELSEWHERE = "running elsewhere (another run holds its lock)"
SEVERITY = {1: 3, 3: 2, 4: 1, 0: 0}
"""Exit codes from the most serious down: 1 error > 3 refused > 4 attention > 0 ok."""


@dataclass(frozen=True)
class FeedEnd:
    """How one feed of ``run --all`` ended: its run's report, or why it was skipped."""

    feed: str
    report: run_report.RunReport | None = None
    skipped: str | None = None
    """Why the feed was not run (``report`` is then None)."""
    problems: list[str] = field(default_factory=list)
    """Reports not written and notices not sent after the run (warnings, not its outcome)."""

    @property
    def outcome(self) -> str:
        """ok, attention, refused, error or skipped."""
        return SKIPPED if self.report is None else self.report.outcome.value

    @property
    def exit_code(self) -> int:
        """The exit code a single run of the feed would have had (0 when skipped)."""
        return 0 if self.report is None else self.report.exit_code

    def as_json(self) -> dict[str, Any]:
        """One feed of ``run --all --json``; ``run`` is the single-feed ``run --json`` object."""
        result = None if self.report is None else self.report.result
        return {
            "feed": self.feed,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "error": None if self.report is None else self.report.error,
            "skipped": self.skipped,
            "run": None if result is None else result.as_json(),
        }


def exit_code(ends: list[FeedEnd]) -> int:
    """The most serious of the feeds' exit codes."""
    return max((end.exit_code for end in ends), key=SEVERITY.__getitem__, default=0)


def summary(ends: list[FeedEnd]) -> dict[str, int]:
    """How many feeds ended which way, and the overall exit code."""
    counted = {name: 0 for name in ("ok", "attention", "refused", "error", SKIPPED)}
    for end in ends:
        counted[end.outcome] += 1
    return {"feeds": len(ends), **counted, "exit_code": exit_code(ends)}


def run_all(
    store: Store,
    config: Config,
    *,
    jobs: int = 1,
    round_window: dt.timedelta = ROUND_WINDOW,
) -> Iterator[FeedEnd]:
    """Run every configured feed, ``jobs`` at a time; yield each as it ends (reported and
    notified already). ``store`` is the opened, migrated store; each feed gets its own."""
    started = dt.datetime.now(dt.UTC)
    writes: AbstractContextManager[Any] = nullcontext()
    if store.engine.url.get_backend_name() == "sqlite":
        writes = _Turns()
    round_start = started - round_window
    url = store.engine.url.render_as_string(hide_password=False)
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="deltasync-feed")
    try:
        pending: dict[Future[_Ran], FeedConfig] = {
            pool.submit(_one, url, writes, config, feed, round_start): feed
            for feed in config.feeds.values()
        }
        for future in as_completed(pending):
            yield _reported(store, config, pending[future], future.result())
    finally:
        # Interrupted (Ctrl-C, a failing caller): feeds not begun are not begun; those
        # running end as they would, each in its own transaction.
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class _Ran:
    """What a worker thread brings back: a result, a failure, or why it skipped the feed."""

    result: job.RunResult | None = None
    error: DeltasyncError | None = None
    skipped: str | None = None


def _one(
    url: str,
    writes: AbstractContextManager[Any],
    config: Config,
    feed: FeedConfig,
    round_start: dt.datetime,
) -> _Ran:
    """Run one feed unless it is running elsewhere or its round is done; never raises."""
    try:
        with _TurnStore(create_store_engine(url), writes) as store, ExitStack() as held:
            path = newest_extract(feed)
            try:
                held.enter_context(feed_lock(store, feed.name, wait_seconds=0))
            except FeedBusy:
                return _Ran(skipped=RUNNING_ELSEWHERE)
            done = _round_done(store, feed.name, path, round_start)
            if done is not None:
                return _Ran(skipped=done)
            run_log.started(feed.name, "run", path)
            # The lock taken here is the run's own (feed_lock is re-entrant), and is let go only
            # after the run is logged: the next worker's check sees this run.
            return _Ran(result=job.run(store, feed, path, alma=config.alma))
    except DeltasyncError as exc:
        return _Ran(error=exc)
    except Exception as exc:  # a fault of deltasync's own ends this feed, never the others
        logger.exception("feed %s: run --all", feed.name)
        return _Ran(error=DeltasyncError(f"unexpected error: {type(exc).__name__}: {exc}"))


def newest_extract(feed: FeedConfig) -> Path:
    """The newest file the feed's ``extract`` setting matches (as ``run`` without EXTRACT)."""
    if feed.extract is None:
        raise NotFound(
            f"feed {feed.name!r} sets no `extract` in the configuration; run --all needs it"
        )
    matches = [Path(p) for p in glob.glob(feed.extract) if Path(p).is_file()]
    if not matches:
        raise NotFound(f"feed {feed.name!r}: no file matches extract = {feed.extract!r}")
    return max(matches, key=lambda p: (p.stat().st_mtime, p.name))


def _round_done(store: Store, feed: str, extract: Path, round_start: dt.datetime) -> str | None:
    """Why the feed's round is done (its last run, this round, read this very extract and
    left nothing to deliver), or None when it should run."""
    written = modified_at(extract)
    with store.read() as conn:
        last = runs.last(conn, feed)
        if last is None or last.command != "run" or last.extract != str(extract.resolve()):
            return None
        if last.started_at < max(round_start, written) or _undelivered(conn, feed):
            return None
    done = (
        f"nothing new since its run at {last.started_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%SZ}"
        f" ({last.outcome.value})"
    )
    if last.outcome in (runs.Outcome.ERROR, runs.Outcome.REFUSED):
        # Someone who fixed the cause (a config key, the lock) wants it run now, not next round.
        done += f"; to run it again now: deltasync --feed {feed} run"
    return done


def _undelivered(conn: Connection, feed: str) -> bool:
    row = feeds.find_feed(conn, feed)
    return row is not None and bool(batches.listed(conn, row.id, [BatchStatus.BUILT]))


def _reported(store: Store, config: Config, feed: FeedConfig, ran: _Ran) -> FeedEnd:
    """Report and notify the feed's run as ``run`` does; a skipped feed did not run."""
    if ran.skipped is not None:
        return FeedEnd(feed.name, skipped=ran.skipped)
    if ran.result is not None:
        try:
            report = run_report.for_result(store, feed, ran.result, "run")
        except DeltasyncError:
            report = run_report.RunReport(
                feed.name,
                "run",
                run_report.Outcome.ATTENTION if ran.result.attention else run_report.Outcome.OK,
                ran.result,
                timezone=feed.timezone,
            )
    else:
        assert ran.error is not None
        report = run_report.for_failure(store, feed, "run", ran.error)
    return FeedEnd(feed.name, report, problems=after_run(store, config, feed, report))


class _Turns:
    """A mutex the threads of one process take turns with to write to a SQLite store."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *_exc: object) -> None:
        self._lock.release()


class _TurnStore(Store):
    """A feed's own store handle; its write transactions wait their turn (``writes``)."""

    def __init__(self, engine: Engine, writes: AbstractContextManager[Any]) -> None:
        super().__init__(engine)
        self._writes = writes

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self._writes, super().begin() as connection:
            yield connection
