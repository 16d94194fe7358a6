"""Delta files in a feed's outbox: zipped Alma user XML, written atomically.

A delta file is a zip of XML parts, each ``<users>`` with at most ``records_per_part`` records
(Alma reads at most 50 XML files per zip). It is written under a hidden, unpredictable temporary
name and renamed into place only when complete, so nothing ever picks up half a file. Delta files
hold personal data: they are 0600 in a 0700 outbox. The bytes depend only on the records, the
batch's time and its name, so a batch can be rebuilt identically.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import re
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import safefiles
from ..errors import OutboxError

MAX_PARTS_PER_ZIP = 50
XML_HEADER = b'<?xml version="1.0" encoding="UTF-8"?>\n<users>\n'
XML_FOOTER = b"</users>\n"
ORPHANS = ".orphaned"
# The 8 hex digits make a name unique even when a store restored from a backup reuses sequence
# numbers; names without them (before they were added) are still deltasync's own.
_NAME = re.compile(
    r"^(?P<feed>[A-Za-z0-9][A-Za-z0-9_-]*)_(?P<seq>\d{6,})_\d{8}T\d{6}Z(?:_(?P<unique>[0-9a-f]{8}))?\.zip$"
)
# ``.NAME.<token>.tmp``; ``.NAME.tmp`` is what older versions left.
_TEMPORARY = re.compile(r"^\.(?P<name>.+\.zip)(?:\.[0-9a-f]{16})?\.tmp$")


@dataclass(frozen=True)
class DeltaFile:
    """A delta file written to the outbox, not yet published under its final name."""

    path: Path
    temporary: Path
    sha256: str
    size: int
    parts: int
    records: int


def file_name(feed: str, seq: int, created_at: dt.datetime, unique: str | None = None) -> str:
    """``<feed>_<seq:06d>_<UTC yyyymmddThhmmssZ>_<8 hex>.zip``; the hex part is random unless
    ``unique`` gives it."""
    stamp = created_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{feed}_{seq:06d}_{stamp}_{unique or safefiles.token()[:8]}.zip"


def is_delta_name(name: str, feed: str) -> bool:
    """Whether ``name`` is a delta file name of ``feed`` (either naming)."""
    match = _NAME.match(name)
    return match is not None and match.group("feed") == feed


def parts_needed(records: int, records_per_part: int) -> int:
    """How many XML parts ``records`` records fill."""
    return max(1, math.ceil(records / records_per_part))


def write(
    outbox: Path,
    name: str,
    records: Iterable[bytes],
    *,
    total: int,
    records_per_part: int,
    created_at: dt.datetime,
) -> DeltaFile:
    """Write ``total`` serialised ``<user>`` records into a zip under a temporary name."""
    parts = parts_needed(total, records_per_part)
    if parts > MAX_PARTS_PER_ZIP:
        raise OutboxError(
            f"the delta holds {total} records: more than {MAX_PARTS_PER_ZIP} parts of "
            f"{records_per_part}, the most Alma reads from one zip; raise records_per_part"
        )
    final = outbox / name
    stem = _member_stem(name)
    stamp = created_at.astimezone(dt.UTC)
    date_time = (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
    written = 0
    try:
        safefiles.make_dir(outbox)
        temporary, fd = safefiles.create(outbox, f".{name}.", ".tmp")
    except OSError as exc:
        raise _cannot_write(outbox, name, exc) from exc
    try:
        with open(fd, "wb") as raw:
            with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
                iterator = iter(records)
                for part in range(1, parts + 1):
                    info = zipfile.ZipInfo(f"{stem}_part{part:02d}.xml", date_time=date_time)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    # The mode recorded inside the zip, not the file's: part of the bytes that a
                    # rebuild must reproduce, so it stays as it always was.
                    info.external_attr = 0o644 << 16
                    with zf.open(info, "w") as out:
                        out.write(XML_HEADER)
                        for _ in range(min(records_per_part, total - written)):
                            out.write(next(iterator))
                            out.write(b"\n")
                            written += 1
                        out.write(XML_FOOTER)
            raw.flush()
            os.fsync(raw.fileno())
        sha256, size = _digest(temporary)
    except OSError as exc:
        safefiles.remove_quietly(temporary)
        raise _cannot_write(outbox, name, exc) from exc
    except BaseException:
        safefiles.remove_quietly(temporary)
        raise
    return DeltaFile(final, temporary, sha256, size, parts, written)


def publish(delta: DeltaFile) -> None:
    """Give a written delta file its final name, atomically; never replaces a file."""
    try:
        safefiles.place(delta.temporary, delta.path)
        safefiles.fsync_dir(delta.path.parent)
    except FileExistsError as exc:
        safefiles.remove_quietly(delta.temporary)
        raise OutboxError(
            f"{delta.path}: a file of that name is already there; deltasync never overwrites "
            "a delta file"
        ) from exc
    except OSError as exc:
        raise OutboxError(f"{delta.path}: cannot publish delta file: {exc.strerror}") from exc


def discard(delta: DeltaFile) -> None:
    """Remove a delta file whose batch was not recorded, under either name."""
    safefiles.remove_quietly(delta.temporary)
    safefiles.remove_quietly(delta.path)


def check(path: Path, sha256: str) -> str | None:
    """Why the file at ``path`` is not the delta file with this SHA-256, or None when it is."""
    try:
        found, _size = _digest(path)
    except FileNotFoundError:
        return "the delta file is missing from the outbox"
    except OSError as exc:
        return f"the delta file cannot be read ({exc.strerror})"
    if found != sha256:
        return (
            f"the delta file differs from the one built (SHA-256 {found[:12]}… instead of "
            f"{sha256[:12]}…)"
        )
    return None


def sweep(outbox: Path, feed: str, known: set[str]) -> list[Path]:
    """Set aside files a crashed run left behind: temporaries and zips the store never recorded.

    Unknown zips are moved to ``.orphaned/``, not deleted: nothing is lost, and Alma never sees
    them. Retention deletes them after the window.
    """
    if not outbox.is_dir():
        return []
    moved: list[Path] = []
    try:
        for entry in sorted(outbox.iterdir()):
            temporary = _TEMPORARY.match(entry.name)
            if temporary is not None and is_delta_name(temporary.group("name"), feed):
                entry.unlink(missing_ok=True)
                continue
            if not is_delta_name(entry.name, feed) or entry.name in known:
                continue
            if not stat.S_ISREG(entry.lstat().st_mode):
                continue  # not a file deltasync wrote: not ours to move
            target_dir = outbox / ORPHANS
            safefiles.make_dir(target_dir)
            os.chmod(entry, safefiles.FILE_MODE)  # older versions wrote them 0644
            target = target_dir / entry.name
            try:
                safefiles.place(entry, target)
            except FileExistsError:
                target = target_dir / f"{entry.name}.{safefiles.token()}"
                safefiles.place(entry, target)
            moved.append(target)
    except OSError as exc:
        where = exc.filename or outbox
        raise OutboxError(
            f"{where}: cannot set aside what a crashed run left in the outbox: {exc.strerror}"
        ) from exc
    return moved


def _member_stem(name: str) -> str:
    """The name of the XML parts inside the zip: the file name without its random part, so the
    bytes depend only on the records and the batch's time."""
    match = _NAME.match(name)
    if match is None or match.group("unique") is None:
        return name.removesuffix(".zip")
    return name[: match.start("unique") - 1]


def _cannot_write(outbox: Path, name: str, exc: OSError) -> OutboxError:
    return OutboxError(f"{outbox}: cannot write delta file {name}: {exc.strerror or exc}")


def _digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size
