"""What the diff says of a patron: its kind, the tally of kinds, and why a record waits."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """What happened to a patron between the snapshot and the extract."""

    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    DEPARTED = "departed"
    RETURNED = "returned"
    HELD_BACK = "held_back"


SENT_KINDS = (Kind.NEW, Kind.CHANGED, Kind.RETURNED)
"""Kinds whose current record goes into the delta in full."""


@dataclass(frozen=True)
class HeldBack:
    """A match ID (or a record without one) that is not sent this run, and why."""

    match_id: str | None
    reason: str
    where: tuple[str, ...]


@dataclass
class Counts:
    """How many patrons fell into each kind."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    departed: int = 0
    returned: int = 0
    held_back: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts keyed by kind, in a stable order."""
        return {kind.value: getattr(self, kind.value) for kind in Kind}
