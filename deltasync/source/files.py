"""Opening extract files: plain, gzip or a zip of several documents, checked before reading.

Both ways of reading an XML extract (the byte scanner and the full parse) open files here, so
a zip is checked the same way whichever reads it: no unsafe entry names, no zip bombs, no
encrypted members, no two members of one name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import IO, TypeVar

from ..errors import ExtractError

T = TypeVar("T")

Progress = Callable[[int], None]
"""Called with the number of bytes of the extract file consumed so far."""

BOM = b"\xef\xbb\xbf"
MAX_UNCOMPRESSED_BYTES = 4 * 1024**3
"""Alma's limit for one zip; larger content is refused before it is read."""
MAX_COMPRESSION_RATIO = 200
"""Real XML compresses 10-30 times; far beyond that is a zip bomb."""
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"


class Container(StrEnum):
    """How an extract file holds its document(s)."""

    PLAIN = "plain"
    GZIP = "gzip"
    ZIP = "zip"


def container(raw: IO[bytes]) -> Container:
    """What ``raw`` (at its start) is, by its first bytes; the position is kept."""
    magic = raw.read(4)
    raw.seek(0)
    if magic.startswith(ZIP_MAGIC) or magic.startswith(EMPTY_ZIP_MAGIC):
        return Container.ZIP
    if magic.startswith(GZIP_MAGIC):
        return Container.GZIP
    return Container.PLAIN


HASH_BLOCK = 8 << 20
"""Bytes hashed at a time. Large: a thread hashing beside a busy one waits for the
interpreter lock between blocks (up to 5 ms each), so small blocks would make it slow."""


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in blocks into one buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    try:
        with path.open("rb", buffering=0) as handle:
            while read := handle.readinto(buffer):
                digest.update(view[:read])
    except OSError as exc:
        raise ExtractError(f"{path}: cannot read extract: {exc.strerror}") from exc
    return digest.hexdigest()


def in_background(work: Callable[[], T]) -> Callable[[], T]:
    """Start ``work`` in a thread of its own; call the result for its value (or its error).

    For the SHA-256 of an extract: hashlib lets go of the interpreter lock while it hashes a
    block, so on a machine of two cores the run reads and diffs the file while the hash of the
    same file is worked out beside it (a third of a day-1 run's time before).
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deltasync")
    future = pool.submit(work)
    pool.shutdown(wait=False)
    return future.result


def modified_at(path: Path) -> dt.datetime:
    """The file's modification time, exact to the microsecond (as the store keeps it)."""
    try:
        ns = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise ExtractError(f"{path}: cannot read extract: {exc.strerror}") from exc
    seconds, micros = divmod(ns // 1000, 1_000_000)
    return dt.datetime.fromtimestamp(seconds, dt.UTC).replace(microsecond=micros)


def open_zip(path: Path, raw: IO[bytes]) -> zipfile.ZipFile:
    """The zip archive ``raw`` holds; ExtractError when it is not a readable one."""
    try:
        return zipfile.ZipFile(raw)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ExtractError(f"{path}: not a readable zip file: {exc}", code="zip-corrupt") from exc


def zip_documents(
    path: Path, archive: zipfile.ZipFile, suffixes: tuple[str, ...] = (".xml",)
) -> list[zipfile.ZipInfo]:
    """The members of an extract zip whose names end in one of ``suffixes`` (.xml), in name
    order, after every check."""
    infos = [i for i in archive.infolist() if not i.is_dir()]
    for info in infos:
        _check_member(path, info)
    members = sorted(
        (
            info
            for info in infos
            if info.filename.lower().endswith(suffixes)
            and not info.filename.startswith("__MACOSX/")
        ),
        key=lambda info: info.filename,
    )
    _check_members(path, members)
    if not members:
        if suffixes != (".xml",):
            names = " or ".join(suffixes)
            raise ExtractError(f"{path}: the zip file holds no {names} file", code="zip-no-xml")
        raise ExtractError(f"{path}: the zip file holds no .xml file", code="zip-no-xml")
    total = sum(i.file_size for i in infos)
    if total > MAX_UNCOMPRESSED_BYTES:
        raise ExtractError(
            f"{path}: the zip file unpacks to {total} bytes, over the "
            f"{MAX_UNCOMPRESSED_BYTES} Alma accepts",
            code="zip-too-large",
        )
    return members


def open_member(path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> IO[bytes]:
    """A stream of one member (by entry, not by name: names may repeat)."""
    try:
        return archive.open(member)
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
        raise ExtractError(
            f"{path}!{member.filename}: cannot open zip member: {exc}", code="zip-corrupt"
        ) from exc


def _check_members(path: Path, members: list[zipfile.ZipInfo]) -> None:
    """Refuse what zipfile would read wrongly or not at all, before reading any of it."""
    seen: set[str] = set()
    for info in members:
        if info.filename in seen:
            # zipfile finds a name's last entry only: the other would silently go unread.
            raise ExtractError(
                f"{path}: the zip file holds two members named {info.filename!r}; only one "
                "of them could be read: zip the extract again with distinct names",
                code="zip-duplicate-name",
            )
        seen.add(info.filename)
        if info.flag_bits & 0x1:
            raise ExtractError(
                f"{path}!{info.filename}: the zip member is encrypted; Alma cannot read it "
                "either: zip the extract without a password",
                code="zip-encrypted",
            )


def _check_member(path: Path, info: zipfile.ZipInfo) -> None:
    name = info.filename
    parts = name.replace("\\", "/").split("/")
    if (
        name.startswith(("/", "\\"))
        or ".." in parts
        or "\\" in name
        or re.match(r"[A-Za-z]:", name)
    ):
        raise ExtractError(
            f"{path}: zip entry {name!r} has an unsafe name (absolute, '..' or a backslash path)",
            code="zip-unsafe-name",
        )
    if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO:
        raise ExtractError(
            f"{path}: zip entry {name!r} unpacks {info.file_size // info.compress_size} times "
            f"its size (over {MAX_COMPRESSION_RATIO}): refusing a possible zip bomb",
            code="zip-too-large",
        )
