"""Rows of named columns (a CSV file, a SQL query) as records: raw bytes now, XML on demand.

A row's raw bytes are the row as its file holds it (a CSV row's lines), or for a SQL query's
row its values joined by NUL; their digest is seeded with the feed's raw seed (which holds
the mapping's fingerprint) and the header, so a row byte-for-byte as yesterday is known
unchanged without rendering anything (tier 1). Only a row read in full (tier 2) is rendered
through the mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import xxhash
from lxml import etree

from ..checks.findings import Finding
from ..checks.settings import CheckSettings
from ..errors import ExtractError
from ..mapping.render import Renderer, Where
from ..mapping.spec import Mapping
from .record import Record

SEPARATOR = "\x00"
Split = Callable[[bytes], list[str]]


class RowRecords:
    """Makes the records of one table of rows: one header, one mapping."""

    def __init__(
        self,
        name: str,
        columns: Sequence[str],
        mapping: Mapping,
        settings: CheckSettings,
        seed: bytes,
        kind: str,
        *,
        utf8: bool = True,
    ) -> None:
        self.name = name
        self.columns = tuple(columns)
        self.width = len(self.columns)
        self.renderer = Renderer(mapping, settings)
        self.bad_policy = settings.policy("row-bad")
        self.utf8 = utf8
        """Whether raw bytes are UTF-8: only then can a byte test clear a row of the
        character checks (:attr:`Record.plain`); other rows always get them."""
        self.seed = xxhash.xxh3_64_intdigest(
            SEPARATOR.join([seed.decode(), kind, *self.columns]).encode("utf-8")
        )
        _check_columns(name, self.columns, mapping)

    def record(
        self, values: Sequence[str], line: int, row: int, raw: bytes | None = None
    ) -> Record:
        """The record of one row (``line`` is where it starts, ``row`` counts data rows).

        ``raw`` is the row as the file holds it, when it comes from one (a CSV file); without
        it the raw bytes are the values joined by NUL (a SQL query's row).
        """
        if len(values) != self.width:
            problem = f"row {row}: {len(values)} fields where the header has {self.width}"
            return self.bad(values, line, row, problem)
        if raw is None:
            joined = SEPARATOR.join(values)
            raw = joined.encode("utf-8", "surrogatepass")
            # A value holding the separator itself could make two rows one: such a row is
            # always read in full.
            clean = joined.count(SEPARATOR) == self.width - 1
            digest = xxhash.xxh3_128_digest(raw, seed=self.seed) if clean else None
        else:
            digest = xxhash.xxh3_128_digest(raw, seed=self.seed)
        fields = tuple(values)
        return self._made(raw, digest, line, row, lambda: fields)

    def split(self, raw: bytes, line: int, row: int, split: Split) -> Record:
        """The record of a row whose values ``split(raw)`` gives, asked only when it is read
        in full: a row unchanged by its bytes is never even decoded."""
        digest = xxhash.xxh3_128_digest(raw, seed=self.seed)
        return self._made(raw, digest, line, row, lambda: tuple(split(raw)))

    def _made(
        self,
        raw: bytes,
        digest: bytes | None,
        line: int,
        row: int,
        fields: Callable[[], tuple[str, ...]],
    ) -> Record:
        def parse(record: Record) -> etree._Element:
            return self._element(record, fields(), row)

        return Record(
            self.name,
            raw=raw,
            raw_digest=digest,
            parse=parse,
            line=line,
            plain=None if self.utf8 else False,
        )

    def bad(self, values: Sequence[str], line: int, row: int, problem: str) -> Record:
        """A row that cannot be read as the header's columns: what it holds is rendered as
        far as it goes (so its match ID is held back, not departed), with a finding."""
        fields = tuple(values[: self.width]) + ("",) * max(0, self.width - len(values))

        def parse(record: Record) -> etree._Element:
            return self._element(record, fields, row)

        record = Record(self.name, line=line, parse=parse)
        record.findings.append(Finding("row-bad", self.bad_policy, None, self.name, line, problem))
        return record

    def _element(self, record: Record, fields: tuple[str, ...], row: int) -> etree._Element:
        line = record.line
        user, findings = self.renderer.render(
            dict(zip(self.columns, fields, strict=True)), Where(self.name, line, row)
        )
        record.findings.extend(findings)
        record.line_shift = line - 1
        return user


def _check_columns(name: str, columns: tuple[str, ...], mapping: Mapping) -> None:
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise ExtractError(
                f"{name}: the header names column {column!r} twice", code="source-columns"
            )
        seen.add(column)
    missing = sorted(mapping.columns - seen)
    if missing:
        raise ExtractError(
            f"{name}: no column {', '.join(map(repr, missing))}, which the mapping "
            f"{mapping.path} uses (columns: {', '.join(columns)})",
            code="source-columns",
        )
