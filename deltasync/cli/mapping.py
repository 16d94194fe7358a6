"""``deltasync map``: render rows through a feed's mapping, storing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import click
from lxml import etree

from ..audit.fields import as_dict
from ..preview import render_rows
from .app import CONTEXT_SETTINGS, AppContext, cli, pass_app, reports_errors, require_file


@cli.command("map", context_settings=CONTEXT_SETTINGS)
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--limit", type=click.IntRange(min=1), help="Render only the first N rows.")
@click.option(
    "--format",
    "output",
    type=click.Choice(["xml", "json"]),
    default="xml",
    show_default=True,
    help="Alma user XML, or JSON (each row's fields and what could not be mapped).",
)
@pass_app
@reports_errors
def map_rows(app: AppContext, file: Path | None, limit: int | None, output: str) -> None:
    """Render the rows of FILE through the feed's mapping; change nothing.

    For checking a mapping: prints the Alma records it makes, and on stderr each row it
    could not map (row and column named). A feed of a SQL query needs no FILE.

    \b
    Example:
      deltasync map incoming/banner.csv --limit 5
    """
    feed = app.feed
    if file is not None:
        require_file(file, "file")
    elif feed.file_extract:
        raise click.UsageError("Missing argument 'FILE'.")
    rendered = render_rows(feed, file, limit=limit)
    if output == "json":
        data = [
            {
                "where": r.where,
                "user": as_dict(r.user),
                "findings": [f.as_json() for f in r.findings],
            }
            for r in rendered
        ]
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    users = etree.Element("users")
    for r in rendered:
        users.append(r.user)
        for finding in r.findings:
            click.echo(
                f"{finding.policy.value} {finding.code} ({finding.where}): {finding.message}",
                err=True,
            )
    etree.indent(users)
    click.echo(etree.tostring(users, encoding="unicode"))
