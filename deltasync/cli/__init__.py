"""The ``deltasync`` command: a thin click layer over the library.

``app`` holds the group and what every command shares; the commands live in modules named for
who uses them: ``daily`` (the scheduled run), ``audit`` (the feed and its batches),
``patrons`` (a patron's history, changes across patrons), ``recovery`` (repairs),
``feeds`` (status of every feed, the metrics file), ``installation`` (init, doctor),
``report`` (a feed over a period, as text, JSON or an HTML page).
"""

from __future__ import annotations

from . import audit, daily, installation, mapping, patrons, recovery, report
from .app import cli

__all__ = ["cli", "main"]
_COMMANDS = (
    audit,
    daily,
    installation,
    mapping,
    patrons,
    recovery,
    report,
)  # imported for their @cli.command registrations


def main() -> None:
    """Entry point of the ``deltasync`` console script."""
    cli(prog_name="deltasync")
