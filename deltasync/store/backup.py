"""A consistent copy of a SQLite store, taken while runs may be writing to it.

SQLite's online backup API copies the database page by page from one read transaction, so the
copy is the store as of one moment even if a run commits meanwhile (WAL lets both proceed).
The copy is written under an unpredictable temporary name with mode 0600 and put in place
when complete, never over an existing file: it holds the same personal data as the store.
A backup that was killed leaves its temporary file behind; the next backup into the same
folder removes it, recognising a dead one by its lock (a backup holds an ``flock`` on its
temporary file while it writes). PostgreSQL stores are backed up with ``pg_dump`` (README).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
from pathlib import Path

from .. import safefiles
from ..errors import StoreError
from .store import Store


def backup(store: Store, target: Path) -> int:
    """Copy the SQLite store to ``target`` (a new file); returns its size in bytes."""
    if store.engine.url.get_backend_name() != "sqlite":
        raise StoreError(
            "backup copies SQLite stores; back up PostgreSQL with pg_dump (see README: State store)"
        )
    if os.path.lexists(target):
        raise StoreError(f"{target} exists; deltasync never overwrites a backup")
    try:
        _remove_stale(target)
        temporary, fd = safefiles.create(target.parent, f".{target.name}.", ".tmp")
    except OSError as exc:
        raise StoreError(f"cannot back up the store to {target}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # in use: no other backup takes it for a dead one's
        if os.fstat(fd).st_nlink == 0:  # taken for one in the instant before the lock
            raise OSError(f"{temporary} was removed by another backup; run it again")
        _copy(store, temporary)
        safefiles.place(temporary, target)
    except FileExistsError:
        safefiles.remove_quietly(temporary)
        raise StoreError(f"{target} exists; deltasync never overwrites a backup") from None
    except (OSError, sqlite3.Error) as exc:
        safefiles.remove_quietly(temporary)
        raise StoreError(f"cannot back up the store to {target}: {exc}") from exc
    finally:
        os.close(fd)
    return target.stat().st_size


def _copy(store: Store, temporary: Path) -> None:
    raw = store.engine.raw_connection()
    try:
        source = raw.driver_connection
        assert isinstance(source, sqlite3.Connection)
        destination = sqlite3.connect(temporary)
        try:
            # A scratch copy needs no journal: if the backup dies, the file is thrown away.
            destination.execute("PRAGMA journal_mode = OFF")
            source.backup(destination)
        finally:
            destination.close()
    finally:
        raw.close()


def _remove_stale(target: Path) -> None:
    """Remove the temporary files that killed backups to ``target`` left in its folder."""
    # Ours: .NAME.<token>.tmp, or .NAME.tmp from versions before the token.
    ours = re.compile(rf"\.{re.escape(target.name)}(?:\.{safefiles.TOKEN.pattern})?\.tmp")
    with os.scandir(target.parent) as entries:
        names = [
            e.name for e in entries if ours.fullmatch(e.name) and e.is_file(follow_symlinks=False)
        ]
    for name in names:
        path = target.parent / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone meanwhile, or not ours to open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a backup at work
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        finally:
            os.close(fd)
