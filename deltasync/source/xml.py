"""Alma user XML extracts (.xml, .xml.gz, a .zip of .xml files), read the fast way or in full.

The fast way cuts each document into record slices with the byte scanner and hashes each
slice's bytes; a record is parsed only when someone asks for its element, in the context of its
document (the XML declaration and the root's start tag), so it parses exactly as the full parse
reads it. When the scanner steps aside, or a slice does not parse as one ``<user>`` on its own,
the caller reads the file again in full (:mod:`fullparse`), which also gives the precise error
for a broken file.
"""

from __future__ import annotations

import gzip
import itertools
import mmap
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, cast

import xxhash
from lxml import etree

from ..userxml import SAFE_PARSING, mark_forbidden, strip_formatting
from .files import Container, Progress, container, open_member, open_zip, zip_documents
from .fullparse import read_records
from .record import Record, Slice
from .scanner import Prolog, SliceScanner, StepAside
from .undated import digest as undated_digest

CHUNK = 1 << 23
"""Bytes read at a time from a compressed extract."""
PROGRESS_BYTES = 1 << 20
"""Bytes of a document between two progress reports."""
RELEASE_BYTES = 8 << 20
"""How much of a mapped file is read before the pages behind the scanner are given back:
a mapped page counts toward the process's memory until it is, and a file may be gigabytes.
At 8 MiB instead of 32, a day-1 run's peak is 24 MB lower (143 → 119 MB at 100,000 patrons),
in no more time."""
_UTF8_NAMES = {"utf-8", "utf8"}

Chunks = Iterable[bytes] | Iterable[mmap.mmap]


class XmlExtract:
    """One extract file of Alma user XML: the source of the ``alma-xml`` kind."""

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
        """What else gives the bytes their meaning (the recipe, the fixes): part of every
        raw digest, so a change of either makes every record look unread."""
        self.progress = progress
        self.utf8 = self.encoding.replace("_", "-") in _UTF8_NAMES

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
        if fast:
            for raw_digest, offset, raw, document in self.slices():
                yield document.record(offset, raw, raw_digest)
        else:
            yield from read_records(self.path, self.progress, self.encoding)

    def locate(self, raw_digests: set[bytes]) -> dict[bytes, list[str]]:
        """Where (``file, line N``) every record with one of these raw digests stands: the
        copies of a record read only by its bytes, found again when a message must name them."""
        found: dict[bytes, list[str]] = defaultdict(list)
        saved, self.progress = self.progress, None
        try:
            for raw_digest, offset, raw, document in self.slices():
                # A patron's stored raw digest may be the undated one of its record.
                digest = raw_digest if raw_digest in raw_digests else document.undated(raw)
                if digest in raw_digests:
                    assert digest is not None
                    found[digest].append(document.record(offset, raw, digest).where)
        finally:
            self.progress = saved
        return found

    def slices(self) -> Iterator[Slice]:
        """The fast reading as slices, ``(raw digest, offset, raw, document)``: a record is
        made (:meth:`_Document.record`) only for a slice that needs more than its digest.
        Raises :class:`StepAside` as ``records`` does."""
        with ExitStack() as stack:
            try:
                raw = stack.enter_context(self.path.open("rb"))
                kind = container(raw)
                if kind is Container.ZIP:
                    archive = stack.enter_context(open_zip(self.path, raw))
                    for number, member in enumerate(zip_documents(self.path, archive)):
                        with open_member(self.path, archive, member) as stream:
                            yield from self._document(
                                f"{self.path}!{member.filename}",
                                number,
                                _chunks(stream),
                                raw.tell,
                            )
                elif kind is Container.GZIP:
                    stream = cast(
                        IO[bytes], stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
                    )
                    yield from self._document(self.name, 0, _chunks(stream), raw.tell)
                else:
                    if raw.read(1) == b"":
                        raise StepAside("the file is empty", 0)
                    mapped = stack.enter_context(
                        mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ)
                    )
                    yield from self._document(self.name, 0, [mapped], None, _releaser(mapped))
            except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
                # The full parse says precisely what is wrong with the file.
                raise StepAside(f"cannot read the file: {exc}", 0) from exc

    def _document(
        self,
        source: str,
        number: int,
        chunks: Chunks,
        position: Callable[[], int] | None,
        release: Callable[[int], None] | None = None,
    ) -> Iterator[Slice]:
        scanner = SliceScanner(cast(Iterable[bytes], chunks))
        slices = scanner.slices()
        first = next(slices, None)
        if first is None:
            raise StepAside("the document holds no <user> records", 0)
        assert scanner.prolog is not None
        reader = _SliceReader(self, scanner.prolog, scanner.line_of)
        document = _Document(source, number, reader, scanner, None if self.utf8 else False)
        # Once per record, and most records are only hashed: everything at hand in locals.
        seed = reader.seed
        hashed = xxhash.xxh3_128_digest
        progress = self.progress
        released = reported = 0
        for offset, raw in itertools.chain([first], slices):
            yield hashed(raw, seed=seed), offset, raw, document
            if release is not None and offset - released >= RELEASE_BYTES:
                released = offset
                release(released)
            if progress is not None and offset - reported >= PROGRESS_BYTES:
                reported = offset
                progress(position() if position is not None else offset)
        if progress is not None:
            progress(position() if position is not None else scanner.end)


def _releaser(mapped: mmap.mmap) -> Callable[[int], None] | None:
    """Gives back the pages of ``mapped`` before an offset the scanner has passed. They are
    the file's, unchanged: read again (counting lines, say) they come back from the file."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None:  # not every platform has it; the memory is then only counted, not lost
        return None

    def release(offset: int) -> None:
        length = offset - offset % mmap.PAGESIZE
        if length:
            mapped.madvise(advice, 0, length)

    return release


class _Document:
    """One document of an extract as the fast reader cuts it: makes the record of a slice."""

    __slots__ = ("locate", "number", "parse", "passed", "plain", "seed", "source")

    def __init__(
        self,
        source: str,
        number: int,
        reader: _SliceReader,
        scanner: SliceScanner,
        plain: bool | None,
    ) -> None:
        self.source = source
        self.number = number
        self.parse = reader.parse
        self.locate = scanner.line_of
        self.passed = scanner.passed
        """Told ``(offset, end, line ends)`` of a slice read by its digest alone."""
        self.plain = plain
        self.seed = reader.seed

    def undated(self, raw: bytes) -> bytes | None:
        """The slice's undated digest (:mod:`~deltasync.source.undated`), if it has one."""
        return undated_digest(raw, self.seed)

    def record(self, offset: int, raw: bytes, raw_digest: bytes | None) -> Record:
        """The record of the slice at ``offset`` (only while the reader is at it)."""
        return Record(
            self.source,
            raw=raw,
            raw_digest=raw_digest,
            document=self.number,
            offset=offset,
            parse=self.parse,
            locate=self.locate,
            plain=self.plain,
            passed=self.passed,
        )


class _SliceReader:
    """Parses the slices of one document as the full parse would read them."""

    def __init__(self, extract: XmlExtract, prolog: Prolog, locate: Callable[[int], int]) -> None:
        if extract.utf8:
            if prolog.encoding is not None and prolog.encoding.lower() not in _UTF8_NAMES:
                raise StepAside(f"the file declares encoding {prolog.encoding}", 0)
            self.parser = etree.XMLParser(**SAFE_PARSING)
        else:
            self.parser = etree.XMLParser(encoding=extract.encoding, **SAFE_PARSING)
        self.utf8 = extract.utf8
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
        if self.utf8 and not raw.isascii():  # ASCII is UTF-8, and a tenth of the cost to see
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise StepAside("bytes that are not UTF-8", record.offset) from None
        parsed = raw
        try:
            root = etree.fromstring(self.prefix + raw + self.suffix, self.parser)
        except etree.XMLSyntaxError:
            # A character XML forbids inside this record is the record's finding (marked
            # for the checks), not the file's: the rest of the extract goes out.
            marked = mark_forbidden(raw) if self.utf8 else None
            if marked is None:
                raise StepAside("a record that does not parse on its own", record.offset) from None
            parsed = marked
            try:
                root = etree.fromstring(self.prefix + marked + self.suffix, self.parser)
            except etree.XMLSyntaxError:
                raise StepAside("a record that does not parse on its own", record.offset) from None
            record.plain = False
        user = root[0] if len(root) == 1 else None
        if (
            user is None
            or user.tag != "user"
            or (root.text or "").strip()
            or (user.tail or "").strip()
            # An entity left unresolved: only a reference (``&``) makes one, and most records
            # hold none (the walk of the tree cost 5 µs of a record's 40).
            or (b"&" in parsed and any(True for _ in user.iter(etree.Entity)))
        ):
            raise StepAside("a slice that is not exactly one <user> record", record.offset)
        # lxml keeps line numbers in 16 bits where it can: the record says how far its
        # elements' lines are from the file's instead.
        record.line_shift = self.locate(record.offset) - 1 - self.prefix_lines
        return strip_formatting(user)


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return
        yield chunk
