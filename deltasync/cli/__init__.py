"""The ``deltasync`` command: a thin click layer over the library.

``app`` holds the group and what every command shares; the commands live in modules named for
who uses them: ``daily`` (the scheduled run), ``audit`` (the feed and its batches),
``patrons`` (a patron's history, changes across patrons), ``recovery`` (repairs),
``feeds`` (status of every feed, the metrics file), ``installation`` (init, doctor),
``report`` (a feed over a period, as text, JSON or an HTML page). A command's module is
imported when the command is asked for (``app.COMMANDS``), so a command pays only for its own
imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import startup

if TYPE_CHECKING:
    from .app import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Entry point of the ``deltasync`` console script."""
    startup.hold()  # before the first heavy import (see startup)
    try:
        from .app import cli

        cli(prog_name="deltasync")
    finally:
        startup.release()


def __getattr__(name: str) -> Any:
    # ``cli`` is imported when asked for, so that main() runs before the imports it pays for.
    if name == "cli":
        from .app import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
