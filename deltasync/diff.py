"""The diff: how each patron of a new extract stands against the snapshot."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .fingerprint import ContentFingerprint


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


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    """What the snapshot knows of one match ID: enough to classify, nothing personal."""

    patron_id: int
    digest: bytes
    present: bool


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


@dataclass
class Diff:
    """Classifies each record of an extract, streaming, against a snapshot index.

    A match ID seen twice is held back: the first copy's classification is withdrawn, so
    neither copy is sent and the patron is not counted as departed either. So are two match
    IDs that another common case folding takes for one (``folds``: STRASSE3 and straße3). A
    record that fails its checks is held back the same way through :meth:`hold`.
    """

    snapshot: Mapping[str, SnapshotEntry]
    _seen: dict[str, Kind] = field(default_factory=dict)
    _where: dict[str, str] = field(default_factory=dict)
    _held: dict[str, HeldBack] = field(default_factory=dict)
    _unidentified: list[HeldBack] = field(default_factory=list)
    _failed: dict[str, HeldBack] = field(default_factory=dict)
    _ids: dict[str, str] = field(default_factory=dict)
    """The match ID as first written, by key."""
    _fold_owner: dict[str, tuple[str, str]] = field(default_factory=dict)
    """A folded form that differs from its key → (that key, the folding's name)."""
    _ambiguous: set[str] = field(default_factory=set)
    fingerprint: ContentFingerprint = field(default_factory=ContentFingerprint)
    """The extract's content, whatever its bytes and record order (see :mod:`fingerprint`)."""

    def observe(
        self,
        key: str,
        match_id: str,
        digest: bytes,
        where: str,
        folds: Mapping[str, str] | None = None,
    ) -> Kind:
        """Classify one record; HELD_BACK if its match ID already occurred in this extract,
        or if one of its ``folds`` (name → form) makes it one with another match ID."""
        self.fingerprint.add(key, digest)
        held = self._held.get(key)
        if held is not None:
            self._held[key] = HeldBack(held.match_id, held.reason, (*held.where, where))
            return Kind.HELD_BACK
        if key in self._seen or key in self._failed:
            self._seen.pop(key, None)
            self._failed.pop(key, None)
            first = self._where.pop(key)
            self._held[key] = HeldBack(
                match_id, "match ID occurs more than once in the extract", (first, where)
            )
            return Kind.HELD_BACK
        self._ids[key] = match_id
        clash = self._clash(key, folds or {})
        if clash is not None:
            self._hold_ambiguous(key, where, *clash)
            return Kind.HELD_BACK
        entry = self.snapshot.get(key)
        if entry is None:
            kind = Kind.NEW
        elif not entry.present:
            kind = Kind.RETURNED
        elif entry.digest != digest:
            kind = Kind.CHANGED
        else:
            kind = Kind.UNCHANGED
        self._seen[key] = kind
        self._where[key] = where
        return kind

    def _clash(self, key: str, folds: Mapping[str, str]) -> tuple[str, str] | None:
        """``(other key, folding)`` when a folded form of this ID is another ID's."""
        found: tuple[str, str] | None = None
        owner = self._fold_owner.get(key)
        if owner is not None and owner[0] != key:
            found = owner
        for name, form in folds.items():
            if found is None:
                other = self._fold_owner.get(form)
                if other is not None and other[0] != key:
                    found = (other[0], name)
                elif form in self._ids and form != key:
                    found = (form, name)
            self._fold_owner.setdefault(form, (key, name))
        return found

    def _hold_ambiguous(self, key: str, where: str, other: str, folding: str) -> None:
        first, second = sorted((self._ids[other], self._ids[key]))
        reason = (
            f"match IDs {first} and {second} are one under {folding}: Alma may take them "
            "for one patron"
        )
        held = self._held.get(other)
        if held is None:
            self._seen.pop(other, None)
            self._failed.pop(other, None)
            there = self._where.pop(other)
            self._held[other] = HeldBack(self._ids[other], reason, (there, where))
            self._ambiguous.add(other)
        else:
            there = held.where[0]
        self._held[key] = HeldBack(self._ids[key], reason, (where, there))
        self._ambiguous.add(key)

    def hold(self, key: str, match_id: str, reason: str) -> None:
        """Hold back a classified record after all (it failed its checks): it is not sent,
        not counted as its kind, and not departed either."""
        kind = self._seen.pop(key)
        assert kind in SENT_KINDS, kind
        self._failed[key] = HeldBack(match_id, reason, (self._where[key],))

    def kind_of(self, key: str) -> Kind | None:
        """How the record of ``key`` was classified, if it is still classified."""
        return self._seen.get(key)

    def failed(self, key: str) -> bool:
        """Whether the record of ``key`` was held back for failing its checks."""
        return key in self._failed

    def where_of(self, key: str) -> str:
        """Where the record of a classified key stands in the extract."""
        return self._where[key]

    def observe_unidentified(self, where: str, reason: str) -> None:
        """Note a record that cannot be tracked because it has no match ID."""
        self._unidentified.append(HeldBack(None, reason, (where,)))

    @property
    def records(self) -> int:
        """How many distinct match IDs the extract held, held-back ones included."""
        return len(self._seen) + len(self._held) + len(self._failed)

    @property
    def held_back(self) -> list[HeldBack]:
        """Every held-back match ID and unidentified record, in the order found."""
        return [*self._held.values(), *self._failed.values(), *self._unidentified]

    @property
    def duplicates(self) -> list[HeldBack]:
        """The match IDs held back because they occurred more than once."""
        return [h for key, h in self._held.items() if key not in self._ambiguous]

    @property
    def ambiguous(self) -> list[HeldBack]:
        """The match IDs held back because another folding takes them for another one."""
        return [h for key, h in self._held.items() if key in self._ambiguous]

    @property
    def held_back_keys(self) -> set[str]:
        """The match keys held back: twice in the extract, or failing their checks."""
        return set(self._held) | set(self._failed)

    def departed(self) -> Iterator[tuple[str, SnapshotEntry]]:
        """Patrons present in the snapshot that the extract no longer holds."""
        for key, entry in self.snapshot.items():
            if entry.present and not (
                key in self._seen or key in self._held or key in self._failed
            ):
                yield key, entry

    def counts(self, departed: int) -> Counts:
        """The tally of this diff, given how many patrons departed."""
        counts = Counts(departed=departed, held_back=len(self.held_back))
        for kind in self._seen.values():
            setattr(counts, kind.value, getattr(counts, kind.value) + 1)
        return counts
