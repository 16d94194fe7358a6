"""The report of a feed over a period: text, JSON, or a self-contained HTML page."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from ..report import html, period, text
from .app import CONTEXT_SETTINGS, AppContext, cli, json_option, pass_app, reports_errors


@cli.command("report", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--days",
    type=click.IntRange(min=1, max=3660),
    default=period.DEFAULT_DAYS,
    show_default=True,
    help="How many days back, today included (in each feed's time zone).",
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the report as one self-contained HTML page (mode 0600: it names match IDs).",
)
@json_option
@pass_app
@reports_errors
def report(app: AppContext, days: int, html_file: Path | None, as_json: bool) -> None:
    """Report on a feed over the last DAYS days: where it stands, each day's counts, the
    batches and their waiting times, and the patrons held back or rejected. Every feed of
    the configuration, or the one --feed names.

    \b
    Example (a page for the library's intranet, every night after the run):
      deltasync report --days 90 --html /srv/www/deltasync/report.html
    """
    config = app.config
    feeds = [app.feed] if app.feed_name is not None else list(config.feeds.values())
    now = dt.datetime.now(dt.UTC)
    with app.store() as store:
        reports = [period.feed_report(store, feed, days=days, now=now) for feed in feeds]
    if html_file is not None:
        html.write(html_file, html.page(reports, now=now))
    if as_json:
        click.echo(json.dumps([r.as_json() for r in reports], indent=2))
    elif html_file is not None:
        click.echo(f"wrote {html_file}: {len(reports)} feed(s), {days} day(s)")
    else:
        for r in reports:
            for line in text.period_lines(r):
                click.echo(line)
