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


class Resent(StrEnum):
    """Versions an expiry policy sends although the diff found the patron unchanged."""

    RENEWED = "renewed"
    """Its expiry comes within ``renew_within_days``: the SIS's later dates go out."""
    REFRESHED = "refreshed"
    """Its share of ``refresh_days`` is today's: the record is asserted again."""


DATES_LATER = "later"
"""A staged record whose only change is a later expiry or purge date, waiting for renewal."""


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
    renewed: int = 0
    """Sent again by ``renew_within_days`` (counted apart, never toward a guard)."""
    refreshed: int = 0
    """Sent again by ``refresh_days`` (counted apart, never toward a guard)."""
    expiry_moves: int = 0
    """Changed patrons whose only change is a later expiry or purge date."""
    expiry_cuts: int = 0
    """Present patrons whose expiry or purge date moved earlier."""
    absent: int = 0
    """Present patrons missing from the extract but not departed (``grace_days``,
    ``keep_groups``)."""

    def as_dict(self) -> dict[str, int]:
        """The counts keyed by kind, in a stable order."""
        return {kind.value: getattr(self, kind.value) for kind in Kind}

    def policy_dict(self) -> dict[str, int]:
        """What the expiry and departure policies did, apart from the kinds."""
        names = ("renewed", "refreshed", "expiry_moves", "expiry_cuts", "absent")
        return {name: getattr(self, name) for name in names}
