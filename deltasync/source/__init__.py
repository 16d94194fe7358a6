"""Where records come from: the seam every kind of SIS source plugs into.

A source yields :class:`Record` objects: each with its raw bytes and their digest (when the
source can cut its input into records) and its ``<user>`` element on demand. The pass
(:mod:`deltasync.scan`) needs nothing else, so a new kind of source — CSV, SQL — is a module
here that yields records.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from .record import Record

__all__ = ["Record", "Source"]


class Source(Protocol):
    """The records of one extract."""

    @property
    def name(self) -> str:
        """What to call the extract in messages (its path)."""
        ...

    def records(self, *, fast: bool = True) -> Iterator[Record]:
        """Every record; with ``fast`` the source may raise
        :class:`~deltasync.source.scanner.StepAside`, and is then read with ``fast=False``."""
        ...

    def locate(self, raw_digests: set[bytes]) -> dict[bytes, list[str]]:
        """Where the records with these raw digests stand (``file, line N``), in order."""
        ...
