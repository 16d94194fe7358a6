"""Where the log goes: the run log file, stderr, or nowhere; set up by the CLI only.

``log_file`` names a file: records are appended with a timestamp, and the file is reopened
when logrotate moves it away (WatchedFileHandler), created 0600 because it names patrons by
match ID. ``log_file = "-"`` writes the log to stderr (for systemd's journal). Without it the
log stays off stderr, which cron mails: stderr carries only errors and ATTENTION lines; ``-v``
shows the log there while you watch. paramiko's records go to the same place: its transport
thread logs failures with tracebacks, which otherwise reach Python's last-resort handler.

Verbosity: ``-q`` WARNING and above, default INFO, ``-v`` DEBUG (paramiko's own INFO lines).
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Literal

from ..errors import ConfigError

FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
LOGGERS = ("deltasync", "paramiko")
_OPEN = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)

Target = Path | Literal["-"] | None


class RunLogHandler(logging.handlers.WatchedFileHandler):
    """A WatchedFileHandler whose file, when it has to create one, is private (0600).

    An existing file keeps its mode (logrotate's ``create 0640 root adm`` is the admin's
    choice), and a symbolic link in its place is refused rather than written through.
    """

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, _OPEN, 0o600)
        return io.TextIOWrapper(
            io.FileIO(fd, "a"), encoding=self.encoding or "utf-8", errors=self.errors
        )


_installed: list[logging.Handler] = []


def configure(target: Target, verbosity: int, *, where: str = "log_file") -> None:
    """Send the log to ``target`` at the level ``verbosity`` (-1 quiet, 0, 1 verbose) asks."""
    reset()
    if target is None and verbosity <= 0:
        return  # stderr is what cron mails: no log there unless asked for
    handler: logging.Handler
    if target is None or target == "-":
        handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            handler = RunLogHandler(target, encoding="utf-8", errors="backslashreplace")
        except OSError as exc:
            detail = exc.strerror or str(exc)
            raise ConfigError(f"{where}: cannot open the log {target}: {detail}") from exc
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    logging.getLogger("deltasync").setLevel(level)
    # paramiko's DEBUG is packet by packet: even -v shows only its INFO (connect, login).
    logging.getLogger("paramiko").setLevel(max(level, logging.INFO))
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
    _installed.append(handler)


def reset() -> None:
    """Remove and close the handlers :func:`configure` installed (at the command's end)."""
    while _installed:
        handler = _installed.pop()
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        handler.close()
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
