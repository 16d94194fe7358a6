"""A run in the log: what a systems librarian needs to reconstruct a night.

The start of each run, its counts, each record held back (match ID and code), every ledger
event the run recorded (built, uploaded, picked up, confirmed, failed, taken back, a failed
attempt), each attention reason, the error that stopped it, and how it ended. Library code
logs to ``deltasync.*`` loggers; the CLI decides where the records go (cli/logs.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..store import tables as tb
from .reads import Event
from .run import Outcome, RunReport

log = logging.getLogger("deltasync.run")
WARNING_EVENTS = {"attempt_failed", tb.BatchStatus.FAILED}
"""Ledger events worth a warning; the rest are the normal course of a batch."""


def started(feed: str, command: str, extract: Path | None) -> None:
    """Log that a run begins (a run killed midway leaves at least this line)."""
    source = "" if extract is None else f": extract {extract}"
    log.info("feed %s: %s started%s", feed, command, source)


def finished(report: RunReport) -> None:
    """Log what the run did and how it ended."""
    feed = report.feed
    what = "dry run" if report.dry_run else report.command
    result = report.result
    if result is not None:
        c = result.counts
        if result.already_ingested_at is not None:
            log.info("feed %s: %s: extract already ingested; no new changes", feed, what)
        elif report.command != "replay":
            log.info(
                "feed %s: %s: %d patrons: %d new, %d changed, %d unchanged, %d departed, "
                "%d returned, %d held back",
                feed,
                what,
                result.records,
                c.new,
                c.changed,
                c.unchanged,
                c.departed,
                c.returned,
                c.held_back,
            )
        for code, ids in report.held_back_by_code().items():
            for match_id in ids:
                log.warning("feed %s: held back %s: %s", feed, match_id, code)
    for event in report.events:
        level = logging.WARNING if event.status in WARNING_EVENTS else logging.INFO
        log.log(level, "feed %s: batch %d %s", feed, event.seq, _event_text(event))
    for row in report.rejected:
        log.warning(
            "feed %s: batch %d: Alma rejected %s: %s", feed, row.seq, row.match_id, row.reason
        )
    if report.outcome == Outcome.ERROR:
        log.error("feed %s: %s stopped (exit 1): %s", feed, what, report.error)
        return
    if report.outcome == Outcome.REFUSED:
        log.error("feed %s: %s refused (exit 3): %s", feed, what, report.error)
        return
    for reason in report.attention:
        log.warning("feed %s: attention: %s", feed, reason)
    took = ""
    if report.started_at is not None and report.finished_at is not None:
        took = f" in {(report.finished_at - report.started_at).total_seconds():.1f} s"
    log.info(
        "feed %s: %s finished%s: %s (exit %d)", feed, what, took, report.outcome, report.exit_code
    )


def _event_text(event: Event) -> str:
    """``uploaded to …``, ``confirmed by pickup``, ``attempt failed: …``: state and message."""
    status = event.status.replace("_", " ")
    message = event.message or ""
    if not message:
        return status
    return message if message.startswith(status) else f"{status}: {message}"
