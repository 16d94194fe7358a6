"""Alma user XML extracts (.xml, .xml.gz, a .zip of .xml files), read two ways.

The fast way cuts each document into record slices with the byte scanner and hashes each
slice's bytes; a record is parsed only when someone asks for its element, in the context of
its document (the XML declaration and the root's start tag), so that it parses exactly as the
full parse would read it. When the scanner steps aside, or a slice does not parse as one
``<user>`` on its own, the caller reads the file again the full way: lxml's streaming parse of
the whole document, which also gives the precise error for a broken file.
"""

from __future__ import annotations

import gzip
import mmap
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, cast

import xxhash
from lxml import etree

from ..canonical import SAFE_PARSING, strip_formatting
from ..extract import (
    EMPTY_ZIP_MAGIC,
    GZIP_MAGIC,
    ZIP_MAGIC,
    Progress,
    _check_member,
    _suspect,
    read_records,
)
from .record import Record
from .scanner import Prolog, SliceScanner, StepAside

CHUNK = 1 << 23
"""Bytes read at a time from a compressed extract."""
PROGRESS_EVERY = 4096
"""Records between two progress reports."""
_UTF8_NAMES = {"utf-8", "utf8"}


class XmlExtract:
    """One extract file of Alma user XML."""

    def __init__(
        self,
        path: Path,
        *,
        encoding: str = "utf-8",
        seed: bytes = b"",
        progress: Progress | None = None,
    ) -> None:
        self.path = path
        self.encoding = encoding.lower()
        self.seed = seed
        """What else gives the bytes their meaning (the recipe, the checks): part of every
        raw digest, so a change of either makes every record look unread."""
        self.progress = progress
        self._utf8 = self.encoding.replace("_", "-") in _UTF8_NAMES

    @property
    def name(self) -> str:
        """The extract's path, for messages."""
        return str(self.path)

    def records(self, *, fast: bool = True) -> Iterator[Record]:
        """Every top-level ``<user>`` record, in file order.

        With ``fast``, records carry their raw bytes and digest and are parsed on demand;
        :class:`StepAside` (from the iteration or from :meth:`Record.element`) means this
        file must be read again with ``fast=False``, which raises
        :class:`~deltasync.errors.ExtractError` for a file that is broken.
        """
        if not fast:
            for found in read_records(self.path, self.progress, self.encoding):
                yield Record(
                    found.source, element=found.element, line=found.line, plain=found.plain
                )
            return
        with ExitStack() as stack:
            try:
                raw = stack.enter_context(self.path.open("rb"))
                magic = raw.read(4)
                raw.seek(0)
                if magic.startswith(ZIP_MAGIC) or magic.startswith(EMPTY_ZIP_MAGIC):
                    yield from self._zip(raw)
                    return
                if magic.startswith(GZIP_MAGIC):
                    stream = cast(
                        IO[bytes], stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
                    )
                    yield from self._document(self.name, 0, _chunks(stream), raw.tell)
                    return
                if not magic:
                    raise StepAside("the file is empty", 0)
                mapped = stack.enter_context(mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ))
                yield from self._document(self.name, 0, [mapped], None)
            except (OSError, EOFError, zlib.error, zipfile.BadZipFile, ValueError) as exc:
                # The full parse says precisely what is wrong with the file.
                raise StepAside(f"cannot read the file: {exc}", 0) from exc

    def _zip(self, raw: IO[bytes]) -> Iterator[Record]:
        with zipfile.ZipFile(raw) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            for info in infos:
                _check_member(self.path, info)
            members = sorted(
                i.filename
                for i in infos
                if i.filename.lower().endswith(".xml") and not i.filename.startswith("__MACOSX/")
            )
            if not members or len(set(members)) != len(members):
                raise StepAside("the zip holds no .xml file, or one name twice", 0)
            for number, member in enumerate(members):
                with archive.open(member) as stream:
                    yield from self._document(
                        f"{self.path}!{member}", number, _chunks(stream), raw.tell
                    )

    def _document(
        self,
        source: str,
        number: int,
        chunks: Iterator[bytes] | list[mmap.mmap],
        position: Callable[[], int] | None,
    ) -> Iterator[Record]:
        scanner = SliceScanner(chunks)  # type: ignore[arg-type]
        reader: _SliceReader | None = None
        count = 0
        for piece in scanner.slices():
            if reader is None:
                assert scanner.prolog is not None
                reader = _SliceReader(self, scanner.prolog, scanner.line_of)
            yield Record(
                source,
                raw=piece.raw,
                raw_digest=xxhash.xxh3_128_digest(piece.raw, seed=reader.seed),
                document=number,
                offset=piece.offset,
                parse=reader.parse,
                locate=scanner.line_of,
                plain=self._utf8 and not _suspect(piece.raw),
            )
            count += 1
            if self.progress is not None and count % PROGRESS_EVERY == 0:
                self.progress(position() if position is not None else piece.offset)
        if count == 0:
            raise StepAside("the document holds no <user> records", 0)


class _SliceReader:
    """Parses the slices of one document as the full parse would read them."""

    def __init__(self, extract: XmlExtract, prolog: Prolog, locate: Callable[[int], int]) -> None:
        if extract._utf8:
            if prolog.encoding is not None and prolog.encoding.lower() not in _UTF8_NAMES:
                raise StepAside(f"the file declares encoding {prolog.encoding}", 0)
            self.parser = etree.XMLParser(**SAFE_PARSING)
        else:
            self.parser = etree.XMLParser(encoding=extract.encoding, **SAFE_PARSING)
        self.utf8 = extract._utf8
        self.prefix = prolog.text
        self.suffix = b"</" + prolog.root_name + b">"
        self.prefix_lines = prolog.text.count(b"\n")
        self.locate = locate
        self.seed = xxhash.xxh3_64_intdigest(
            b"\x00".join([extract.seed, extract.encoding.encode(), prolog.root])
        )

    def parse(self, record: Record) -> etree._Element:
        raw = record.raw
        assert raw is not None
        if self.utf8:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise StepAside("bytes that are not UTF-8", record.offset) from None
        try:
            root = etree.fromstring(self.prefix + raw + self.suffix, self.parser)
        except etree.XMLSyntaxError:
            raise StepAside("a record that does not parse on its own", record.offset) from None
        user = root[0] if len(root) == 1 else None
        if (
            user is None
            or user.tag != "user"
            or (root.text or "").strip()
            or (user.tail or "").strip()
            or any(True for _ in user.iter(etree.Entity))
        ):
            raise StepAside("a slice that is not exactly one <user> record", record.offset)
        # lxml keeps line numbers in 16 bits where it can be told them: the record says how
        # far its elements' lines are from the file's instead.
        record.line_shift = self.locate(record.offset) - 1 - self.prefix_lines
        return strip_formatting(user)


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return
        yield chunk
