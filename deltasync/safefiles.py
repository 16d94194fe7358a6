"""Private files and folders for delta files, which hold personal data.

Temporary files get unpredictable names and are created with ``O_EXCL | O_NOFOLLOW``, so a
symlink planted where deltasync writes can never redirect the write to another file. Files are
0600 and folders 0700 whatever the umask, and a finished file is put in place without ever
replacing one that is already there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
TOKEN = re.compile(r"[0-9a-f]{16}")
"""The random part of a temporary name (see :func:`token`)."""

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# Where the filesystem has no hard links (some network shares) the no-replace check falls back
# to look-then-rename; deltasync's names are unpredictable, so only a stale file can be there.
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def token() -> str:
    """16 random hex digits, for temporary names nobody can guess in advance."""
    return secrets.token_hex(8)


def make_dir(folder: Path) -> None:
    """Create ``folder`` and any missing parents as 0700; an existing folder is left as it is."""
    missing: list[Path] = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs to set up
        # mkdir's mode is filtered by the umask; 0700 is the most it may be anyway.
        os.chmod(path, DIR_MODE)


def create(folder: Path, prefix: str, suffix: str) -> tuple[Path, int]:
    """A new empty file ``folder/<prefix><token><suffix>``, mode 0600; its path and a write fd."""
    path = folder / f"{prefix}{token()}{suffix}"
    fd = os.open(path, _CREATE, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may only remove bits, but say it plainly
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return path, fd


def place(temporary: Path, final: Path) -> None:
    """Give ``temporary`` the name ``final``; FileExistsError if something is there already.

    A hard link makes the check and the move one step, so nothing is ever overwritten.
    """
    try:
        os.link(temporary, final, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(final)) from None
        os.rename(temporary, final)
        return
    os.unlink(temporary)


def remove_quietly(path: Path) -> None:
    """Remove a file of ours during cleanup after another error, which must not be masked."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
