"""What went wrong with the state store's database, in words a person running cron can act on.

SQLAlchemy's own text repeats the driver's message, the SQL and a web link; the driver's is
terse. These messages say what happened and what to do, and never carry a record's values.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .engine import BUSY_TIMEOUT_SECONDS, safe_text, safe_url


def describe(exc: SQLAlchemyError, url: URL, *, doing: str = "state store") -> str:
    """A one-line message for ``exc``, raised while using the store at ``url``; it starts with
    ``doing`` and the store's URL (``cannot open state store sqlite:///…: …``)."""
    return f"{doing} {safe_url(url)}: {_reason(exc, url)}"


def _reason(exc: SQLAlchemyError, url: URL) -> str:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return (
            "lost the connection to the database server (was it restarted or stopped?); "
            "nothing that was not yet committed was kept: run the command again"
        )
    driver = safe_text(url, _driver_message(exc))  # a driver may quote the password
    if url.get_backend_name() == "sqlite" and url.database:
        return _sqlite(driver, Path(url.database)) or driver
    return driver


def _folder_not_writable(database: Path) -> str | None:
    """Why a SQLite store's folder is unusable (it cannot be written), or None."""
    folder = database.parent
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    return f"the folder {folder} must be writable (SQLite keeps its journal beside the database)"


def _sqlite(message: str, database: Path) -> str | None:
    lowered = message.lower()
    if "database is locked" in lowered or "database table is locked" in lowered:
        return (
            f"another deltasync process kept it locked for over {BUSY_TIMEOUT_SECONDS // 60} "
            "minutes; run again when it is done"
        )
    if "unable to open database file" in lowered or "readonly database" in lowered:
        folder = _folder_not_writable(database)
        if folder is not None:
            return folder
        return "the file must be writable by this user" if "readonly" in lowered else None
    if "file is not a database" in lowered:
        return "the file is not a SQLite database; check state.url"
    if "disk is full" in lowered:
        return "the disk is full"
    if "malformed" in lowered:
        return "the database file is damaged; restore it from a backup"
    return None


def _driver_message(exc: SQLAlchemyError) -> str:
    """The driver's own first line, without SQLAlchemy's SQL, parameters and web link."""
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).strip()
    first = text.splitlines()[0].strip() if text else type(exc).__name__
    return first.rstrip(".")
