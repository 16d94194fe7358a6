"""Many feeds at a glance: ``status --all`` (a monitoring probe) and the metrics file."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from ..errors import DeltasyncError
from ..store import Store
from .app import EXIT_ATTENTION, AppContext

if TYPE_CHECKING:
    from ..audit import health

COLUMNS = ("FEED", "LAST RUN", "EXTRACT", "IN FLIGHT", "FAILED", "HELD", "REJECTED", "NEXT")


def status_all(app: AppContext, *, as_json: bool) -> None:
    """Print one row per configured feed; exit 4 when any needs attention."""
    from ..audit import health

    now = dt.datetime.now(dt.UTC)
    with app.store() as store:
        found = health.collect(store, list(app.config.feeds.values()), now)
        write_metrics(app, store, found, now)
    if as_json:
        click.echo(json.dumps([h.as_json() for h in found], indent=2))
    else:
        rows = [_row(h) for h in found]
        widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS) - 1)]
        for row in [COLUMNS, *rows]:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            click.echo("  ".join([*cells, row[-1]]).rstrip())
        needing = sum(h.needs_attention for h in found)
        click.echo(f"{len(found)} feed(s), {needing} need(s) attention")
    if any(h.needs_attention for h in found):
        # On stderr too, as run does: that is what cron or a probe wrapper mails.
        for h in found:
            for reason in h.attention:
                click.echo(f"ATTENTION: feed {h.feed}: {reason}", err=True)
        raise SystemExit(EXIT_ATTENTION)


def _row(h: health.FeedHealth) -> tuple[str, ...]:
    run = "never"
    if h.last_run is not None:
        run = f"{_when(h.last_run.finished_at)} {h.last_run.command} {h.last_run.outcome.value}"
    extract = "none"
    if h.newest_extract is not None:
        e = h.newest_extract
        extract = f"{(e.modified_at or e.ingested_at).astimezone(dt.UTC):%Y-%m-%d}"
    in_flight = str(h.in_flight)
    age = h.oldest_in_flight_age
    if age is not None:
        in_flight += f" ({age_text(age)})"
    return (
        h.feed,
        run,
        extract,
        in_flight,
        str(h.failed),
        str(h.held_back),
        str(h.rejected),
        h.next_action,
    )


def age_text(age: dt.timedelta) -> str:
    """``3d4h``, ``5h12m``, ``7m``: how long something has waited."""
    minutes = int(age.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m"


def _when(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%MZ}"


def write_metrics(
    app: AppContext, store: Store, found: list[health.FeedHealth] | None, now: dt.datetime
) -> None:
    """Rewrite ``metrics_file`` (when configured) with every feed; a failure only warns.

    The run or the status it follows is what the exit code tells; a metrics file that cannot be
    written is said on stderr (cron mails it), and node_exporter shows the file's age.
    """
    path = app.config.metrics_file
    if path is None:
        return
    # Imported here: every run comes through this, and most write no metrics file.
    from .. import metrics
    from ..audit import health

    try:
        if found is None:
            found = health.collect(store, list(app.config.feeds.values()), now)
        metrics.write(path, found, now)
    except DeltasyncError as exc:
        click.echo(f"Warning: metrics not updated: {exc}", err=True)


@contextmanager
def metrics_after(app: AppContext, store: Store, *, enabled: bool) -> Iterator[None]:
    """Rewrite the metrics file when the block ends, however it ends (a failed run counts)."""
    try:
        yield
    finally:
        if enabled:
            write_metrics(app, store, None, dt.datetime.now(dt.UTC))
