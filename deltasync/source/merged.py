"""Several sources of one feed, in precedence order (staff before students, say).

A match ID found in more than one source takes the record of the first source that has it;
each such merge is noted (``merges``) for the run's report. To know who a record is, every
record of a merged feed is read in full: precedence cannot be decided by bytes alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..matchid import MatchIdRule
from . import Source
from .record import Record


@dataclass(frozen=True)
class Merge:
    """A match ID found in a later source too: the record at ``kept`` was taken."""

    match_id: str
    kept: str
    dropped: str


class MergedSource:
    """The records of several sources, each match ID from the first source holding it."""

    def __init__(self, sources: list[Source], rule: MatchIdRule) -> None:
        self.sources = sources
        self.rule = rule
        self.merges: list[Merge] = []

    @property
    def name(self) -> str:
        """Every source's name, in order."""
        return " + ".join(s.name for s in self.sources)

    def records(self, *, fast: bool = True) -> Iterator[Record]:
        """Every record of the first source, then those of the next whose match ID no
        earlier source holds, and so on."""
        self.merges = []
        earlier: dict[str, str] = {}
        """Match keys of the sources read so far → where the kept record stands."""
        for source in self.sources:
            mine: dict[str, str] = {}
            for record in source.records(fast=fast):
                match_id = self.rule.value(record.element)
                if match_id is None:
                    yield record
                    continue
                key = self.rule.key(match_id)
                kept = earlier.get(key)
                if kept is not None:
                    self.merges.append(Merge(match_id, kept, record.where))
                    continue
                mine.setdefault(key, record.where)
                yield record
            earlier.update(mine)

    def locate(self, raw_digests: set[bytes]) -> dict[bytes, list[str]]:
        """Where the records with these raw digests stand, in every source."""
        found: dict[bytes, list[str]] = {}
        for source in self.sources:
            for digest, places in source.locate(raw_digests).items():
                found.setdefault(digest, []).extend(places)
        return found
