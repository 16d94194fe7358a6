"""Pre-flight validation: catch what Alma would reject before a file leaves.

``codes`` names every finding, ``settings`` holds a feed's policies, ``record`` checks and
fixes one record, ``identifiers`` finds values two patrons share, ``preflight`` runs them all
in the run's single pass over the extract, and :func:`check_file` runs them on any file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from ..canonical import Recipe
from ..diff import Diff
from ..matchid import MatchIdRule
from .codes import FILE_CODES, RECORD_CODES, Policy
from .findings import Finding, Report
from .preflight import Preflight
from .settings import CheckSettings

__all__ = [
    "FILE_CODES",
    "RECORD_CODES",
    "CheckSettings",
    "FileCheck",
    "Finding",
    "Policy",
    "Preflight",
    "Report",
    "check_file",
]


@dataclass(frozen=True)
class FileCheck:
    """What ``check`` found in one file."""

    path: Path
    records: int
    """How many ``<user>`` records the file holds."""
    report: Report
    held_back: int = 0
    """How many records the checks would hold back (a match ID twice counts once)."""


def check_file(
    path: Path,
    settings: CheckSettings,
    *,
    rule: MatchIdRule | None = None,
    today: dt.date,
    encoding: str = "utf-8",
) -> FileCheck:
    """Check every record of an extract or a delta zip, as if each were about to be sent.

    Raises :class:`~deltasync.errors.ExtractError` for a file-level problem.
    """
    diff = Diff({})  # against an empty snapshot every record counts as one to send
    preflight = Preflight(diff, settings, rule or MatchIdRule(), Recipe(), today)
    preflight.scan(path, lambda *_record: None, encoding=encoding)
    return FileCheck(path, preflight.read, preflight.report, len(diff.held_back))
