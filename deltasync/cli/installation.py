"""Setting an installation up and checking it: ``init`` and ``doctor``."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import click

from .. import doctor as checkup
from .. import scaffold
from ..config import locate
from ..errors import ConfigError
from .app import CONTEXT_SETTINGS, AppContext, cli, pass_app, reports_errors


class HostPort(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.3 on
    """``HOST`` or ``HOST:PORT`` (``[::1]:2222`` for an IPv6 address)."""

    name = "HOST[:PORT]"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        text = str(value).strip()
        match = re.fullmatch(
            r"\[(?P<v6>[0-9A-Fa-f:.]+)\](?::(?P<p6>\d+))?|(?P<host>[^:\s]+)(?::(?P<port>\d+))?",
            text,
        )
        if match is None:
            self.fail(f"{text!r} is not HOST or HOST:PORT", param, ctx)
        host = match["v6"] or match["host"]
        port = int(match["p6"] or match["port"] or 22)
        if not 0 < port < 65536:
            self.fail(f"{port} is not a TCP port", param, ctx)
        return host, port


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--feed", "feed_name", help=f"The feed's name [default: {scaffold.DEFAULT_FEED}].")
@click.option("--sftp", type=HostPort(), help="Deliver to this SFTP server (port 22 unless given).")
@click.option(
    "--alma-api", is_flag=True, help="Confirm each batch from the SIS job's result (with --sftp)."
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Set up this folder: DIR/config.toml and its folders [default: where --config, "
    "$DELTASYNC_CONFIG or ./config.toml says].",
)
@pass_app
@reports_errors
def init(
    app: AppContext,
    feed_name: str | None,
    sftp: tuple[str, int] | None,
    alma_api: bool,
    folder: Path | None,
) -> None:
    """Write a commented, working configuration and the folders it names; print what next.

    Never overwrites a configuration. The folders (incoming/, var/, the outbox, keys/ for
    SFTP) are created 0700.

    \b
    Examples:
      deltasync init --dir /srv/deltasync
      deltasync init --dir /etc/deltasync --feed students --sftp sftp.example.edu:22 --alma-api
    """
    if folder is not None and app.config_path is not None:
        raise click.UsageError("give --dir or --config, not both")
    path = folder / "config.toml" if folder is not None else locate(app.config_path)
    options = scaffold.Options(
        feed=feed_name or app.feed_name or scaffold.DEFAULT_FEED,
        sftp_host=None if sftp is None else sftp[0],
        sftp_port=22 if sftp is None else sftp[1],
        alma_api=alma_api,
    )
    created = scaffold.create(path, options)
    click.echo(f"wrote {created.config}")
    click.echo(f"made (mode 0700, or left as they were): {', '.join(map(str, created.folders))}")
    click.echo("next steps:")
    for number, step in enumerate(created.next_steps, start=1):
        click.echo(f"  {number}. {step}")


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--feed", "feed_name", help="Check this feed only [default: every feed].")
@click.option("--all", "all_feeds", is_flag=True, help="Check every feed (the default).")
@pass_app
@reports_errors
def doctor(app: AppContext, feed_name: str | None, all_feeds: bool) -> None:
    """Check the installation, changing nothing: one line per check, ok or FAIL and the fix.

    Checks the configuration; the store (it opens, and whether the next command would migrate
    it); disk space; each feed's outbox, its extract (a file modified within 36 hours), its
    delivery (a dir folder exists; an SFTP server answers, its host key is known and matches,
    the login works, remote_dir exists and is writable) and the Alma API (the key works, the
    job exists). Exit 1 when any check fails.

    \b
    Example:
      deltasync --config /etc/deltasync/config.toml doctor
    """
    name = feed_name or app.feed_name
    if name is not None and all_feeds:
        raise click.UsageError("--all checks every feed; leave out --feed")
    try:
        config = app.config
    except ConfigError as exc:
        click.echo(checkup.Finding("config", False, str(exc), "correct the configuration").line())
        raise click.ClickException("doctor found 1 problem(s)") from exc
    feeds = [config.feed(name)] if name is not None else list(config.feeds.values())
    failures = 0
    for finding in checkup.diagnose(config, feeds, dt.datetime.now(dt.UTC)):
        click.echo(finding.line())
        failures += not finding.ok
    if failures:
        raise click.ClickException(f"doctor found {failures} problem(s)")
    click.echo("doctor: every check passed")
