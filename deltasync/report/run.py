"""The report of one run: what a run, replay or baseline did, and where the feed stands after.

One :class:`RunReport` feeds every rendering: the command's text output (:mod:`text`), its
``--json`` (the run's own object, unchanged), the e-mail (:mod:`mail`), the webhook and the
log (:mod:`log`). It is built from the :class:`~deltasync.job.RunResult`'s public fields and
from the store: the run log says when the run started, and the ledger events recorded since
then say what happened to each batch. A run that failed or was refused has no result; its
report carries the error instead, so that it reaches a person too.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from ..checks import Policy
from ..config import FeedConfig
from ..errors import DeltasyncError, GuardRefused
from ..job import RunResult
from ..store import Store, runs
from ..store import batches as led
from ..store import tables as tb
from ..store.feeds import find_feed
from . import reads, reasons

Outcome = runs.Outcome
COMMANDS = ("run", "diff", "replay", "baseline")


@dataclass(frozen=True)
class RunReport:
    """One run as people read it."""

    feed: str
    command: str
    """run, diff (a dry run), replay or baseline."""
    outcome: Outcome
    result: RunResult | None = None
    """None when the run failed or was refused (see ``error``)."""
    error: str | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    events: list[reads.Event] = field(default_factory=list)
    """Ledger events recorded during the run: built, uploaded, picked up, confirmed, failed…"""
    rejected: list[reads.Rejected] = field(default_factory=list)
    """Patrons Alma rejected in the batches this run confirmed."""
    waiting: list[reads.Batch] = field(default_factory=list)
    """Batches built, uploaded or picked up and not confirmed yet, after the run."""
    failed: list[reads.Batch] = field(default_factory=list)
    """Batches that failed during this run."""
    awaiting_confirmation: int | None = None
    """Patrons whose current record Alma has not confirmed; None when the store was unreadable."""
    timezone: dt.tzinfo = dt.UTC

    @property
    def exit_code(self) -> int:
        """The command's exit code: 0, 4, 3 or 1."""
        return self.outcome.exit_code

    @property
    def attention(self) -> list[str]:
        """Why a person should look (empty for a run that went well)."""
        if self.result is not None:
            return list(self.result.attention)
        return [] if self.error is None else [self.error]

    @property
    def dry_run(self) -> bool:
        return self.result is not None and self.result.dry_run

    def held_back_by_code(self) -> dict[str, list[str]]:
        """Match IDs the checks held back, by the code that held them."""
        grouped: dict[str, list[str]] = defaultdict(list)
        if self.result is None:
            return {}
        for finding in self.result.findings.findings:
            if finding.policy == Policy.ERROR:
                who = finding.match_id or "(no match ID)"
                if who not in grouped[finding.code]:
                    grouped[finding.code].append(who)
        return dict(sorted(grouped.items()))

    def rejected_by_reason(self) -> dict[str, list[str]]:
        """Match IDs Alma rejected, by its reason (values masked)."""
        grouped: dict[str, list[str]] = defaultdict(list)
        for row in self.rejected:
            grouped[row.reason].append(f"{row.match_id} (batch {row.seq})")
        return dict(sorted(grouped.items()))

    def sent(self) -> int:
        """Records in the batch this run wrote."""
        if self.result is None or self.result.batch is None:
            return 0
        return self.result.batch.records

    def counts_line(self) -> str:
        """The counts in one short phrase: what a subject line has room for."""
        result = self.result
        if result is None:
            return "nothing sent"
        c = result.counts
        if self.command == "baseline":
            return f"{c.new} adopted, nothing sent"
        if self.command == "replay":
            return f"{self.sent()} re-sent" if self.sent() else "nothing to re-send"
        changed = f"{c.new} new, {c.changed} changed, {c.departed} departed, {c.returned} returned"
        if result.already_ingested_at is not None:
            changed = "extract already ingested"
        sent = f"{self.sent()} sent" if self.sent() else "nothing sent"
        return f"{sent}: {changed}"

    def headline(self) -> str:
        """The outcome in a few words, most urgent first."""
        if self.outcome == Outcome.ERROR:
            return "the run stopped: " + _short(self.error or "error")
        if self.outcome == Outcome.REFUSED:
            return _short(self.error or "a guard refused the run")
        words = reasons.headlines(self.attention)
        if not words:
            return self.counts_line()
        shown = "; ".join(words[:3]) + (f"; and {len(words) - 3} more" if len(words) > 3 else "")
        return f"{shown} ({self.counts_line()})"

    def subject(self) -> str:
        """``deltasync patrons: ATTENTION - batch 41 failed in Alma (52 sent: ...)``.

        ASCII, so that no mail program's decoding (or a filter rule) trips over it.
        """
        return f"deltasync {self.feed}: {self.outcome.value.upper()} - {self.headline()}"

    def next_steps(self) -> list[str]:
        """What a person does about this run, in the order of urgency."""
        if self.outcome == Outcome.ERROR:
            return [reasons.ERROR_STEP]
        if self.outcome == Outcome.REFUSED:
            return [reasons.REFUSED_STEP]
        return reasons.next_steps(self.attention)

    def as_json(self) -> dict[str, Any]:
        """The run for scripts and webhooks: ``run --json``'s object under ``result``."""
        return {
            "feed": self.feed,
            "command": self.command,
            "outcome": self.outcome.value,
            "exit_code": self.exit_code,
            "started_at": None if self.started_at is None else self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "error": self.error,
            "attention": self.attention,
            "result": None if self.result is None else self.result.as_json(),
            "held_back": self.held_back_by_code(),
            "rejected": [
                {"match_id": r.match_id, "batch": r.seq, "reason": r.reason} for r in self.rejected
            ],
            "ledger": [
                {"batch": e.seq, "at": e.at.isoformat(), "status": e.status, "message": e.message}
                for e in self.events
            ],
            "waiting": [_batch_json(b) for b in self.waiting],
            "failed": [_batch_json(b) for b in self.failed],
            "awaiting_confirmation": self.awaiting_confirmation,
            "next_steps": self.next_steps(),
        }


def for_result(store: Store, feed: FeedConfig, result: RunResult, command: str) -> RunReport:
    """The report of a run that ended with ``result`` (done, or done but needing attention)."""
    outcome = Outcome.ATTENTION if result.attention else Outcome.OK
    report = RunReport(feed.name, command, outcome, result, timezone=feed.timezone)
    if result.dry_run:
        return report  # nothing happened, and the run log does not list dry runs
    return _with_store(report, store, feed)


def for_failure(
    store: Store | None, feed: FeedConfig, command: str, error: DeltasyncError
) -> RunReport:
    """The report of a run that a guard refused or an error stopped; ``store`` None when the
    store itself could not be opened."""
    outcome = Outcome.REFUSED if isinstance(error, GuardRefused) else Outcome.ERROR
    report = RunReport(feed.name, command, outcome, error=str(error), timezone=feed.timezone)
    if store is None:
        return report
    try:
        return _with_store(report, store, feed)
    except DeltasyncError:
        return report  # the store may be what failed: the error is what must be told


def _with_store(report: RunReport, store: Store, feed: FeedConfig) -> RunReport:
    with store.read() as conn:
        entry = _logged(conn, report)
        row = find_feed(conn, feed.name)
        if row is None:
            return _replace(report, entry)
        events = [] if entry is None else reads.events(conn, row.id, entry.started_at)
        confirmed = {e.seq for e in events if e.status == tb.BatchStatus.CONFIRMED}
        failed_now = {e.seq for e in events if e.status == tb.BatchStatus.FAILED}
        failed = [b for b in reads.batches(conn, row.id) if b.seq in failed_now]
        return _replace(
            report,
            entry,
            events=events,
            rejected=reads.rejected(conn, row.id, confirmed) if confirmed else [],
            waiting=reads.batches(conn, row.id, statuses=tb.OPEN),
            failed=failed,
            awaiting_confirmation=led.awaiting_confirmation(conn, row.id),
        )


def _logged(conn: Any, report: RunReport) -> runs.RunEntry | None:
    """This run's entry in the run log: the feed's newest of this command, if it ended the
    same way (a run stopped before it began, by a bad config say, is not in the log)."""
    for entry in runs.runs(conn, report.feed, limit=5):
        if entry.command != report.command:
            continue
        same = entry.outcome == report.outcome
        if report.result is None:
            return entry if same and entry.error == report.error else None
        batch = report.result.batch
        return entry if same and entry.batch_seq == (batch and batch.seq) else None
    return None


def _replace(report: RunReport, entry: runs.RunEntry | None, **values: Any) -> RunReport:
    if entry is not None:
        values |= {"started_at": entry.started_at, "finished_at": entry.finished_at}
    return replace(report, **values)


def _batch_json(batch: reads.Batch) -> dict[str, Any]:
    return {
        "seq": batch.seq,
        "file": batch.file,
        "status": batch.status,
        "records": batch.records,
        "since": batch.since.isoformat(),
        "last_error": batch.last_error,
    }


def _short(text: str, limit: int = 100) -> str:
    """One line of at most ``limit`` characters; a leading file path by its name alone."""
    text = _LEADING_FOLDERS.sub("", " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


_LEADING_FOLDERS = re.compile(r"^/(?:[^/\s:]+/)+(?=[^/\s:]+: )")
"""The folders of the path an error starts with: a subject line has room for the name only."""
