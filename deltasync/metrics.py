"""The metrics file: each feed's health in node_exporter's textfile-collector format.

Written after every run (and by ``status --all``) to ``metrics_file``, atomically: a temporary
file in the same folder, renamed over the old one, so the collector never reads half a file.
The temporary name does not end in ``.prom``, which the collector ignores. The file is 0644:
node_exporter runs as another user, and the file holds only counts and times per feed name,
never a patron.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from pathlib import Path

from . import safefiles
from .audit.health import FeedHealth
from .errors import MetricsError
from .store.runs import Outcome

FILE_MODE = 0o644
PREFIX = "deltasync_"
COUNT_KINDS = (
    "new",
    "changed",
    "unchanged",
    "departed",
    "returned",
    "held_back",
    "records",
    "sent",
    "carried_over",
)
"""The counts of a run's log entry that become ``deltasync_last_run_patrons{kind=...}``."""

_HELP = {
    "last_run_timestamp_seconds": "When the feed's last run (run, replay or baseline) ended.",
    "last_run_duration_seconds": "How long the feed's last run took.",
    "last_run_outcome": "1 for the outcome of the feed's last run (ok, attention, refused, "
    "error), 0 for the others.",
    "last_run_exit_code": "The exit code of the feed's last run (0, 4, 3 or 1).",
    "last_run_patrons": "Patrons counted by the feed's last run, by kind.",
    "batches_in_flight": "Batches built, uploaded or picked up but not yet confirmed or failed.",
    "oldest_unconfirmed_batch_age_seconds": "Age of the oldest batch in flight when this file "
    "was written (0 when none).",
    "oldest_unconfirmed_batch_timestamp_seconds": "When the oldest batch in flight was built "
    "(only while one is in flight; time() minus this is its age now).",
    "failed_batches": "Failed batches with no confirmed batch after them.",
    "held_back_patrons": "Patrons the checks held back from the newest extract.",
    "rejected_patrons": "Patrons whose current record Alma rejected.",
    "needs_attention": "1 when the feed needs attention (status exits 4), else 0.",
    "metrics_timestamp_seconds": "When deltasync wrote this file.",
}


def render(feeds: Iterable[FeedHealth], now: dt.datetime) -> str:
    """The textfile-collector text for ``feeds``: HELP and TYPE lines, then one sample per feed."""
    samples: dict[str, list[str]] = {name: [] for name in _HELP}

    def add(name: str, value: float, **labels: str) -> None:
        inner = ",".join(f'{key}="{_escape(text)}"' for key, text in labels.items())
        samples[name].append(
            f"{PREFIX}{name}{{{inner}}} {_number(value)}"
            if inner
            else f"{PREFIX}{name} {_number(value)}"
        )

    for health in feeds:
        feed = health.feed
        run = health.last_run
        if run is not None:
            add("last_run_timestamp_seconds", run.finished_at.timestamp(), feed=feed)
            duration = (run.finished_at - run.started_at).total_seconds()
            add("last_run_duration_seconds", max(0.0, duration), feed=feed)
            for outcome in Outcome:
                add(
                    "last_run_outcome",
                    float(outcome == run.outcome),
                    feed=feed,
                    outcome=outcome.value,
                )
            add("last_run_exit_code", run.outcome.exit_code, feed=feed)
            for kind in COUNT_KINDS:
                value = run.counts.get(kind)
                if isinstance(value, int):
                    add("last_run_patrons", value, feed=feed, kind=kind)
        add("batches_in_flight", health.in_flight, feed=feed)
        age = health.oldest_in_flight_age
        add(
            "oldest_unconfirmed_batch_age_seconds",
            0 if age is None else age.total_seconds(),
            feed=feed,
        )
        if health.oldest_in_flight_at is not None:
            add(
                "oldest_unconfirmed_batch_timestamp_seconds",
                health.oldest_in_flight_at.timestamp(),
                feed=feed,
            )
        add("failed_batches", health.failed, feed=feed)
        add("held_back_patrons", health.held_back, feed=feed)
        add("rejected_patrons", health.rejected, feed=feed)
        add("needs_attention", float(health.needs_attention), feed=feed)
    add("metrics_timestamp_seconds", now.timestamp())
    lines: list[str] = []
    for name, help_text in _HELP.items():
        if samples[name]:
            lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} gauge"]
            lines += samples[name]
    return "\n".join(lines) + "\n"


def write(path: Path, feeds: Iterable[FeedHealth], now: dt.datetime) -> None:
    """Replace the metrics file at ``path`` with ``feeds``' metrics, atomically."""
    text = render(feeds, now).encode("utf-8")
    folder = path.parent
    try:
        temporary, fd = safefiles.create(folder, f".{path.name}.", ".tmp")
    except FileNotFoundError:
        raise MetricsError(
            f"{path}: cannot write metrics_file: the folder {folder} does not exist"
        ) from None
    except OSError as exc:
        raise MetricsError(f"{path}: cannot write metrics_file: {exc.strerror}") from exc
    try:
        with open(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)  # counts only: node_exporter must read it
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        safefiles.remove_quietly(temporary)
        raise MetricsError(f"{path}: cannot write metrics_file: {exc.strerror}") from exc


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
