"""One patron record as a source hands it over: its raw bytes, where it stands, and its
``<user>`` element, parsed only when someone asks for it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from lxml import etree

from ..checks.findings import Finding
from .characters import suspect

Parse = Callable[["Record"], etree._Element]
Locate = Callable[[int], int]
Passed = Callable[[int, int, int], None]
"""Told ``(offset, end, line ends)`` of a record read by its bytes whose line ends are known."""


class Document(Protocol):
    """One document of a source that cuts its input into slices (see :data:`Slice`)."""

    def record(self, offset: int, raw: bytes, raw_digest: bytes | None) -> Record:
        """The record of the slice at ``offset``, to be asked for only while the source is
        at that slice."""
        ...

    def passed(self, offset: int, end: int, newlines: int) -> None:
        """The slice from ``offset`` to ``end`` was read by its digest alone, and holds
        ``newlines`` line ends: the lines after it are numbered without reading it."""
        ...

    def undated(self, raw: bytes) -> bytes | None:
        """The slice's digest without the text of its status_date, for a record whose date
        alone moves daily (:mod:`~deltasync.source.undated`); None: it has none."""
        ...


Slice = tuple[bytes | None, int, bytes, Document]
"""``(raw digest, offset, raw bytes, document)``: a record before it is made one. A source
that can cut its input cheaply offers them (``slices()``) besides its records: most records
of a day are only looked up by their digest, and making each a :class:`Record` cost as much
as cutting and hashing it. Any source's records can be read as slices (:func:`as_slices`)."""


def as_slices(records: Iterable[Record]) -> Iterator[Slice]:
    """Records a source made itself, as slices: so one loop reads every kind of source."""
    for record in records:
        yield record.raw_digest, record.offset, record.raw or b"", _Made(record)


class _Made:
    """The document of a record already made: it is its own slice's record."""

    __slots__ = ("made",)

    def __init__(self, made: Record) -> None:
        self.made = made

    def record(self, offset: int, raw: bytes, raw_digest: bytes | None) -> Record:
        return self.made

    def passed(self, offset: int, end: int, newlines: int) -> None:
        self.made.pass_lines(newlines)

    def undated(self, raw: bytes) -> bytes | None:
        return None  # a record made by its source: its bytes are not XML


class Record:
    """A record of an extract.

    ``raw`` and ``raw_digest`` are the record's bytes as the source gave them and their hash,
    seeded with everything that gives those bytes their meaning; a record whose raw digest is
    the one stored for a patron is unchanged and needs no parsing at all. A source that cannot
    cut its input into records (the full XML parse) gives ``None`` for both, and the element
    at once.

    The element, and the line, are only to be asked for while the source is at this record:
    the source may have moved on (and freed its buffer) once the next record was taken.
    """

    __slots__ = (
        "findings",
        "_element",
        "_line",
        "_locate",
        "_parse",
        "_passed",
        "document",
        "line_shift",
        "offset",
        "_plain",
        "raw",
        "raw_digest",
        "source",
    )

    def __init__(
        self,
        source: str,
        *,
        raw: bytes | None = None,
        raw_digest: bytes | None = None,
        document: int = 0,
        offset: int = 0,
        parse: Parse | None = None,
        locate: Locate | None = None,
        element: etree._Element | None = None,
        line: int = 0,
        plain: bool | None = False,
        passed: Passed | None = None,
    ) -> None:
        self.source = source
        """The file (and zip member) the record comes from, for messages."""
        self.raw = raw
        self.raw_digest = raw_digest
        self.document = document
        """Which document of the source holds it (a zip holds several), counted from 0."""
        self.offset = offset
        """Where the record starts in its document, in bytes."""
        self._plain = plain
        self._parse = parse
        self._locate = locate
        self._passed = passed
        self._element = element
        self._line = line
        self.line_shift = 0
        """What to add to the ``sourceline`` of the element's nodes to get the file's line."""
        self.findings: list[Finding] = []
        """What the source found making the element (a CSV row it could not read, a code
        its mapping does not know): record findings the pass reports with the checks'."""

    @property
    def element(self) -> etree._Element:
        """The record as a ``<user>`` element, without formatting whitespace; parsed once
        (reading it may raise :class:`~deltasync.source.scanner.StepAside`)."""
        if self._element is None:
            assert self._parse is not None
            self._element = self._parse(self)
        return self._element

    @property
    def plain(self) -> bool:
        """True when no byte of the record can be a control character, U+FFFD or a character
        reference: it needs no character checks (the usual case, and a costly walk). A source
        that gave ``plain=None`` leaves it to be worked out from ``raw`` when first asked:
        a record read unchanged by its bytes is never asked."""
        if self._plain is None:
            self._plain = self.raw is not None and not suspect(self.raw)
        return self._plain

    @plain.setter
    def plain(self, value: bool) -> None:
        self._plain = value

    @property
    def newlines(self) -> int | None:
        """The line ends in ``raw``, for a source that counts lines by them (None: one that
        does not, or a record without bytes)."""
        if self._passed is None or self.raw is None:
            return None
        return self.raw.count(b"\n")

    def pass_lines(self, newlines: int) -> None:
        """The record was read by its bytes, which hold ``newlines`` line ends (as stored with
        its raw digest): the source need not read them to number the lines after it."""
        if self._passed is not None and self.raw is not None:
            self._passed(self.offset, self.offset + len(self.raw), newlines)

    @property
    def line(self) -> int:
        """The line the record starts on."""
        if not self._line and self._locate is not None:
            self._line = self._locate(self.offset)
        return self._line

    @property
    def where(self) -> str:
        """``file, line N`` for messages."""
        return f"{self.source}, line {self.line}"
