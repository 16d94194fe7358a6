"""The ``deltasync`` command: a thin click layer over the library.

Exit codes are a contract for cron jobs and scripts: 0 done (also when nothing changed),
1 error, 2 usage, 3 refused by a guard (nothing was changed).
"""

from __future__ import annotations

import datetime as dt
import functools
import glob
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from . import audit, job, ledger
from .checks import CheckSettings, Policy, check_file
from .checks.findings import summary_lines
from .config import Config, FeedConfig, load, locate
from .errors import DeltasyncError, GuardRefused
from .matchid import MatchIdRule
from .store import Store, open_store

EXIT_GUARD = 3
EXIT_ATTENTION = 4
PROGRESS_MIN_BYTES = 5 * 1024 * 1024
RUN_DETAILS = 50
"""Findings listed one by one in ``run``'s text output; ``--json`` and ``check`` list more."""
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

F = TypeVar("F", bound=Callable[..., Any])


class GuardExit(click.ClickException):
    """A guard refused the run: exit 3."""

    exit_code = EXIT_GUARD

    def format_message(self) -> str:
        return f"refused: {self.message}"


@dataclass
class AppContext:
    """What every command needs: where the config is and which feed was asked for."""

    config_path: Path | None
    feed_name: str | None
    _config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load(locate(self.config_path))
        return self._config

    @property
    def feed(self) -> FeedConfig:
        return self.config.feed(self.feed_name)

    @contextmanager
    def store(self) -> Iterator[Store]:
        with open_store(self.config.state_url) as store:
            yield store


pass_app = click.make_pass_decorator(AppContext)


def reports_errors(command: F) -> F:
    """Turn deltasync's exceptions into clear messages and exit codes, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except GuardRefused as exc:
            raise GuardExit(str(exc)) from exc
        except DeltasyncError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def json_option(command: F) -> F:
    """``--json``: machine-readable output on stdout."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(command)


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration file [default: $DELTASYNC_CONFIG, else ./config.toml].",
)
@click.option("--feed", "feed_name", help="Feed to work on; optional when only one is configured.")
@click.version_option(package_name="deltasync")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, feed_name: str | None) -> None:
    """Send Alma only the patrons that changed.

    Diffs each full SIS extract against a snapshot of what was last sent and writes a zipped
    Alma delta file with the new, changed and returning patrons and an expiration record for
    each departed one.

    \b
    Example (the nightly cron job):
      deltasync --config /etc/deltasync/config.toml run
    """
    ctx.obj = AppContext(config_path, feed_name)


def _extract_argument(command: F) -> F:
    return click.argument(
        "extract", required=False, type=click.Path(dir_okay=False, path_type=Path)
    )(command)


@cli.command(context_settings=CONTEXT_SETTINGS)
@_extract_argument
@click.option("--dry-run", is_flag=True, help="Show what would be sent; change nothing.")
@click.option("--force", is_flag=True, help="Run even when a guard would refuse.")
@json_option
@pass_app
@reports_errors
def run(app: AppContext, extract: Path | None, dry_run: bool, force: bool, as_json: bool) -> None:
    """Diff EXTRACT against the snapshot and write the delta file: the daily job.

    EXTRACT is a full SIS export (.xml, .xml.gz or .zip). Without it the feed's `extract`
    setting is used (a path or a glob; the newest match is taken).

    \b
    Example:
      deltasync run incoming/patrons-2027-01-04.xml --json
    """
    _run(app, extract, dry_run=dry_run, force=force, as_json=as_json)


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
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@pass_app
@reports_errors
def check(app: AppContext, file: Path, as_json: bool) -> None:
    """Check FILE, an extract or a delta zip, for what Alma would reject; change nothing.

    Prints counts per code, then each finding with its match ID and line. Uses the feed's
    checks when a configuration is found, else the defaults (CARLI I-Share). Exit 0 when no
    record would be held back, 4 when some would, 1 when the file itself is unreadable.

    \b
    Example:
      deltasync check incoming/patrons-2027-01-04.xml --json
    """
    timezone: dt.tzinfo = dt.UTC
    settings, rule, encoding = CheckSettings(), MatchIdRule(), "utf-8"
    if app.config_path is not None or locate(None).exists():
        feed = app.feed
        settings, rule, encoding, timezone = (
            feed.checks,
            feed.match_id,
            feed.encoding,
            feed.timezone,
        )
    today = dt.datetime.now(timezone).date()
    found = check_file(file, settings, rule=rule, today=today, encoding=encoding)
    if as_json:
        data = {"file": str(found.path), "records": found.records, **found.report.as_json()}
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(f"{found.path}: {found.records} records")
        for line in summary_lines(found.report):
            click.echo(line)
    if found.report.count(Policy.ERROR):
        raise SystemExit(EXIT_ATTENTION)


def _run(
    app: AppContext, extract: Path | None, *, dry_run: bool, force: bool, as_json: bool
) -> None:
    feed = app.feed
    path = extract if extract is not None else _configured_extract(feed)
    if not path.is_file():
        raise click.ClickException(f"{path}: extract not found")
    with app.store() as store, _progress(path) as progress:
        result = job.run(
            store,
            feed,
            path,
            alma=app.config.alma,
            dry_run=dry_run,
            force=force,
            progress=progress,
        )
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    else:
        _print_run(result)
    _exit_for_attention(result)


def _exit_for_attention(result: job.RunResult) -> None:
    if result.attention:
        # The work is done; exit 4 so cron mail reaches someone.
        raise SystemExit(EXIT_ATTENTION)


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
def _progress(path: Path) -> Iterator[Callable[[int], None] | None]:
    size = path.stat().st_size
    if not sys.stderr.isatty() or size < PROGRESS_MIN_BYTES:
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


def _print_run(result: job.RunResult) -> None:
    prefix = "dry run: " if result.dry_run else ""
    click.echo(f"{prefix}feed {result.feed}: {result.extract}")
    if result.already_ingested_at is not None:
        click.echo(f"  already ingested {_when(result.already_ingested_at)}; no new changes")
    else:
        _print_diff(result)
    if result.batch is not None:
        b = result.batch
        carried = f", {result.carried_over} carried over" if result.carried_over else ""
        click.echo(f"  batch {b.seq}: {b.file} ({b.records} records{carried}, {b.parts} part(s))")
    elif not result.dry_run:
        click.echo("  nothing to send: no file written")
    for event in result.ledger_events:
        click.echo(f"  ledger: {event}")
    for reason in result.attention:
        click.echo(f"  ATTENTION: {reason}")


def _print_diff(result: job.RunResult) -> None:
    c = result.counts
    click.echo(
        f"  {result.records} patrons: {c.new} new, {c.changed} changed, {c.unchanged} "
        f"unchanged, {c.departed} departed, {c.returned} returned, {c.held_back} held back"
    )
    if result.departed_without_record:
        click.echo(
            f"  {result.departed_without_record} departed patrons already expire in "
            "Alma: no expiration record needed"
        )
    if result.rehashed:
        click.echo(f"  hash recipe changed: re-hashed {result.rehashed} snapshot records")
    for held in result.held_back:
        where = "; ".join(held.where)
        click.echo(f"  held back {held.match_id or '(no match ID)'}: {held.reason} ({where})")
    for orphan in result.orphans:
        click.echo(f"  set aside {orphan}: a crashed run left it and the store never recorded it")
    if result.findings.total:
        for line in summary_lines(result.findings, details=RUN_DETAILS):
            click.echo(f"  {line}")


@cli.command(context_settings=CONTEXT_SETTINGS)
@json_option
@pass_app
@reports_errors
def status(app: AppContext, as_json: bool) -> None:
    """Show where the feed stands: patrons, the last extract and the last batch.

    \b
    Example:
      deltasync --feed patrons status --json
    """
    with app.store() as store:
        result = audit.status(store, app.feed)
    if as_json:
        click.echo(json.dumps(audit.as_json(result), indent=2))
        return
    click.echo(f"feed {result.feed}  (store {result.store})")
    click.echo(
        f"  patrons: {result.patrons_present} present, {result.patrons_departed} departed; "
        f"{result.versions} versions stored"
    )
    if result.last_extract is None:
        click.echo("  no extract ingested yet")
    else:
        e = result.last_extract
        click.echo(f"  last extract: {e.name} ({e.records} records) at {_when(e.ingested_at)}")
    if result.last_batch is None:
        click.echo("  no batch built yet")
    else:
        b = result.last_batch
        click.echo(
            f"  last batch: {b.seq} {b.file} ({b.records} records, {b.status}) "
            f"at {_when(b.created_at)}"
        )
    click.echo(f"  patrons awaiting confirmation by Alma: {result.awaiting_confirmation}")
    for pending in result.pending_batches:
        error = f"; last error: {pending.last_error}" if pending.last_error else ""
        click.echo(
            f"  pending: batch {pending.seq} {pending.status} since "
            f"{_when(pending.uploaded_at or pending.created_at)}{error}"
        )
    for failed in result.failed_batches:
        click.echo(
            f"  failed: batch {failed.seq} at {_when(failed.resolved_at or failed.created_at)}"
            f"; its patrons were sent again"
        )


@cli.command(context_settings=CONTEXT_SETTINGS)
@json_option
@pass_app
@reports_errors
def batches(app: AppContext, as_json: bool) -> None:
    """List the feed's batches, oldest first.

    \b
    Example:
      deltasync batches --json
    """
    with app.store() as store:
        rows = audit.batches(store, app.feed)
    if as_json:
        click.echo(json.dumps(audit.as_json(rows), indent=2))
        return
    if not rows:
        click.echo("no batches yet")
    for b in rows:
        click.echo(
            f"{b.seq:>6}  {_when(b.created_at)}  {b.status:<10} {b.records:>8} records "
            f"(new {b.new}, changed {b.changed}, returned {b.returned}, "
            f"departed {b.departed})  {b.file}"
        )


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("match_id")
@json_option
@pass_app
@reports_errors
def history(app: AppContext, match_id: str, as_json: bool) -> None:
    """Show every stored version of one patron, oldest first, with the batch that carried it.

    \b
    Example:
      deltasync history S0001234
    """
    with app.store() as store:
        rows = audit.history(store, app.feed, match_id)
    if as_json:
        click.echo(json.dumps(audit.as_json(rows), indent=2))
        return
    for number, version in enumerate(rows, start=1):
        carried = ", ".join(f"batch {seq} ({status})" for seq, status in version.carried_by)
        batch = f"sent in {carried}" if carried else "not sent"
        click.echo(
            f"version {number}: {version.kind}, seen {_when(version.first_seen)} "
            f"to {_when(version.last_seen)}; {batch}"
        )
        click.echo(f"  {version.record}")


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--since",
    type=click.IntRange(min=1),
    metavar="N",
    help="Also re-send every patron carried by batch N or later.",
)
@json_option
@pass_app
@reports_errors
def replay(app: AppContext, since: int | None, as_json: bool) -> None:
    """Build and deliver a catch-up delta now, without a new extract.

    Sends every patron whose current record Alma has not confirmed, rejected ones included.
    With --since N, also every patron carried by batch N or later (after an Alma restore).

    \b
    Example:
      deltasync replay --since 812
    """
    with app.store() as store:
        result = job.replay(store, app.config, app.feed, since=since)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
        _exit_for_attention(result)
        return
    if result.batch is None:
        click.echo("nothing to send: Alma has confirmed every current record")
    else:
        b = result.batch
        click.echo(f"batch {b.seq}: {b.file} ({b.records} records, {b.parts} part(s))")
    for event in result.ledger_events:
        click.echo(f"ledger: {event}")
    for reason in result.attention:
        click.echo(f"ATTENTION: {reason}")
    _exit_for_attention(result)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("seq", type=click.IntRange(min=1), metavar="N")
@pass_app
@reports_errors
def confirm(app: AppContext, seq: int) -> None:
    """Record that Alma loaded batch N (confirm = "manual", or a correction).

    \b
    Example:
      deltasync confirm 812
    """
    with app.store() as store:
        ledger.confirm(store, app.feed, seq, dt.datetime.now(dt.UTC))
    click.echo(f"batch {seq} confirmed")


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("seq", type=click.IntRange(min=1), metavar="N")
@click.option("--reason", required=True, help="Why it failed, for the ledger.")
@pass_app
@reports_errors
def fail(app: AppContext, seq: int, reason: str) -> None:
    """Record that Alma did not load batch N; its patrons go out with the next delta.

    \b
    Example:
      deltasync fail 812 --reason "job aborted: disk full"
    """
    with app.store() as store:
        ledger.fail(store, app.feed, seq, reason, dt.datetime.now(dt.UTC))
    click.echo(f"batch {seq} failed; its patrons will be sent again")


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("seq", type=click.IntRange(min=1), metavar="N")
@click.option(
    "--ids",
    "ids_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of match IDs Alma rejected, one per line.",
)
@pass_app
@reports_errors
def reject(app: AppContext, seq: int, ids_file: Path) -> None:
    """Record the patrons Alma rejected in batch N (e.g. copied from the job report).

    A rejected record is not sent again until it changes, or on `replay`.

    \b
    Example:
      deltasync reject 812 --ids rejected.txt
    """
    with app.store() as store:
        marked, unknown = ledger.reject(store, app.feed, seq, ids_file, dt.datetime.now(dt.UTC))
    click.echo(f"batch {seq}: {marked} patrons marked rejected")
    for match_id in unknown:
        click.echo(f"  {match_id}: not in batch {seq}, ignored")


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def main() -> None:
    """Entry point of the ``deltasync`` console script."""
    cli(prog_name="deltasync")
