"""A consistent copy of a SQLite store, taken while runs may be writing to it.

SQLite's online backup API copies the database page by page from one read transaction, so the
copy is the store as of one moment even if a run commits meanwhile (WAL lets both proceed).
The copy is written under a temporary name with mode 0600 and renamed when complete: it holds
the same personal data as the store. PostgreSQL stores are backed up with ``pg_dump`` (README).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..errors import StoreError
from .engine import PRIVATE_FILE_MODE
from .store import Store


def backup(store: Store, target: Path) -> int:
    """Copy the SQLite store to ``target`` (a new file); returns its size in bytes."""
    if store.engine.url.get_backend_name() != "sqlite":
        raise StoreError(
            "backup copies SQLite stores; back up PostgreSQL with pg_dump (see README: State store)"
        )
    if target.exists():
        raise StoreError(f"{target} exists; deltasync never overwrites a backup")
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE_MODE)
        os.close(fd)
        raw = store.engine.raw_connection()
        try:
            source = raw.driver_connection
            assert isinstance(source, sqlite3.Connection)
            destination = sqlite3.connect(temporary)
            try:
                source.backup(destination)
            finally:
                destination.close()
        finally:
            raw.close()
        os.chmod(temporary, PRIVATE_FILE_MODE)
        os.replace(temporary, target)
    except (OSError, sqlite3.Error) as exc:
        temporary.unlink(missing_ok=True)
        raise StoreError(f"cannot back up the store to {target}: {exc}") from exc
    return target.stat().st_size
