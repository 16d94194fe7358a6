"""The daily job's commands: run, diff (a dry run) and check."""

from __future__ import annotations

import datetime as dt
import glob
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from .. import job
from ..check import check_file
from ..checks import CheckSettings, Policy
from ..checks.findings import summary_lines
from ..config import FeedConfig, locate
from ..matchid import MatchIdRule
from ..policy.settings import heartbeat
from ..store import Store
from .app import (
    CONTEXT_SETTINGS,
    EXIT_ATTENTION,
    AppContext,
    F,
    cli,
    json_option,
    pass_app,
    reports_errors,
    require_file,
)
from .feeds import metrics_after
from .reporting import run_reported
from .runall import run_all_feeds

PROGRESS_MIN_BYTES = 5 * 1024 * 1024


def _extract_argument(command: F) -> F:
    return click.argument(
        "extract", required=False, type=click.Path(dir_okay=False, path_type=Path)
    )(command)


@cli.command(context_settings=CONTEXT_SETTINGS)
@_extract_argument
@click.option("--dry-run", is_flag=True, help="Show what would be sent; change nothing.")
@click.option("--force", is_flag=True, help="Run even when a guard would refuse.")
@click.option("--all", "all_feeds", is_flag=True, help="Run every configured feed.")
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    help="With --all: how many feeds run at a time [default: 1].",
)
@click.option(
    "--round-minutes",
    type=click.IntRange(0, 24 * 60),
    help="With --all: a run of a feed that began up to this long before this one counts as "
    "this round's, so the feed is skipped as nothing new [default: 15].",
)
@json_option
@pass_app
@reports_errors
def run(
    app: AppContext,
    extract: Path | None,
    dry_run: bool,
    force: bool,
    all_feeds: bool,
    jobs: int | None,
    round_minutes: int | None,
    as_json: bool,
) -> None:
    """Diff EXTRACT against the snapshot and write the delta file: the daily job.

    EXTRACT is a full SIS export (.xml, .xml.gz or .zip). Without it the feed's `extract`
    setting is used (a path or a glob; the newest match is taken). With --all every
    configured feed runs on its `extract`, --jobs at a time; a feed another run is running,
    or that already ran this round with nothing new since, is skipped.

    \b
    Example:
      deltasync run incoming/patrons-2027-01-04.xml --json
      deltasync run --all --jobs 4
    """
    if all_feeds:
        _refuse_with_all(app, extract, dry_run=dry_run, force=force)
        run_all_feeds(
            app,
            jobs=jobs or 1,
            round_minutes=15 if round_minutes is None else round_minutes,
            as_json=as_json,
        )
        return
    for given, name in ((jobs, "--jobs"), (round_minutes, "--round-minutes")):
        if given is not None:
            raise click.UsageError(f"{name} goes with --all")
    _run(app, extract, dry_run=dry_run, force=force, as_json=as_json)


def _refuse_with_all(app: AppContext, extract: Path | None, *, dry_run: bool, force: bool) -> None:
    if app.feed_name is not None:
        raise click.UsageError("--all runs every feed; leave out --feed")
    if extract is not None:
        raise click.UsageError("--all runs each feed on its `extract` setting; give no EXTRACT")
    if dry_run:
        raise click.UsageError("--all does not take --dry-run; see one feed with diff --feed NAME")
    if force:
        raise click.UsageError(
            "--force overrides one feed's guard after you checked its extract: "
            "use run --feed NAME --force"
        )


@cli.command(context_settings=CONTEXT_SETTINGS)
@_extract_argument
@click.option("--force", is_flag=True, help="Show the diff even when a guard would refuse.")
@json_option
@pass_app
@reports_errors
def diff(app: AppContext, extract: Path | None, force: bool, as_json: bool) -> None:
    """Show what `run` would send for EXTRACT, changing nothing (same as run --dry-run).

    \b
    Example:
      deltasync diff incoming/patrons-2027-01-04.xml
    """
    _run(app, extract, dry_run=True, force=force, as_json=as_json)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@json_option
@pass_app
@reports_errors
def check(app: AppContext, file: Path | None, as_json: bool) -> None:
    """Check FILE, an extract or a delta zip, for what Alma would reject; change nothing.

    Prints counts per code, then each finding with its match ID and line. Uses the feed's
    checks when a configuration is found, else the defaults (CARLI I-Share); a CSV file of a
    csv feed is read through the feed's mapping (findings name rows and columns). Without
    FILE, a feed of a SQL query or of several sources is checked as a run would read it.
    Exit 0 when no record would be held back, 4 when some would (stderr says how many), 1
    when the file is missing or unreadable.

    \b
    Example:
      deltasync check incoming/patrons-2027-01-04.xml --json
    """
    timezone: dt.tzinfo = dt.UTC
    settings, rule, encoding = CheckSettings(), MatchIdRule(), "utf-8"
    renew = 0
    feed: FeedConfig | None = None
    if app.config_path is not None or locate(None).exists():
        feed = app.feed
        settings, rule, encoding, timezone = (
            feed.checks,
            feed.match_id,
            feed.encoding,
            feed.timezone,
        )
        renew = feed.expiry.renew_within_days
    if file is None:
        if feed is None or feed.file_extract:
            raise click.UsageError("Missing argument 'FILE'.")
    else:
        require_file(file, "file")
    today = dt.datetime.now(timezone).date()
    found = check_file(file, settings, rule=rule, today=today, encoding=encoding, feed=feed)
    warning = heartbeat(found.expiry_days, renew)
    if warning is not None:
        click.echo(f"Warning: {found.path}: {warning}", err=True)
    if as_json:
        data = {"file": str(found.path), "records": found.records, **found.report.as_json()}
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(f"{found.path}: {found.records} records")
        for line in summary_lines(found.report):
            click.echo(line)
    if found.report.count(Policy.ERROR):
        # Said on stderr, like run's reasons: that is what cron mails when stdout is logged.
        held = f"{found.held_back} record(s) would be held back by the checks"
        click.echo(f"ATTENTION: {found.path}: {held}", err=True)
        raise SystemExit(EXIT_ATTENTION)


def _run(
    app: AppContext, extract: Path | None, *, dry_run: bool, force: bool, as_json: bool
) -> None:
    feed = app.feed
    found: list[Path] = []

    def prepare() -> None:
        # Reported like the run: a missing extract is the SIS export that did not come,
        # which must reach a person like any failed run.
        if not feed.file_extract:
            if extract is not None:
                raise click.UsageError(
                    f"feed {feed.name!r} reads several sources or a SQL query: each source "
                    "names its own extract, so run it without EXTRACT"
                )
            return
        path = extract if extract is not None else _configured_extract(feed)
        require_file(path, "extract")
        found.append(path)

    def work(store: Store) -> job.RunResult:
        path = found[0] if found else None
        with metrics_after(app, store, enabled=not dry_run), _progress(path) as progress:
            return job.run(
                store,
                feed,
                path,
                alma=app.config.alma,
                dry_run=dry_run,
                force=force,
                progress=progress,
            )

    command = "diff" if dry_run else "run"
    run_reported(app, command, work, as_json=as_json, extract=extract, prepare=prepare)


def _configured_extract(feed: FeedConfig) -> Path:
    if feed.extract is None:
        raise click.UsageError(
            f"no EXTRACT given and feed {feed.name!r} sets no `extract` in the configuration"
        )
    matches = [Path(p) for p in glob.glob(feed.extract) if Path(p).is_file()]
    if not matches:
        raise click.ClickException(
            f"feed {feed.name!r}: no file matches extract = {feed.extract!r}"
        )
    return max(matches, key=lambda p: (p.stat().st_mtime, p.name))


@contextmanager
def _progress(path: Path | None) -> Iterator[Callable[[int], None] | None]:
    size = 0 if path is None else path.stat().st_size
    if path is None or not sys.stderr.isatty() or size < PROGRESS_MIN_BYTES:
        yield None
        return
    with click.progressbar(length=size, label=f"reading {path.name}", file=sys.stderr) as bar:
        seen = 0

        def advance(position: int) -> None:
            nonlocal seen
            if position > seen:
                bar.update(position - seen)
                seen = position

        yield advance
