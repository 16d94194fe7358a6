"""Running a feed's job and telling about it, shared by ``run``, ``diff``, ``replay`` and
``baseline``: the report on stdout (text or ``--json``), the log, the HTML reports, the
notices, and the exit code.

Notices go out whatever the end: a run refused by a guard, or stopped by an error (a missing
extract, a broken file, an unreachable store), is exactly what must reach a person, so the
failure is reported and notified before its error message and exit code. A notice or a report
that cannot be sent or written is a ``Warning:`` line on stderr (which cron mails) and in the
log; it never changes the exit code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from .. import job
from ..errors import DeltasyncError
from ..report import log as run_log
from ..report import run as run_report
from ..report import text
from ..report.after import after_run
from ..store import Store
from .app import AppContext, exit_for_reasons

Work = Callable[[Store], job.RunResult]


def run_reported(
    app: AppContext,
    command: str,
    work: Work,
    *,
    as_json: bool,
    extract: Path | None = None,
    prepare: Callable[[], None] | None = None,
) -> None:
    """Do ``work`` (a run, dry run, replay or baseline) in the store and report on it.

    ``prepare`` checks what can be checked before the store is opened (that the extract is
    there): a failure there is reported and notified like the run's, and leaves the store
    unopened.
    """
    config, feed = app.config, app.feed
    run_log.started(feed.name, command, extract)
    if prepare is not None:
        try:
            prepare()
        except (DeltasyncError, click.ClickException) as exc:
            if not isinstance(exc, click.UsageError):
                stopped = run_report.for_failure(None, feed, command, _as_error(exc))
                _warn(feed.name, after_run(None, config, feed, stopped))
            raise
    problems: list[str] = []
    failure: Exception | None = None
    report: run_report.RunReport | None = None
    try:
        with app.store() as store:
            try:
                result = work(store)
            except (DeltasyncError, click.ClickException) as exc:
                if isinstance(exc, click.UsageError):
                    raise  # how the command was called, not how the night went
                failure = exc
                stopped = run_report.for_failure(store, feed, command, _as_error(exc))
                problems = after_run(store, config, feed, stopped)
            else:
                report = run_report.for_result(store, feed, result, command)
                _emit(app, report, as_json)
                problems = after_run(store, config, feed, report)
    except DeltasyncError as exc:
        if failure is not None or report is not None:
            raise  # the work is over and told; only closing the store failed
        failure = exc  # the store itself could not be opened
        problems = after_run(None, config, feed, run_report.for_failure(None, feed, command, exc))
    _warn(feed.name, problems)
    if failure is not None:
        raise failure
    assert report is not None
    exit_for_reasons(report.feed, report.attention)


def _emit(app: AppContext, report: run_report.RunReport, as_json: bool) -> None:
    assert report.result is not None
    if as_json:
        click.echo(json.dumps(report.result.as_json(), indent=2))
    elif app.verbosity >= 0:
        for line in text.lines(report):
            click.echo(line)


def _warn(feed: str, problems: list[str]) -> None:
    for problem in problems:
        click.echo(f"Warning: feed {feed}: {problem}", err=True)


def _as_error(exc: DeltasyncError | click.ClickException) -> DeltasyncError:
    """A CLI-level failure (no extract file, say) as the library's error, for the report."""
    if isinstance(exc, DeltasyncError):
        return exc
    return DeltasyncError(exc.format_message())
