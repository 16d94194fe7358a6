"""Refuse an extract that would roll patrons back: older than the last one, or a copy of an
earlier one.

The snapshot is the desired state, so ingesting an old extract makes its old values desired
again and sends them (and takes back the batch carrying the new ones). Three cases, each a
guard (GuardRefused, exit 3, nothing changed) that ``--force`` overrides:

- the very file of an earlier extract (same SHA-256), unless that one's content is the last
  extract's too; with ``--force`` it is skipped as already ingested, because the store knows
  each file once (a fresh export of the same data can be forced in);
- a file modified before the extract ingested last (its own modification time, recorded);
- new bytes with the content of an earlier extract but not of the last one (a copy with other
  line ends, another order of records): found after the pass, by the content fingerprint.

The reference is the extract ingested *last*, not the newest ever: after a forced run the
forced extract is the reference, so one file with a wrong clock cannot block a feed for good.
Extracts ingested before deltasync recorded times and fingerprints are not compared.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from .errors import GuardRefused

ROLLBACK = "running it would roll patrons back to older values"


@dataclass(frozen=True)
class Ingested:
    """What the store knows of an extract it ingested."""

    id: int
    name: str
    ingested_at: dt.datetime
    mtime: dt.datetime | None
    fingerprint: str | None


def check_same_file(path: Path, earlier: Ingested, last: Ingested | None, *, force: bool) -> None:
    """``path`` has the bytes of ``earlier``: fine if nothing was ingested since that
    differs from it; refused otherwise (``force`` skips it as already ingested)."""
    if last is None or earlier.id == last.id or force:
        return
    if earlier.fingerprint is not None and earlier.fingerprint == last.fingerprint:
        return  # the last extract holds the same records: nothing would change
    raise GuardRefused(
        f"{path}: the same file as {earlier.name} (ingested {_stamp(earlier.ingested_at)}), "
        f"an extract older than the one ingested last ({last.name}, ingested "
        f"{_stamp(last.ingested_at)}): {ROLLBACK}. deltasync ingests a file once; to go back "
        "to that state, export it from the SIS again and run that with --force"
    )


def check_time(path: Path, mtime: dt.datetime, last: Ingested | None, *, force: bool) -> None:
    """Refuse a file modified before the extract ingested last."""
    if force or last is None or last.mtime is None or mtime >= last.mtime:
        return
    raise GuardRefused(
        f"{path}: modified {_stamp(mtime)}, before the extract ingested last ({last.name}, "
        f"modified {_stamp(last.mtime)}, ingested {_stamp(last.ingested_at)}): {ROLLBACK}. "
        "If it is the file you meant, run again with --force"
    )


def check_content(path: Path, same: Ingested | None, last: Ingested | None, *, force: bool) -> None:
    """Refuse content equal to an earlier extract, ``same`` (the newest with the fingerprint),
    that is not the last one: content equal to the last is simply "nothing changed"."""
    if force or same is None or last is None or same.id == last.id:
        return
    raise GuardRefused(
        f"{path}: holds the same records as {same.name} (ingested {_stamp(same.ingested_at)}), "
        f"an extract older than the one ingested last ({last.name}, ingested "
        f"{_stamp(last.ingested_at)}): {ROLLBACK}. If the SIS really is back at that state, "
        "run again with --force"
    )


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
