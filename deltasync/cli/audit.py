"""Read-only questions: status, batches, a patron's history."""

from __future__ import annotations

import json

import click

from .. import audit
from .app import (
    CONTEXT_SETTINGS,
    AppContext,
    cli,
    json_option,
    pass_app,
    reports_errors,
    when,
)


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
