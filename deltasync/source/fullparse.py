"""The full parse of an XML extract: lxml's streaming parse of every record.

Memory stays flat whatever the size of the extract: each record is handed to the caller and
freed before the next is parsed. The parser never expands entities, never loads a DTD and never
touches the network, so a hostile file cannot read local files or blow up memory. A broken
file stops here with the precise error: its code, and the line and column.
"""

from __future__ import annotations

import codecs
import gzip
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, cast

from lxml import etree

from ..errors import ExtractError
from ..userxml import SAFE_PARSING, source_line, strip_formatting
from .characters import suspect
from .files import BOM, Container, Progress, container, open_member, open_zip, zip_documents
from .record import Record

USER_TAG = "{*}user"


def read_records(
    path: Path, progress: Progress | None = None, encoding: str = "utf-8"
) -> Iterator[Record]:
    """Yield every ``<user>`` record of the extract at ``path``, under any root element.

    Alma reads UTF-8 only, so bytes that are not UTF-8 stop the read at their offset, unless
    the feed declares ``encoding = "cp1252"`` to transcode on purpose. The caller must be done
    with a record before asking for the next: its element is cleared.
    """
    with ExitStack() as stack:
        try:
            raw = stack.enter_context(path.open("rb"))
            kind = container(raw)
        except OSError as exc:
            raise ExtractError(f"{path}: cannot read extract: {exc.strerror}") from exc
        records: Iterator[Record]
        if kind is Container.ZIP:
            records = _read_zip(path, raw, progress, encoding)
        elif kind is Container.GZIP:
            stream = cast(IO[bytes], stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb")))
            records = _parse(stream, str(path), raw, progress, encoding)
        else:
            records = _parse(raw, str(path), raw, progress, encoding)
        count = 0
        for count, record in enumerate(records, start=1):  # noqa: B007
            yield record
        if count == 0:
            # Never "every patron departed": an extract without records is a broken export.
            raise ExtractError(
                f"{path}: the file holds no <user> records (a broken or empty export?)",
                code="file-no-users",
            )


def _read_zip(
    path: Path, raw: IO[bytes], progress: Progress | None, encoding: str
) -> Iterator[Record]:
    with open_zip(path, raw) as archive:
        for member in zip_documents(path, archive):
            with open_member(path, archive, member) as stream:
                yield from _parse(stream, f"{path}!{member.filename}", raw, progress, encoding)


class _Utf8Guard:
    """A byte stream that checks, as the parser reads it, that it is UTF-8 without a BOM."""

    def __init__(self, inner: IO[bytes], source: str) -> None:
        self.inner = inner
        self.source = source
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.offset = 0
        self.content = False
        self.lines = 1
        self.eof = False
        self.suspect = False
        self.carry = b""

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        if self.offset == 0 and data.startswith(BOM):
            raise ExtractError(
                f"{self.source}: starts with a byte-order mark (EF BB BF); save it as UTF-8 "
                "without BOM",
                code="file-bom",
            )
        try:
            self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            at = self.offset + exc.start
            bad = data[exc.start : exc.start + 4]
            hint = ""
            if bad[:1] == b"\xed" and len(bad) > 1 and 0xA0 <= bad[1] <= 0xBF:
                hint = "; it is an encoded UTF-16 surrogate (CESU-8 or Java's modified UTF-8)"
            elif _is_cp1252(bad[:1]):
                hint = (
                    '; it looks like Windows-1252 (set encoding = "cp1252" on the feed to '
                    "transcode it on purpose)"
                )
            raise ExtractError(
                f"{self.source}: not UTF-8 at byte offset {at} (bytes {bad.hex(' ')}){hint}",
                code="file-not-utf8",
            ) from exc
        if not self.suspect:
            # The bytes of U+007F-U+009F and U+FFFD in UTF-8, or "&#" (a reference could
            # name one); carry two bytes so a sequence split between reads is seen.
            self.suspect = suspect(self.carry + data)
            self.carry = data[-2:]
        self.content = self.content or bool(data.strip())
        self.offset += len(data)
        self.lines += data.count(b"\n")
        self.eof = self.eof or not data
        return data

    def ended_at(self, line: int) -> bool:
        """Whether a parse error on ``line`` is where the data ran out (a truncated file)."""
        return self.eof and line >= self.lines - (1 if self.offset and self.lines > 1 else 0)


def _parse(
    stream: IO[bytes], source: str, raw: IO[bytes], progress: Progress | None, encoding: str
) -> Iterator[Record]:
    guard: _Utf8Guard | None = None
    if encoding.lower().replace("-", "") == "utf8":
        guard = _Utf8Guard(stream, source)
        events = etree.iterparse(guard, events=("end",), tag=USER_TAG, **SAFE_PARSING)
    else:
        events = etree.iterparse(
            stream, events=("end",), tag=USER_TAG, encoding=encoding, **SAFE_PARSING
        )
    try:
        for _event, element in events:
            if _inside_user(element):
                continue  # a <user> nested in a record belongs to that record
            for entity in element.iter(etree.Entity):
                # Never expanded, so the record would silently lose the value: refuse it.
                raise ExtractError(
                    f"{source}: line {entity.sourceline}: entity reference {entity.text} is "
                    "not allowed; deltasync never expands DTD entities (write the character "
                    "itself or a numeric reference)",
                    code="xml-entity",
                )
            plain = guard is not None and not guard.suspect
            yield Record(
                source,
                element=strip_formatting(element),
                line=source_line(element),
                plain=plain,
            )
            # Free the record and everything before it: memory stays flat.
            element.clear(keep_tail=False)
            parent = element.getparent()
            if parent is not None:
                while element.getprevious() is not None:
                    del parent[0]
            if progress is not None:
                progress(raw.tell())
    except etree.XMLSyntaxError as exc:
        if guard is not None and not guard.content:
            raise ExtractError(f"{source}: the file is empty", code="file-empty") from exc
        line, column = exc.position
        hint = ""
        if any(s in exc.msg for s in ("amplification", "not defined", "entity reference loop")):
            code = "xml-entity"
        elif any(s in exc.msg for s in _FORBIDDEN_CHAR_MESSAGES):
            code = "xml-char"
            hint = _char_hint(exc.msg)
        elif "Premature end" in exc.msg or (guard is not None and guard.ended_at(line)):
            code, hint = "xml-truncated", " (the file ends too early: truncated?)"
        else:
            code = "xml-malformed"
            if "EntityRef" in exc.msg:
                hint = " (an unescaped '&': write it as &amp;)"
        # libxml2 repeats the position at the end of its message; say it once.
        message = re.sub(r",? line \d+, column \d+\s*$", "", exc.msg.strip())
        raise ExtractError(
            f"{source}: line {line}, column {column}: {message}{hint}", code=code
        ) from exc
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        # A corrupt or truncated .gz or .zip: the compressed data does not decode.
        raise ExtractError(
            f"{source}: cannot read extract (corrupt or truncated?): {exc}", code="file-corrupt"
        ) from exc


def _inside_user(element: etree._Element) -> bool:
    parent = element.getparent()
    while parent is not None:
        if etree.QName(parent).localname == "user":
            return True
        parent = parent.getparent()
    return False


_FORBIDDEN_CHAR_MESSAGES = (
    "invalid Char value",
    "invalid xmlChar value",
    "invalid character in attribute value",
    "out of allowed range",
)


def _char_hint(message: str) -> str:
    found = re.search(r"value (\d+)", message)
    if found is None:
        return " (a character XML 1.0 forbids, such as a control character)"
    value = int(found.group(1))
    if 0xD800 <= value <= 0xDFFF:
        return f" (U+{value:04X} is half of a UTF-16 surrogate pair: an unpaired surrogate)"
    return f" (U+{value:04X} is a character XML 1.0 forbids; remove it in the SIS export)"


def _is_cp1252(data: bytes) -> bool:
    try:
        return data.decode("cp1252").isprintable()
    except UnicodeDecodeError:
        return False
