"""Repairs and the ledger by hand: replay, confirm, fail, reject, batch rebuild, resend,
baseline adoption, retention and backup."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from .. import audit, job, ledger, recovery, retention
from ..store import backup as store_backup
from .app import (
    CONTEXT_SETTINGS,
    AppContext,
    cli,
    exit_for_reasons,
    json_option,
    pass_app,
    reports_errors,
    require_file,
    when,
)
from .audit import batch
from .reporting import run_reported


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
    run_reported(
        app,
        "replay",
        lambda store: job.replay(store, app.config, app.feed, since=since),
        as_json=as_json,
    )


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


@batch.command("rebuild", context_settings=CONTEXT_SETTINGS)
@click.argument("seq", type=click.IntRange(min=1), metavar="N")
@click.option(
    "--out",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write it to. [default: the feed's outbox]",
)
@pass_app
@reports_errors
def batch_rebuild(app: AppContext, seq: int, folder: Path | None) -> None:
    """Re-create batch N's file from the store, byte for byte (same SHA-256), when the
    outbox copy and the server copy are gone. The ledger is not changed: to send the
    patrons again use `replay --since N`.

    \b
    Example:
      deltasync batch rebuild 812 --out /tmp/recovered
    """
    with app.store() as store:
        rebuilt = recovery.rebuild_batch(store, app.feed, seq, folder)
    click.echo(
        f"batch {rebuilt.seq}: {rebuilt.path} ({rebuilt.records} records, "
        f"sha256 {rebuilt.sha256}, the same as when it was built)"
    )


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("extract", required=False, type=click.Path(dir_okay=False, path_type=Path))
@json_option
@pass_app
@reports_errors
def baseline(app: AppContext, extract: Path | None, as_json: bool) -> None:
    """Adopt a feed that already loads full files into Alma: record EXTRACT as what Alma
    holds, send nothing. The next run sends only that day's changes. Only for a new feed.
    A feed of a SQL query or of several sources takes no EXTRACT: its sources are read.

    \b
    Example:
      deltasync baseline incoming/patrons-full-2027-01-04.xml
    """

    def prepare() -> None:
        if app.feed.file_extract:
            if extract is None:
                raise click.UsageError("Missing argument 'EXTRACT'.")
            require_file(extract, "extract")
        elif extract is not None:
            raise click.UsageError(
                f"feed {app.feed.name!r} reads several sources or a SQL query: each source "
                "names its own extract, so run it without EXTRACT"
            )

    run_reported(
        app,
        "baseline",
        lambda store: job.baseline(store, app.feed, extract),
        as_json=as_json,
        extract=extract,
        prepare=prepare,
    )


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("match_ids", nargs=-1)
@click.option(
    "--ids",
    "ids_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of match IDs, one per line.",
)
@pass_app
@reports_errors
def resend(app: AppContext, match_ids: tuple[str, ...], ids_file: Path | None) -> None:
    """Put these patrons into the next delta with their current SIS record, e.g. after
    staff changed them by hand in Alma and want the SIS values back.

    \b
    Example:
      deltasync resend S0001234 S0004321
    """
    wanted = list(match_ids)
    if ids_file is not None:
        wanted += ledger.read_ids(ids_file)
    if not any(m.strip() for m in wanted):
        raise click.UsageError("give match IDs, or --ids FILE")
    with app.store() as store:
        marked, unknown = recovery.resend(store, app.feed, wanted)
    click.echo(f"{len(marked)} patron(s) will go out with the next run")
    for match_id in unknown:
        click.echo(f"  {match_id}: no such patron, ignored")


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(min=0),
    metavar="DAYS",
    help="The retention window. [default: the feed's retention_days]",
)
@json_option
@pass_app
@reports_errors
def prune(app: AppContext, days: int | None, as_json: bool) -> None:
    """Remove superseded records older than the window, keeping their hashes, dates and
    batch links, and forget departed patrons whose purge date has passed. Delete the delta
    files of batches resolved before the window from the outbox, and deltasync's own withdrawn
    files from remote_dir (Alma's .handled files are left alone).

    \b
    Example:
      deltasync prune --older-than 365
    """
    feed = app.feed
    window = feed.retention_days if days is None else days
    if days is None and window == 0:
        if as_json:
            # The keys of any prune that removed nothing, so scripts read one shape; there is
            # no window, so no cutoff.
            nothing = retention.Pruned(dt.datetime.now(dt.UTC), payloads=0, patrons=0)
            click.echo(json.dumps({**audit.as_json(nothing), "cutoff": None}, indent=2))
            return
        click.echo(
            f"feed {feed.name!r} keeps everything (retention_days = 0): nothing pruned; "
            "give --older-than DAYS to prune anyway"
        )
        return
    with app.store() as store:
        pruned = retention.prune_feed(store, feed, days=window, now=dt.datetime.now(dt.UTC))
    if as_json:
        click.echo(json.dumps(audit.as_json(pruned), indent=2))
    else:
        click.echo(
            f"pruned {pruned.payloads} superseded record(s) last seen before "
            f"{when(pruned.cutoff)}; forgot {pruned.patrons} purged patron(s); deleted "
            f"{pruned.outbox_files} old delta file(s) from the outbox and "
            f"{pruned.remote_files} withdrawn file(s) from remote_dir"
        )
        for problem in pruned.problems:
            click.echo(f"ATTENTION: {problem}")
    exit_for_reasons(feed.name, pruned.problems)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH")
@pass_app
@reports_errors
def backup(app: AppContext, target: Path) -> None:
    """Write a consistent copy of the SQLite store to PATH, even while a run writes to it.
    The copy holds personal data: it is created with mode 0600.

    \b
    Example:
      deltasync backup /backups/deltasync-2027-01-05.db
    """
    with app.store() as store:
        size = store_backup.backup(store, target)
    click.echo(f"backed up {app.config.state_url.split('///')[-1]} to {target} ({size} bytes)")
