"""Delta files in a feed's outbox: zipped Alma user XML, written atomically.

A delta file is a zip of XML parts, each ``<users>`` with at most ``records_per_part`` records
(Alma reads at most 50 XML files per zip). It is written under a hidden temporary name and
renamed into place only when complete, so nothing ever picks up half a file. The bytes depend
only on the records and the batch's time, so a batch can be rebuilt identically.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import OutboxError

MAX_PARTS_PER_ZIP = 50
XML_HEADER = b'<?xml version="1.0" encoding="UTF-8"?>\n<users>\n'
XML_FOOTER = b"</users>\n"
ORPHANS = ".orphaned"
_NAME = re.compile(r"^(?P<feed>[A-Za-z0-9][A-Za-z0-9_-]*)_(?P<seq>\d{6,})_\d{8}T\d{6}Z\.zip$")


@dataclass(frozen=True)
class DeltaFile:
    """A delta file written to the outbox, not yet published under its final name."""

    path: Path
    temporary: Path
    sha256: str
    size: int
    parts: int
    records: int


def file_name(feed: str, seq: int, created_at: dt.datetime) -> str:
    """``<feed>_<seq:06d>_<UTC yyyymmddThhmmssZ>.zip``."""
    stamp = created_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{feed}_{seq:06d}_{stamp}.zip"


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
    temporary = outbox / f".{name}.tmp"
    stem = name.removesuffix(".zip")
    stamp = created_at.astimezone(dt.UTC)
    date_time = (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
    written = 0
    try:
        outbox.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as raw:
            with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
                iterator = iter(records)
                for part in range(1, parts + 1):
                    info = zipfile.ZipInfo(f"{stem}_part{part:02d}.xml", date_time=date_time)
                    info.compress_type = zipfile.ZIP_DEFLATED
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
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutboxError(f"{final}: cannot write delta file: {exc.strerror or exc}") from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sha256, size = _digest(temporary)
    return DeltaFile(final, temporary, sha256, size, parts, written)


def publish(delta: DeltaFile) -> None:
    """Give a written delta file its final name, atomically."""
    try:
        os.replace(delta.temporary, delta.path)
        _fsync_dir(delta.path.parent)
    except OSError as exc:
        raise OutboxError(f"{delta.path}: cannot publish delta file: {exc.strerror}") from exc


def discard(delta: DeltaFile) -> None:
    """Remove a delta file whose batch was not recorded, under either name."""
    delta.temporary.unlink(missing_ok=True)
    delta.path.unlink(missing_ok=True)


def sweep(outbox: Path, feed: str, known: set[str]) -> list[Path]:
    """Set aside files a crashed run left behind: temporaries and zips the store never recorded.

    Unknown zips are moved to ``.orphaned/``, not deleted: nothing is lost, and the next batch
    can reuse the sequence number without Alma ever seeing the orphan.
    """
    if not outbox.is_dir():
        return []
    moved: list[Path] = []
    for entry in outbox.iterdir():
        if entry.name.startswith(f".{feed}_") and entry.name.endswith(".zip.tmp"):
            entry.unlink(missing_ok=True)
            continue
        match = _NAME.match(entry.name)
        if match is None or match.group("feed") != feed or entry.name in known:
            continue
        target_dir = outbox / ORPHANS
        target_dir.mkdir(exist_ok=True)
        target = target_dir / entry.name
        os.replace(entry, target)
        moved.append(target)
    return moved


def _digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
