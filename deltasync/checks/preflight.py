"""Pre-flight: one streaming pass that classifies and checks every record of an extract.

Each record is fixed and checked first, then hashed and classified against the snapshot, so
the snapshot keeps the record as it will be sent. Only records about to be sent are reported
(an unchanged record was reported the day it went out); one that fails a check of policy
``error`` is held back, which leaves the snapshot's last record in place, so the next run sees
it again and sends it the day the extract fixes it. Identifier conflicts need the whole
extract, so they are settled after the pass, and the caller withdraws what they hold back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from lxml import etree

from ..canonical import Recipe
from ..diff import SENT_KINDS, Diff, Kind
from ..extract import Progress, SourceRecord, read_records
from ..matchid import MAX_LENGTH, MatchIdRule, shown
from .codes import Policy
from .findings import Finding, Report, errors
from .identifiers import IdentifierIndex
from .record import RecordChecker, identifier_values
from .settings import CheckSettings

Send = Callable[[str, str, Kind, bytes, etree._Element], None]
"""Called with ``(match key, match ID, kind, digest, record)`` for each record to send."""
HeldBefore = Callable[[str], set[int]]
"""The identifier value hashes a patron's stored record held, by match key (empty if new)."""
SHOWN_OTHERS = 5
"""Other holders named in one identifier-taken message; the rest are counted."""


class Preflight:
    """Classifies and checks the records of one extract for one feed."""

    def __init__(
        self,
        diff: Diff,
        settings: CheckSettings,
        rule: MatchIdRule,
        recipe: Recipe,
        today: dt.date,
        held_before: HeldBefore | None = None,
        *,
        trust_snapshot: bool = False,
    ) -> None:
        self.trust_snapshot = trust_snapshot
        """The snapshot's digests were made with today's fixes: a record whose raw digest
        matches needs no fix (fixes are idempotent) and no check (it is not sent)."""
        self.held_before = held_before or (lambda _key: set())
        self.diff = diff
        self.rule = rule
        self.recipe = recipe
        self.settings = settings
        self.checker = RecordChecker(settings, today)
        self.report = Report()
        self.read = 0
        """How many ``<user>`` records the pass read."""
        self.repaired: set[str] = set()
        """Match keys of records sent in a form a fix changed (the SIS's differs)."""
        taken = settings.policy("identifier-taken")
        self.identifiers = IdentifierIndex() if taken != Policy.OFF else None

    def scan(
        self, path: Path, send: Send, *, progress: Progress | None = None, encoding: str = "utf-8"
    ) -> None:
        """Read the extract, calling ``send`` for each record to send.

        Identifier conflicts are settled after the pass, so a record given to ``send`` can be
        held back after all: the caller withdraws the diff's ``held_back_keys`` afterwards.
        """
        diff, rule = self.diff, self.rule
        for record in read_records(path, progress, encoding):
            self.read += 1
            user = record.element
            if self.trust_snapshot and self._unchanged(record):
                continue
            # Fixes first: one may change the match ID itself (a control character in it).
            inspection = self.checker.fix(user, record.source, plain=record.plain)
            match_id = rule.value(user)
            if match_id is None:
                message = f"the record has no {rule}"
                diff.observe_unidentified(record.where, message)
                finding = Finding(
                    "match-id-missing", Policy.ERROR, None, record.source, record.line, message
                )
                self.report.add([finding])
                continue
            if self.identifiers is not None:
                self.identifiers.add(match_id, identifier_values(user))
            key = rule.key(match_id)
            digest = self.recipe.digest(user)
            kind = diff.observe(key, match_id, digest, record.where, rule.folds(match_id))
            if kind not in SENT_KINDS:
                continue  # unchanged: reported the day it was sent, and not checked again
            named = shown(match_id)
            findings = [replace(f, match_id=named) for f in self.checker.check(inspection)]
            if len(match_id) > MAX_LENGTH:
                findings.append(_too_long(match_id, record))
            self.report.add(findings)
            if any(f.policy == Policy.FIX for f in findings):
                self.repaired.add(key)
            blocking = errors(findings)
            if blocking:
                diff.hold(key, named, _reason(blocking))
                continue
            send(key, match_id, kind, digest, user)
        for held in diff.duplicates:
            source, line = _split(held.where[-1])
            self.report.add(
                [
                    Finding(
                        "match-id-duplicate",
                        Policy.ERROR,
                        held.match_id,
                        source,
                        line,
                        f"match ID occurs {len(held.where)} times (also at "
                        f"{'; '.join(held.where[:-1])})",
                    )
                ]
            )
        for held in diff.ambiguous:
            source, line = _split(held.where[0])
            finding = Finding(
                "match-id-ambiguous",
                Policy.ERROR,
                held.match_id,
                source,
                line,
                f"{held.reason} (the other at {'; '.join(held.where[1:])})",
            )
            self.report.add([finding])
        self._identifier_conflicts()

    def _unchanged(self, record: SourceRecord) -> bool:
        """The fast path for the usual record: as stored, so nothing to fix, check or send."""
        user = record.element
        match_id = self.rule.value(user)
        if match_id is None:
            return False
        key = self.rule.key(match_id)
        entry = self.diff.snapshot.get(key)
        if entry is None or not entry.present:
            return False
        digest = self.recipe.digest(user)
        if digest != entry.digest:
            return False
        self.diff.observe(key, match_id, digest, record.where, self.rule.folds(match_id))
        if self.identifiers is not None:
            self.identifiers.add(match_id, identifier_values(user))
        return True

    def _identifier_conflicts(self) -> None:
        if self.identifiers is None:
            return
        policy = self.settings.policy("identifier-taken")
        for match_id, conflicts in self.identifiers.conflicted().items():
            key = self.rule.key(match_id)
            sending = self.diff.kind_of(key) in SENT_KINDS
            if not (sending or self.diff.failed(key)):
                continue  # not sent today: Alma keeps what it has
            mine = self.held_before(key)
            # A patron whose stored record already held the value keeps it against one
            # whose record did not: a newcomer copying a barcode must not block its holder.
            lost = [
                (id_type, other)
                for id_type, other, value in conflicts
                if value not in mine or value in self.held_before(self.rule.key(other))
            ]
            if not lost:
                continue
            source, line = _split(self.diff.where_of(key))
            finding = Finding(
                "identifier-taken",
                policy,
                match_id,
                source,
                line,
                f"identifier value taken: {_described(lost)}",
            )
            self.report.add([finding])
            if policy == Policy.ERROR and sending:
                self.diff.hold(key, match_id, _reason([finding]))


def _too_long(match_id: str, record: SourceRecord) -> Finding:
    # The store keeps match IDs in columns of a bounded size, and Alma refuses them anyway.
    return Finding(
        "match-id-too-long",
        Policy.ERROR,
        shown(match_id),
        record.source,
        record.line,
        f"the match ID has {len(match_id)} characters; Alma takes at most {MAX_LENGTH}",
    )


def _described(lost: list[tuple[str, str]]) -> str:
    shown = ", ".join(f"{id_type} also held by {other}" for id_type, other in lost[:SHOWN_OTHERS])
    more = len(lost) - SHOWN_OTHERS
    return f"{shown} and {more} more" if more > 0 else shown


def _split(where: str) -> tuple[str, int]:
    """``(source, line)`` of a ``file, line N`` the diff keeps for a record."""
    source, _, line = where.rpartition(", line ")
    return source, int(line or 0)


def _reason(findings: list[Finding]) -> str:
    codes = ", ".join(dict.fromkeys(f.code for f in findings))
    return f"failed checks: {codes}"
