"""The command group, its context and the helpers every command shares.

Exit codes are a contract for cron jobs and scripts: 0 done (also when nothing changed),
1 error, 2 usage, 3 refused by a guard (nothing was changed), 4 done but needs attention.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import importlib
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from ..config import Config, FeedConfig, load, locate
from ..errors import DeltasyncError, GuardRefused
from ..store import Store, open_store
from . import logs, startup

EXIT_GUARD = 3
EXIT_ATTENTION = 4
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
    verbosity: int = 0
    """-1 with -q, 1 with -v: how much is logged, and whether reports go to stdout."""

    @property
    def config(self) -> Config:
        if self._config is None:
            config = load(locate(self.config_path))
            logs.configure(config.log_file, self.verbosity, where=f"{config.path}: log_file")
            self._config = config
            for feed in config.feeds.values():
                for warning in feed.warnings:  # allowed, but someone should look
                    click.echo(f"Warning: feed {feed.name}: {warning}", err=True)
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


FORMATS = ("table", "json", "csv")


def format_option(command: F) -> F:
    """``--format table|json|csv`` (``--json`` is short for ``--format json``)."""
    command = click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (same as --format json)."
    )(command)
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format.",
    )(command)


def emit_rows(rows: list[dict[str, Any]], output_format: str, columns: list[str]) -> bool:
    """Print ``rows`` as JSON or CSV and return True; False leaves table output to the caller.

    JSON keeps None as null; CSV writes it as an empty cell.
    """
    if output_format == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
        return True
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        click.echo(buffer.getvalue(), nl=False)
        return True
    return False


def moment(text: str, timezone: dt.tzinfo, *, end_of_day: bool) -> dt.datetime:
    """A ``--since``/``--until``/``--as-of`` value: a date (a whole day in the feed's time
    zone: its start, or with ``end_of_day`` its end) or a date and time (naive: feed's zone)."""
    try:
        if re.fullmatch(r"\d{4}-?\d{2}-?\d{2}", text.strip()):
            day = dt.date.fromisoformat(text.strip())
            start = dt.datetime.combine(day, dt.time(), timezone)
            return start + dt.timedelta(days=1, microseconds=-1) if end_of_day else start
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a date (2027-01-05) or a date and time (2027-01-05T14:30)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone)


def json_option(command: F) -> F:
    """``--json``: machine-readable output on stdout."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(command)


COMMANDS: dict[str, tuple[str, ...]] = {
    "audit": ("status", "batches", "batch"),
    "daily": ("run", "diff", "check"),
    "installation": ("init", "doctor"),
    "mapping": ("map",),
    "patrons": ("history", "show", "changes"),
    "recovery": (
        "replay",
        "confirm",
        "fail",
        "reject",
        "batch",  # its `rebuild`, added to the group that audit defines
        "baseline",
        "resend",
        "prune",
        "backup",
    ),
    "report": ("report",),
}
"""Each command module of this package → the commands it registers on ``cli``."""


class LazyGroup(click.Group):
    """A group that imports a command's module (see ``COMMANDS``) when the command is asked for.

    So ``deltasync status`` imports what ``status`` needs, not the job, the HTML report or the
    repair tools (click's "Lazily Loading Subcommands"). ``--help`` still imports them all, for
    each command's short help.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *(name for names in COMMANDS.values() for name in names)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # A name no module registers: import them all, so click's "Did you mean" sees every
        # command.
        modules = [m for m, names in COMMANDS.items() if cmd_name in names] or list(COMMANDS)
        for module in modules:
            importlib.import_module(f".{module}", __package__)
        startup.release()  # the command's modules are in: start-up is over
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Configuration file [default: $DELTASYNC_CONFIG, else ./config.toml].",
)
@click.option("--feed", "feed_name", help="Feed to work on; optional when only one is configured.")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Log debug lines too; without log_file the log goes to stderr.",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="No report on stdout, and log only warnings and errors (errors and ATTENTION lines "
    "still go to stderr).",
)
@click.version_option(package_name="deltasync")
@click.pass_context
def cli(
    ctx: click.Context, config_path: Path | None, feed_name: str | None, verbose: bool, quiet: bool
) -> None:
    """Send Alma only the patrons that changed.

    Diffs each full SIS extract against a snapshot of what was last sent and writes a zipped
    Alma delta file with the new, changed and returning patrons and an expiration record for
    each departed one.

    \b
    Example (the nightly cron job):
      deltasync --config /etc/deltasync/config.toml run
    """
    if verbose and quiet:
        raise click.UsageError("-v and -q contradict each other: give one of them")
    verbosity = 1 if verbose else -1 if quiet else 0
    logs.configure(None, verbosity)  # until the config names a log_file
    ctx.call_on_close(logs.reset)
    ctx.obj = AppContext(config_path, feed_name, verbosity=verbosity)


def exit_for_reasons(feed: str, reasons: Sequence[str]) -> None:
    """Exit 4 when there are reasons a person should look, writing each to stderr.

    The work is done; exit 4 so cron mail reaches someone. The reasons go to stderr as well as
    to the normal output, because cron lines often send stdout to a log (and ``--json`` keeps
    stdout for the JSON), so stderr is what gets mailed.
    """
    if reasons:
        for reason in reasons:
            click.echo(f"ATTENTION: feed {feed}: {reason}", err=True)
        raise SystemExit(EXIT_ATTENTION)


def require_file(path: Path, what: str) -> None:
    """Exit 1 (not click's usage exit 2) naming a file argument that is not there."""
    if not path.is_file():
        raise click.ClickException(f"{path}: {what} not found")


def when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
