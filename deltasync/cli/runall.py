"""``run --all``: every configured feed, one line each as it ends, a summary, one exit code.

The exit code is the most serious of the feeds' (1 error > 3 refused > 4 attention > 0); a
skipped feed (running elsewhere, nothing new this round) counts as 0. Why a feed failed,
was refused or needs attention also goes to stderr, one line each as a single run writes it,
because that is what cron mails when stdout goes to a log.
"""

from __future__ import annotations

import datetime as dt
import json

import click

from .. import many
from ..report.text import when
from .app import AppContext
from .feeds import write_metrics


def run_all_feeds(app: AppContext, *, jobs: int, round_minutes: int, as_json: bool) -> None:
    """Run every feed and report; exits with the most serious feed's code."""
    ends: list[many.FeedEnd] = []
    window = dt.timedelta(minutes=round_minutes)
    with app.store() as store:
        for end in many.run_all(store, app.config, jobs=jobs, round_window=window):
            ends.append(end)
            if not as_json and app.verbosity >= 0:
                click.echo(line(end))
            _stderr(end)
            write_metrics(app, store, None, dt.datetime.now(dt.UTC))
    counted = many.summary(ends)
    if as_json:
        order = list(app.config.feeds)
        ends.sort(key=lambda e: order.index(e.feed))
        data = {"feeds": [e.as_json() for e in ends], "summary": counted}
        click.echo(json.dumps(data, indent=2))
    elif app.verbosity >= 0:
        click.echo(
            f"{counted['feeds']} feed(s): {counted['ok']} ok, {counted['attention']} attention, "
            f"{counted['refused']} refused, {counted['error']} error, "
            f"{counted['skipped']} skipped"
        )
    if counted["exit_code"]:
        raise SystemExit(counted["exit_code"])


def line(end: many.FeedEnd) -> str:
    """The feed's line: ``NAME: OUTCOME: what it did``."""
    report = end.report
    if report is None:
        return f"{end.feed}: skipped: {end.skipped}"
    result = report.result
    if result is None:
        return f"{end.feed}: {end.outcome}: {report.error}"
    if result.already_ingested_at is not None:
        did = f"already ingested {when(result.already_ingested_at)}"
    else:
        c = result.counts
        did = (
            f"{result.records} patrons: {c.new} new, {c.changed} changed, {c.departed} "
            f"departed, {c.returned} returned, {c.held_back} held back"
        )
    sent = "nothing to send" if result.batch is None else f"batch {result.batch.seq}"
    if result.batch is not None:
        sent += f" ({result.batch.records} records)"
    reasons = len(report.attention)
    why = f"; {reasons} reason(s) on stderr" if reasons else ""
    return f"{end.feed}: {end.outcome}: {did}; {sent}{why}"


def _stderr(end: many.FeedEnd) -> None:
    report = end.report
    for problem in end.problems:
        click.echo(f"Warning: feed {end.feed}: {problem}", err=True)
    if report is None:
        return
    if report.result is None:
        refused = "refused: " if end.exit_code == 3 else ""
        click.echo(f"Error: feed {end.feed}: {refused}{report.error}", err=True)
        return
    for reason in report.attention:
        click.echo(f"ATTENTION: feed {end.feed}: {reason}", err=True)
