"""CSV extracts (plain, .gz, or a .zip of CSV files): the source of the ``csv`` kind.

Python's ``csv`` module reads the rows (any delimiter, quoting as it reads it, a header row
naming the columns), in the mapping's ``[csv]`` encoding: UTF-8 (a byte-order mark, as Excel
writes it, is skipped), cp1252 or latin-1, transcoded on purpose. A row that cannot be read as
the header's columns — a wrong number of fields, an unbalanced quote — is a record finding
(``row-bad``) with its line, not the end of the run: after an unbalanced quote the reading
starts again on the next line.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import zipfile
import zlib
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, cast

from ..checks.settings import CheckSettings
from ..errors import ExtractError
from ..mapping.spec import Mapping
from .files import Container, Progress, container, open_member, open_zip, zip_documents
from .record import Record
from .rows import RowRecords

SUFFIXES = (".csv", ".tsv", ".txt", ".psv")
"""The members of a zip that are read as CSV files."""
PROGRESS_ROWS = 5_000
BLOCK = 1 << 20
"""Bytes read at a time."""


class CsvExtract:
    """One CSV extract file, rendered through a mapping."""

    def __init__(
        self,
        path: Path,
        mapping: Mapping,
        settings: CheckSettings,
        *,
        seed: bytes = b"",
        progress: Progress | None = None,
    ) -> None:
        self.path = path
        self.mapping = mapping
        self.settings = settings
        self.seed = seed
        self.progress = progress

    @property
    def name(self) -> str:
        """The extract's path, for messages."""
        return str(self.path)

    def records(self, *, fast: bool = True) -> Iterator[Record]:
        """Every row, in file order (``fast`` changes nothing: there is one way to read)."""
        with ExitStack() as stack:
            try:
                raw = stack.enter_context(self.path.open("rb"))
            except OSError as exc:
                raise ExtractError(
                    f"{self.path}: cannot read extract: {exc.strerror}", code="file-unreadable"
                ) from exc
            try:
                kind = container(raw)
                if kind is Container.ZIP:
                    archive = stack.enter_context(open_zip(self.path, raw))
                    for member in zip_documents(self.path, archive, SUFFIXES):
                        with open_member(self.path, archive, member) as stream:
                            yield from self._document(
                                f"{self.path}!{member.filename}", stream, raw.tell
                            )
                elif kind is Container.GZIP:
                    stream = cast(
                        IO[bytes], stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
                    )
                    yield from self._document(self.name, stream, raw.tell)
                else:
                    yield from self._document(self.name, raw, raw.tell)
            except (EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile) as exc:
                raise ExtractError(
                    f"{self.path}: the compressed data does not decode: {exc}",
                    code="file-corrupt",
                ) from exc
            except OSError as exc:
                raise ExtractError(
                    f"{self.path}: cannot read extract: {exc.strerror or exc}",
                    code="file-unreadable",
                ) from exc

    def locate(self, raw_digests: set[bytes]) -> dict[bytes, list[str]]:
        """Where (``file, line N``) every row with one of these raw digests stands."""
        found: dict[bytes, list[str]] = defaultdict(list)
        saved, self.progress = self.progress, None
        try:
            for record in self.records():
                if record.raw_digest in raw_digests:
                    found[record.raw_digest].append(record.where)
        finally:
            self.progress = saved
        return found

    def _document(
        self, name: str, stream: IO[bytes], position: Callable[[], int]
    ) -> Iterator[Record]:
        encoding = self.mapping.csv.encoding
        lines = _Lines(_physical_lines(name, stream, encoding), encoding)
        yield from self._rows(name, lines, position)

    def _rows(self, name: str, lines: _Lines, position: Callable[[], int]) -> Iterator[Record]:
        options = self.mapping.csv
        delimiter, encoding = options.delimiter, options.encoding
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise ExtractError(
                f"{name}: the header row cannot be read: {exc}", code="source-columns"
            ) from None
        if header is None:
            raise ExtractError(f"{name}: the file is empty", code="file-empty")
        maker = RowRecords(
            name,
            [c.strip() for c in header],
            self.mapping,
            self.settings,
            self.seed,
            "csv-lines",
            utf8=encoding == "utf-8",
        )
        separator = delimiter.encode(encoding)
        # A line without a quote is a row of its own whose values are its text cut at each
        # delimiter, just as the csv module would read it: such a row is not even decoded
        # unless it is read in full. Every other row is the csv module's to read.
        bytewise = not any(c in separator for c in b'"\r\n')
        separators = maker.width - 1

        def split(raw: bytes) -> list[str]:
            return raw.decode(encoding).split(delimiter)

        row = 0
        progress = self.progress
        while True:
            start = lines.number + 1
            raw = lines.take()
            if raw is None:
                break
            content = raw.rstrip(b"\r\n")  # a line has one line end, at its end
            if bytewise and b'"' not in content:
                if not content:
                    continue  # a blank line
                row += 1
                if content.count(separator) == separators:
                    yield maker.split(content, start, row, split)
                else:
                    yield maker.record(split(content), start, row)  # a finding: the count
            else:
                lines.replay([raw], start - 1)
                lines.taken.clear()
                try:
                    values = next(reader)
                except csv.Error as exc:
                    row += 1
                    yield self._unreadable(maker, lines, start, row, str(exc))
                    reader = csv.reader(lines, delimiter=delimiter, strict=True)
                    continue
                if not values:
                    continue  # a blank line
                row += 1
                whole = b"".join(lines.taken).rstrip(b"\r\n")
                yield maker.record(values, start, row, raw=whole)
            if progress is not None and row % PROGRESS_ROWS == 0:
                progress(position())
        if row == 0:
            raise ExtractError(
                f"{name}: the file holds no rows below its header", code="file-no-users"
            )
        if progress is not None:
            progress(position())

    def _unreadable(
        self, maker: RowRecords, lines: _Lines, start: int, row: int, reason: str
    ) -> Record:
        """The row starting on ``start`` does not parse (an unbalanced quote reads on to the
        end of the file): its first line is the bad row; the lines after it are read again."""
        taken = list(lines.taken)
        first = taken[0].decode(lines.encoding) if taken else ""
        lines.replay(taken[1:], start)
        values = next(csv.reader([first], delimiter=self.mapping.csv.delimiter), [])
        return maker.bad(values, start, row, f"row {row}: the row cannot be read ({reason})")


def _physical_lines(name: str, stream: IO[bytes], encoding: str) -> Iterator[bytes]:
    """The lines of a CSV document, each with its line end, cut where universal newlines
    cut them (LF, CRLF or CR, as Python's text files with ``newline=""``); a UTF-8 byte-order
    mark at the start, as Excel writes it, is dropped. The bytes are checked to be
    ``encoding`` a block at a time, before any line of the block is given out."""
    rest = b""
    bom = encoding == "utf-8"
    before = 0
    """Lines given out so far."""
    while True:
        block = stream.read(BLOCK)
        data = rest + block if rest else block
        if bom and (len(data) >= len(codecs.BOM_UTF8) or not block):
            bom = False
            data = data.removeprefix(codecs.BOM_UTF8)
        if not block:
            chunk, rest = data, b""
        else:
            # Up to the last line end, unless it is a CR whose LF may be still to come.
            end = len(data) - 1 if data.endswith(b"\r") else len(data)
            cut = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end)) + 1
            chunk, rest = data[:cut], data[cut:]
        if chunk:
            _check_encoding(name, chunk, encoding, before)
            found = chunk.splitlines(keepends=True)
            before += len(found)
            yield from found
        if not block:
            return


def _check_encoding(name: str, chunk: bytes, encoding: str, before: int) -> None:
    if encoding == "latin-1" or chunk.isascii():
        return  # every byte is a latin-1 character
    try:
        chunk.decode(encoding)
    except UnicodeDecodeError as exc:
        head = chunk[: exc.start]
        line = before + len(head.splitlines()) + (1 if head.endswith((b"\n", b"\r")) else 0)
        raise ExtractError(
            f"{name}: bytes that are not {encoding} on line {max(line, before + 1)}; "
            "set encoding in the mapping's [csv] table (cp1252 for Windows files)",
            code="file-not-utf8",
        ) from None


class _Lines:
    """The physical lines of a CSV document, counted. The rows' reader takes them as bytes;
    the csv module, for a row it reads, as text, and the lines of that row are kept
    (``taken``) so that they can be read again."""

    def __init__(self, lines: Iterator[bytes], encoding: str) -> None:
        self.lines = lines
        self.encoding = encoding
        self.number = 0
        """Lines consumed so far."""
        self.taken: list[bytes] = []
        self.pending: deque[bytes] = deque()

    def take(self) -> bytes | None:
        """The next line, or None at the end."""
        line = self.pending.popleft() if self.pending else next(self.lines, None)
        if line is not None:
            self.number += 1
        return line

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.take()
        if line is None:
            raise StopIteration
        self.taken.append(line)
        return line.decode(self.encoding)

    def replay(self, lines: list[bytes], consumed: int) -> None:
        """Read ``lines`` again next, as if only ``consumed`` lines had been read."""
        self.pending.extendleft(reversed(lines))
        self.number = consumed
