"""Read-only questions: status, batches, a patron's history."""

from __future__ import annotations

import datetime as dt
import json

import click

from .. import audit
from ..audit import health
from .app import (
    CONTEXT_SETTINGS,
    AppContext,
    cli,
    exit_for_reasons,
    json_option,
    pass_app,
    reports_errors,
    when,
)
from .feeds import status_all


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--all", "all_feeds", is_flag=True, help="One row per configured feed (a monitoring probe)."
)
@json_option
@pass_app
@reports_errors
def status(app: AppContext, all_feeds: bool, as_json: bool) -> None:
    """Show where the feed stands: patrons, the last extract and run, batches, what to do next.

    Exits 4 when the feed needs attention (the last run failed or was refused or needed
    attention; a batch failed, was not delivered, or is overdue), so it serves as a probe.
    With --all: one row per feed, exit 4 when any needs attention.

    \b
    Examples:
      deltasync --feed patrons status --json
      deltasync status --all
    """
    if all_feeds:
        if app.feed_name is not None:
            raise click.UsageError("--all shows every feed; leave out --feed")
        status_all(app, as_json=as_json)
        return
    if app.feed_name is None and len(app.config.feeds) > 1:
        names = ", ".join(app.config.feeds)
        raise click.UsageError(
            f"several feeds are configured ({names}); choose one with --feed, or see them all "
            "with: deltasync status --all"
        )
    with app.store() as store:
        result = audit.status(store, app.feed)
        [found] = health.collect(store, [app.feed], dt.datetime.now(dt.UTC))
    if as_json:
        data = audit.as_json(result)
        view = found.as_json()
        for key in ("last_run", "needs_attention", "attention", "next_action"):
            data[key] = view[key]
        click.echo(json.dumps(data, indent=2))
        exit_for_reasons(result.feed, found.attention)
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
        click.echo(f"  last extract: {e.name} ({e.records} records) at {when(e.ingested_at)}")
    if result.last_batch is None:
        click.echo("  no batch built yet")
    else:
        b = result.last_batch
        click.echo(
            f"  last batch: {b.seq} {b.file} ({b.records} records, {b.status}) "
            f"at {when(b.created_at)}"
        )
    click.echo(f"  patrons awaiting confirmation by Alma: {result.awaiting_confirmation}")
    for pending in result.pending_batches:
        error = f"; last error: {pending.last_error}" if pending.last_error else ""
        click.echo(
            f"  pending: batch {pending.seq} {pending.status} since "
            f"{when(pending.uploaded_at or pending.created_at)}{error}"
        )
    for failed in result.failed_batches:
        click.echo(
            f"  failed: batch {failed.seq} at {when(failed.resolved_at or failed.created_at)}"
            f"; its patrons were sent again"
        )
    run = found.last_run
    if run is None:
        click.echo("  last run: none logged")
    else:
        click.echo(
            f"  last run: {run.command} at {when(run.started_at)}: {run.outcome.value} "
            f"(exit {run.outcome.exit_code})"
        )
    if found.rejected:
        click.echo(f"  patrons whose current record Alma rejected: {found.rejected}")
    for reason in found.attention:
        click.echo(f"  ATTENTION: {reason}")
    click.echo(f"  next action: {found.next_action}")
    exit_for_reasons(result.feed, found.attention)


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
            f"{b.seq:>6}  {when(b.created_at)}  {b.status:<10} {b.records:>8} records "
            f"(new {b.new}, changed {b.changed}, returned {b.returned}, "
            f"departed {b.departed})  {b.file}"
        )


@cli.group(context_settings=CONTEXT_SETTINGS)
def batch() -> None:
    """Look at one batch, or re-create its file.

    \b
    Example:
      deltasync batch show 812
    """


@batch.command("show", context_settings=CONTEXT_SETTINGS)
@click.argument("seq", type=click.IntRange(min=1), metavar="N")
@json_option
@pass_app
@reports_errors
def batch_show(app: AppContext, seq: int, as_json: bool) -> None:
    """Show batch N: its file and state, every patron it carried, and its ledger history.

    \b
    Example:
      deltasync batch show 812 --json
    """
    with app.store() as store:
        detail = audit.batch_detail(store, app.feed, seq)
    if as_json:
        click.echo(json.dumps(audit.as_json(detail), indent=2))
        return
    b = detail.batch
    click.echo(f"batch {b.seq}: {b.file} ({b.status})")
    click.echo(
        f"  built {when(b.created_at)}: {b.records} records in {b.parts} part(s), sha256 {b.sha256}"
    )
    click.echo(f"  new {b.new}, changed {b.changed}, returned {b.returned}, departed {b.departed}")
    click.echo("  ledger:")
    for at, status, message in detail.events:
        click.echo(f"    {when(at)}  {status:<10} {message or ''}".rstrip())
    forgotten = f" ({detail.forgotten} forgotten by retention)" if detail.forgotten else ""
    click.echo(f"  patrons:{forgotten}")
    for member in detail.members:
        outcome = "" if member.outcome == "sent" else f"  {member.outcome}: {member.reason}"
        click.echo(f"    {member.match_id}  {member.kind}{outcome}")
