"""Questions about patrons: one patron's history, a record at a moment, changes across all."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click
from lxml import etree

from .. import audit
from ..audit.fields import as_dict
from ..policy.rules import fields_of
from ..userxml import parse_payload
from .app import (
    CONTEXT_SETTINGS,
    AppContext,
    cli,
    emit_rows,
    format_option,
    moment,
    pass_app,
    reports_errors,
    when,
)

KINDS = ("new", "changed", "departed", "returned")
HISTORY_COLUMNS = ["version", "kind", "first_seen", "last_seen", "batches", "field", "old", "new"]
CHANGE_COLUMNS = ["at", "match_id", "kind", "field", "old", "new"]


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("match_id")
@format_option
@pass_app
@reports_errors
def history(app: AppContext, match_id: str, output_format: str, as_json: bool) -> None:
    """Show every version of one patron: when it was seen, the batches that carried it and
    what Alma made of them, and what changed from the version before.

    \b
    Example:
      deltasync history S0001234 --format csv > S0001234.csv
    """
    with app.store() as store:
        versions = audit.history(store, app.feed, match_id)
    output_format = "json" if as_json else output_format
    if output_format == "json":
        click.echo(json.dumps(audit.as_json(versions), indent=2))
        return
    if output_format == "csv":
        emit_rows(_history_rows(versions), "csv", HISTORY_COLUMNS)
        return
    for number, version in enumerate(versions, start=1):
        click.echo(
            f"version {number}: {version.kind}, seen {when(version.first_seen)} to "
            f"{when(version.last_seen)}; {_carried(version)}"
        )
        if version.changes is None:
            click.echo("  (record pruned by retention: it changed, its fields are gone)")
        for change in version.changes or []:
            click.echo(f"  {change}")


def _carried(version: audit.VersionRow) -> str:
    if version.baseline:
        return "adopted by baseline (Alma already held it)"
    carried = ", ".join(f"batch {seq} ({status})" for seq, status in version.carried_by)
    return f"sent in {carried}" if carried else "not sent"


def _history_rows(versions: list[audit.VersionRow]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for number, version in enumerate(versions, start=1):
        base = {
            "version": number,
            "kind": version.kind,
            "first_seen": version.first_seen.isoformat(),
            "last_seen": version.last_seen.isoformat(),
            "batches": " ".join(f"{seq}:{status}" for seq, status in version.carried_by),
        }
        changes = version.changes or []
        if not changes:
            pruned = version.changes is None
            rows.append({**base, "field": "(pruned)" if pruned else "", "old": "", "new": ""})
        for change in changes:
            rows.append(
                {**base, "field": change.field, "old": change.old or "", "new": change.new or ""}
            )
    return rows


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("match_id")
@click.option(
    "--as-of",
    "as_of",
    metavar="DATETIME",
    help="A date (its end, in the feed's time zone) or date and time. [default: now]",
)
@click.option(
    "--view",
    type=click.Choice([v.value for v in audit.View]),
    default="extract",
    show_default=True,
    help="extract: as the SIS sent it; sent: as delivered to Alma; confirmed: as Alma loaded it.",
)
@click.option("--format", "output_format", type=click.Choice(["xml", "json"]), default="xml")
@pass_app
@reports_errors
def show(app: AppContext, match_id: str, as_of: str | None, view: str, output_format: str) -> None:
    """Print one patron's record as it stood at a moment.

    \b
    Example:
      deltasync show S0001234 --as-of 2027-01-05 --view confirmed --format json
    """
    feed = app.feed
    at = dt.datetime.now(dt.UTC) if as_of is None else moment(as_of, feed.timezone, end_of_day=True)
    with app.store() as store:
        shown = audit.show(store, feed, match_id, as_of=at, view=audit.View(view))
    if shown.record is None:
        raise click.ClickException(
            f"patron {match_id!r}: the {view} record of {when(shown.first_seen)} was pruned by "
            "retention (retention_days)"
        )
    user = parse_payload(shown.record.encode("utf-8"))
    # Dates a rule computed are the record's own; which rule it was is read off its fields.
    rule = feed.expiry.rule_for(fields_of(user))
    if output_format == "json":
        data = {
            "match_id": shown.match_id,
            "view": shown.view.value,
            "as_of": shown.as_of.isoformat(),
            "kind": shown.kind,
            "first_seen": shown.first_seen.isoformat(),
            "batch": shown.batch_seq,
            "expiry_rule": None if rule is None else rule.described,
            "user": as_dict(user),
        }
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    if rule is not None:
        click.echo(f"<!-- expiry rule {rule.described} -->")
    etree.indent(user)
    click.echo(etree.tostring(user, encoding="unicode"))


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--since", required=True, metavar="DATE", help="From this date or date and time.")
@click.option("--until", metavar="DATE", help="Up to this date (inclusive) or date and time.")
@click.option("--field", "field_name", metavar="NAME", help="Only this field (user_group, …).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS), help="Only these kinds.")
@format_option
@pass_app
@reports_errors
def changes(
    app: AppContext,
    since: str,
    until: str | None,
    field_name: str | None,
    kinds: tuple[str, ...],
    output_format: str,
    as_json: bool,
) -> None:
    """List who changed what across patrons, from the versions first seen in a period.

    \b
    Example:
      deltasync changes --since 2027-01-04 --until 2027-01-04 --field user_group
    """
    feed = app.feed
    start = moment(since, feed.timezone, end_of_day=False)
    end = None if until is None else moment(until, feed.timezone, end_of_day=True)
    if end is not None:
        end += dt.timedelta(microseconds=1)  # --until is inclusive
    with app.store() as store:
        rows = audit.list_changes(
            store, feed, since=start, until=end, field=field_name, kinds=kinds
        )
    data = [
        {
            "at": r.at.isoformat(),
            "match_id": r.match_id,
            "kind": r.kind,
            "field": r.field,
            "old": r.old,
            "new": r.new,
        }
        for r in rows
    ]
    if emit_rows(data, "json" if as_json else output_format, CHANGE_COLUMNS):
        return
    if not rows:
        click.echo("no changes in that period")
    for r in rows:
        what = (
            r.kind if r.field is None else f"{r.kind:<8} {audit.FieldChange(r.field, r.old, r.new)}"
        )
        if r.field is None and r.new:
            what = f"{r.kind:<8} {r.new}"
        click.echo(f"{when(r.at)}  {r.match_id}  {what}")
