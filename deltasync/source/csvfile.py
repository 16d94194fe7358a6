"""CSV extracts (plain, .gz, or a .zip of CSV files): the source of the ``csv`` kind.

Python's ``csv`` module reads the rows (any delimiter, quoting as it reads it, a header row
naming the columns), in the mapping's ``[csv]`` encoding: UTF-8 (a byte-order mark, as Excel
writes it, is skipped), cp1252 or latin-1, transcoded on purpose. A row that cannot be read as
the header's columns — a wrong number of fields, an unbalanced quote — is a record finding
(``row-bad``) with its line, not the end of the run: after an unbalanced quote the reading
starts again on the next line.
"""

from __future__ import annotations

import csv
import gzip
import io
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
        options = self.mapping.csv
        encoding = "utf-8-sig" if options.encoding == "utf-8" else options.encoding
        text = io.TextIOWrapper(stream, encoding=encoding, newline="")
        lines = _Lines(text)
        try:
            yield from self._rows(name, lines, position)
        except UnicodeDecodeError:
            raise ExtractError(
                f"{name}: bytes that are not {options.encoding} on line {lines.number + 1}; "
                "set encoding in the mapping's [csv] table (cp1252 for Windows files)",
                code="file-not-utf8",
            ) from None
        finally:
            text.detach()

    def _rows(self, name: str, lines: _Lines, position: Callable[[], int]) -> Iterator[Record]:
        delimiter = self.mapping.csv.delimiter
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
            name, [c.strip() for c in header], self.mapping, self.settings, self.seed, "csv"
        )
        row = 0
        progress = self.progress
        while True:
            lines.taken.clear()
            start = lines.number + 1
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                row += 1
                yield self._unreadable(maker, lines, start, row, str(exc))
                reader = csv.reader(lines, delimiter=delimiter, strict=True)
                continue
            if not values:
                continue  # a blank line
            row += 1
            yield maker.record(values, start, row)
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
        first = taken[0] if taken else ""
        lines.replay(taken[1:], start)
        values = next(csv.reader([first], delimiter=self.mapping.csv.delimiter), [])
        return maker.bad(values, start, row, f"row {row}: the row cannot be read ({reason})")


class _Lines:
    """The physical lines of a text stream, counted; the lines of the row being read are
    kept so that they can be read again."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.number = 0
        """Lines consumed so far."""
        self.taken: list[str] = []
        self.pending: deque[str] = deque()

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pending:
            line = self.pending.popleft()
        else:
            line = self.stream.readline()
            if not line:
                raise StopIteration
        self.number += 1
        self.taken.append(line)
        return line

    def replay(self, lines: list[str], consumed: int) -> None:
        """Read ``lines`` again next, as if only ``consumed`` lines had been read."""
        self.pending.extendleft(reversed(lines))
        self.number = consumed
