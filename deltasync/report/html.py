"""The HTML report: one self-contained page, a section per feed, charts as inline SVG.

Nothing on the page is fetched: no script, no font, no style sheet from elsewhere (a
Content-Security-Policy says so to the browser too), so it can be mailed, put on a share or
opened offline. It names patrons by match ID, so the file is written 0600, under a temporary
name beside it and renamed into place: a reader never sees half a page.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

from .. import safefiles
from ..errors import ReportError
from . import svg
from .jinja import environment
from .period import FeedReport

TIMELINE_DAYS = 14
"""The batch timeline shows the last two weeks: over 90 days a batch's hours are a hairline."""


def page(reports: Sequence[FeedReport], *, now: dt.datetime) -> str:
    """The page for ``reports`` (one per feed), generated at ``now``."""
    sections = []
    for report in reports:
        dates = [day.date for day in report.daily]
        shown = max(1, min(report.days, TIMELINE_DAYS))
        since = now - dt.timedelta(days=shown)
        spans = [s for s in report.batches if (s.resolved_at or now) >= since]
        sections.append(
            {
                "report": report,
                "daily_chart": svg.daily_bars(report.daily),
                "timeline": svg.timeline(spans, since, now),
                "timeline_days": shown,
                "code_chart": svg.code_bars(dates, report.codes),
                "active_days": [d for d in report.daily if d.extracts],
            }
        )
    template = environment().get_template("page.html.j2")
    return template.render(sections=sections, now=now, zone=_zone(reports))


def write(path: Path, text: str) -> None:
    """Write the page to ``path`` atomically, mode 0600; ReportError naming the file if not."""
    folder = path.parent
    try:
        temporary, fd = safefiles.create(folder, f".{path.name}.", ".tmp")
    except OSError as exc:
        raise ReportError(f"{path}: cannot write the report: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        # Replacing is what a report is for (unlike a delta file, it has no history to keep);
        # rename replaces a symbolic link at ``path`` itself, never the file it points to.
        os.replace(temporary, path)
    except OSError as exc:
        safefiles.remove_quietly(temporary)
        raise ReportError(f"{path}: cannot write the report: {exc.strerror or exc}") from exc
    except BaseException:
        safefiles.remove_quietly(temporary)
        raise
    safefiles.fsync_dir(folder)


def _zone(reports: Sequence[FeedReport]) -> dt.tzinfo:
    return reports[0].timezone if reports else dt.UTC
