"""Reading SIS extracts: stream the ``<user>`` records of an .xml, .xml.gz or .zip file.

Memory stays flat whatever the size of the extract: each record is handed to the caller and
freed before the next is parsed. The parser never expands entities, never loads a DTD and never
touches the network, so a hostile file cannot read local files or blow up memory.
"""

from __future__ import annotations

import gzip
import hashlib
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from lxml import etree

from .canonical import SAFE_PARSING, strip_formatting
from .errors import ExtractError

Progress = Callable[[int], None]
"""Called with the number of bytes of the extract file consumed so far."""

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
USER_TAG = "{*}user"


@dataclass(frozen=True)
class SourceRecord:
    """One ``<user>`` element and where it stands in the extract."""

    element: etree._Element
    source: str
    line: int

    @property
    def where(self) -> str:
        """``file, line N`` for messages."""
        return f"{self.source}, line {self.line}"


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ExtractError(f"{path}: cannot read extract: {exc.strerror}") from exc
    return digest.hexdigest()


def read_records(path: Path, progress: Progress | None = None) -> Iterator[SourceRecord]:
    """Yield every ``<user>`` record of the extract at ``path``, under any root element.

    The caller must be done with a record before asking for the next: its element is cleared.
    """
    with ExitStack() as stack:
        try:
            raw = stack.enter_context(path.open("rb"))
            magic = raw.read(4)
            raw.seek(0)
        except OSError as exc:
            raise ExtractError(f"{path}: cannot read extract: {exc.strerror}") from exc
        if magic.startswith(ZIP_MAGIC) or magic.startswith(EMPTY_ZIP_MAGIC):
            yield from _read_zip(path, raw, progress)
        elif magic.startswith(GZIP_MAGIC):
            stream = cast(IO[bytes], stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")))
            yield from _parse(stream, str(path), raw, progress)
        else:
            yield from _parse(raw, str(path), raw, progress)


def _read_zip(path: Path, raw: IO[bytes], progress: Progress | None) -> Iterator[SourceRecord]:
    try:
        archive = zipfile.ZipFile(raw)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ExtractError(f"{path}: not a readable zip file: {exc}") from exc
    with archive:
        members = sorted(
            info.filename
            for info in archive.infolist()
            if not info.is_dir()
            and info.filename.lower().endswith(".xml")
            and not info.filename.startswith("__MACOSX/")
        )
        if not members:
            raise ExtractError(f"{path}: the zip file holds no .xml file")
        for member in members:
            try:
                stream = archive.open(member)
            except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:
                raise ExtractError(f"{path}!{member}: cannot open zip member: {exc}") from exc
            with stream:
                yield from _parse(stream, f"{path}!{member}", raw, progress)


def _parse(
    stream: IO[bytes], source: str, raw: IO[bytes], progress: Progress | None
) -> Iterator[SourceRecord]:
    events = etree.iterparse(
        stream,
        events=("end",),
        tag=USER_TAG,
        **SAFE_PARSING,
    )
    try:
        for _event, element in events:
            for entity in element.iter(etree.Entity):
                # Never expanded, so the record would silently lose the value: refuse it.
                raise ExtractError(
                    f"{source}: line {entity.sourceline}: entity reference {entity.text} is "
                    "not allowed; deltasync never expands DTD entities (write the character "
                    "itself or a numeric reference)"
                )
            yield SourceRecord(strip_formatting(element), source, element.sourceline or 0)
            # Free the record and everything before it: memory stays flat.
            element.clear(keep_tail=False)
            parent = element.getparent()
            if parent is not None:
                while element.getprevious() is not None:
                    del parent[0]
            if progress is not None:
                progress(raw.tell())
    except etree.XMLSyntaxError as exc:
        line, column = exc.position
        raise ExtractError(f"{source}: line {line}, column {column}: {exc.msg}") from exc
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        # A corrupt or truncated .gz or .zip: the compressed data does not decode.
        raise ExtractError(f"{source}: cannot read extract (corrupt or truncated?): {exc}") from exc
