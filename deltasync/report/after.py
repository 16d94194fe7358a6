"""What follows every run, replay and baseline, whatever its end: log it, write the HTML
reports the configuration asks for, send the notices.

None of it can change the run's outcome or exit code: a report that cannot be written or a
notice that cannot be sent comes back as a problem (one line each) for the caller to show.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config import Config, FeedConfig
from ..errors import DeltasyncError
from ..store import Store
from . import log, notify
from .run import RunReport

logger = logging.getLogger("deltasync.report")


def after_run(
    store: Store | None,
    config: Config,
    feed: FeedConfig,
    report: RunReport,
    *,
    now: dt.datetime | None = None,
) -> list[str]:
    """Log ``report``, write ``report_html`` pages, send the notices; the problems."""
    log.finished(report)
    if report.dry_run:
        return []
    problems: list[str] = []
    if store is not None:
        problems += _guarded(
            "report not written",
            feed.name,
            lambda: write_reports(store, config, feed, now=now or dt.datetime.now(dt.UTC)),
        )
    problems += _guarded(
        "notice not sent", feed.name, lambda: notify.send(report, feed.notify).problems
    )
    return problems


def _guarded(what: str, feed: str, step: Callable[[], list[str]]) -> list[str]:
    """``step``'s problems; a fault of deltasync's own in it is one more, never the run's end."""
    try:
        return step()
    except Exception as exc:  # the run is over and committed: its exit code must stand
        logger.exception("feed %s: %s", feed, what)
        return [f"{what}: {type(exc).__name__}: {exc}"]


def write_reports(store: Store, config: Config, feed: FeedConfig, *, now: dt.datetime) -> list[str]:
    """Write the feed's own page and the page of every feed, where configured."""
    pages: list[tuple[Path, Sequence[FeedConfig]]] = []
    if feed.report_html is not None:
        pages.append((feed.report_html, [feed]))
    if config.report_html is not None:
        pages.append((config.report_html, list(config.feeds.values())))
    if not pages:
        return []
    # Imported here: most runs write no page, and these take a while to import.
    from . import html, period

    problems: list[str] = []
    for path, feeds in pages:
        try:
            reports = [period.feed_report(store, f, now=now) for f in feeds]
            html.write(path, html.page(reports, now=now))
        except DeltasyncError as exc:
            problem = f"report not written: {exc}"
            logger.error("feed %s: %s", feed.name, problem)
            problems.append(problem)
            continue
        logger.info("feed %s: report written to %s", feed.name, path)
    return problems
