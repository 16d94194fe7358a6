"""The per-record pass over an extract: what is unchanged, what goes out, what is held back.

A source hands over records with their raw bytes (the seam every kind of source plugs into).
**Tier 1**: a record whose raw digest is the one stored for a present patron is that patron,
unchanged — not parsed, not fixed, not checked (it passed the checks when it was first read
under the same settings, and the settings are part of the raw digest's seed). **Tier 2**: every
other record is parsed, fixed, hashed to its canonical digest and classified against the
snapshot: new, changed, returned, or unchanged in content but spelled anew (its new raw digest
is kept, so tomorrow it is tier 1 again). Records about to be sent are checked; one that fails
a check of policy ``error`` is held back.

Everything read in tier 2 is staged in the run's transaction (:mod:`store.staging`), and what
needs the whole extract — a match ID twice, two IDs another case folding merges, an identifier
value two patrons share — is settled after the pass, so memory stays flat: per patron the pass
keeps one byte (seen, and how), besides the index of raw digests.

If the source's fast reader steps aside (it cannot vouch for the file), the pass starts over
reading every record in full: slower, never different.
"""

from __future__ import annotations

import datetime as dt
import gc
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import xxhash
from lxml import etree
from sqlalchemy import Connection

from .canonical import Recipe
from .checks.codes import Policy
from .checks.findings import Finding, Report, errors
from .checks.identifiers import value_hash
from .checks.record import RecordChecker
from .checks.settings import CheckSettings
from .diff import DATES_LATER, SENT_KINDS, Counts, HeldBack, Kind
from .fingerprint import LEAD_SHIFT, ContentFingerprint, leads_of, term_of
from .matchid import MAX_LENGTH, MatchIdRule, shown
from .policy.dates import compare as compare_dates
from .policy.rules import apply_rules
from .policy.settings import ExpiryConfig
from .source import Source
from .source.record import Record, Slice, as_slices
from .source.scanner import StepAside
from .source.undated import FIELD as UNDATED_FIELD
from .source.undated import keeps as undated_keeps
from .store import snapshot as snap
from .store.staging import Staging
from .userxml import identifier_values, record_expiry

LOOKUP_BATCH = 500
"""Records read in full that wait for one lookup of their match keys in the snapshot."""
SHOWN_OTHERS = 5
"""Other holders named in one identifier-taken message; the rest are counted."""
TIER1 = 1
TIER2 = 2
"""Flags in the per-patron byte: read unchanged by its bytes, read in full."""
DUPLICATE = "match ID occurs more than once in the extract"


@dataclass(frozen=True)
class ScanSetup:
    """What a pass needs to know of its feed."""

    feed_id: int
    rule: MatchIdRule
    recipe: Recipe
    checks: CheckSettings
    today: dt.date
    trusted_raw: bool
    """The stored raw digests were made with today's seed: tier 1 may use them."""
    keep_payloads: bool = True
    """False for ``check``, which keeps nothing it reads."""
    expiry: ExpiryConfig = ExpiryConfig()
    """Computed dates, and whether a later date alone waits for renewal."""
    count_expiry: bool = False
    """Count the records read in full by their expiry date (``check``'s heartbeat warning)."""


@dataclass
class Scanned:
    """What one pass found."""

    counts: Counts
    """Every kind but departed (the caller decides departures, after the guards)."""
    held_back: list[HeldBack]
    report: Report
    fingerprint: ContentFingerprint
    departures: list[int]
    """Patrons present in the snapshot that the extract no longer holds."""
    present_before: int
    records: int
    """Distinct match IDs in the extract, held-back ones included."""
    read: int
    """``<user>`` records read (a duplicate counts each time)."""
    repaired: set[str] = field(default_factory=set)
    """Match keys of records sent in a form a fix changed."""
    stepped_aside: str | None = None
    """Why the fast reader stepped aside and every record was read in full (None: it did not)."""
    held_patrons: list[int] = field(default_factory=list)
    """Known patrons whose record in the extract is held back: their stored one stands."""
    expiry_moves: int = 0
    """Changed records whose only change is a later expiry or purge date."""
    expiry_cuts: int = 0
    """Records of present patrons whose expiry or purge date moved earlier."""
    counted_lines: snap.CountedLines = field(default_factory=snap.CountedLines)
    """Records read by their bytes whose line ends were not stored yet, counted."""
    expiry_days: dict[int, int] = field(default_factory=dict)
    """Days from today to the expiry date → how many records read in full (bounded: one
    entry per distinct date), for ``check``'s heartbeat warning (``count_expiry``)."""


@dataclass
class _Read:
    """A record read in full, waiting for its match key's lookup."""

    where: str
    raw_digest: bytes | None
    raw_lines: int | None
    source: str
    line: int
    match_id: str
    key: str
    digest: bytes
    made: bytes | etree._Element | None
    """The canonical payload, or the element to make it from once it is wanted: most
    records read in full on a day after the first are found unchanged, and need none (on a
    day that re-indents every record, a tenth of the pass went into payloads thrown away).
    None for a pass that keeps nothing."""
    expiry: dt.date | None
    findings: Callable[[], list[Finding]]
    """The record's checks, run only for a record about to be sent: one spelled anew, or
    whose later dates wait for renewal, passed them when it was first sent."""
    identifiers: list[tuple[str, int]]
    fold_forms: str | None
    repaired: bool
    undated: bytes | None = None
    """The record's undated digest (:mod:`~deltasync.source.undated`) where it may stand for
    the record: kept instead of its raw digest when it is found unchanged."""
    element: etree._Element | None = None
    """The element to take ``expiry`` and ``identifiers`` from once they are wanted (the fast
    reader's, kept anyway): a record found unchanged needs neither, and on a day that
    re-spells every record their reading was a twelfth of the pass."""

    def take(self) -> None:
        """Take the expiry date and the identifier values from the element, if not yet."""
        user = self.element
        if user is not None:
            self.expiry = record_expiry(user)
            self.identifiers = _identifiers(user)
            self.element = None

    def payload(self, recipe: Recipe) -> bytes | None:
        """The record in canonical form (made on first asking)."""
        made = self.made
        if made is None or isinstance(made, bytes):
            return made
        self.made = payload = recipe.payload(made)
        return payload


def scan(conn: Connection, setup: ScanSetup, source: Source, staging: Staging) -> Scanned:
    """Read every record of ``source`` once (twice if the fast reader steps aside), staging
    what it reads in full in ``staging``."""
    with _frozen_heap():
        try:
            return _Pass(conn, setup, staging, fast=True).run(source)
        except StepAside as aside:
            staging.clear()
            read_in_full = _Pass(conn, setup, staging, fast=False).run(source)
            read_in_full.stepped_aside = str(aside)
            return read_in_full


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """The objects that exist before the pass (modules, SQLAlchemy's, the configuration) kept
    out of the collector's way while it runs: the pass makes objects per record, and every
    full collection walked all of them again. Measured on a day 1 at 100,000 patrons, six
    runs each: 3.43 s of CPU on average, 3.21 s frozen. They are given back to the collector
    after, so nothing stays frozen in a program that uses the library."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _Pass:
    def __init__(self, conn: Connection, setup: ScanSetup, staging: Staging, *, fast: bool) -> None:
        self.conn = conn
        self.setup = setup
        self.staging = staging
        self.fast = fast
        self.feed_id = setup.feed_id
        self.checker = RecordChecker(setup.checks, setup.today)
        self.report = Report()
        self.fingerprint = ContentFingerprint()
        low, high = snap.patron_range(conn, self.feed_id)
        self.low = low
        self.seen = bytearray(max(0, high - low + 1))
        """A byte per patron of the feed: how the extract held it (TIER1 | TIER2 flags)."""
        self.raw_index: dict[bytes | None, int] = {}
        """Raw digest → present patron, keyed with the line ends of those bytes
        (:func:`~deltasync.store.snapshot.keyed_patron`; tier 1; empty when the stored ones
        cannot be used). Never None: a source's records without bytes look up None and find
        no one."""
        self.present = array("q")
        """Every present patron, and the lead of its digest at the same place (its fingerprint
        term: :func:`~deltasync.fingerprint.leads_of`): after the pass, the ones not seen are
        departures and the ones read only by their bytes count toward the fingerprint.
        Arrays: eight bytes a patron."""
        self.leads = array("Q")
        self.counted = snap.CountedLines()
        """Records read by their bytes whose line ends were not stored, counted."""
        use_raw = fast and setup.trusted_raw
        self.undated = (
            fast
            and setup.recipe.leaves_out(UNDATED_FIELD)
            and not setup.expiry.reads(UNDATED_FIELD)
        )
        """Whether a record not found by its bytes is looked for by its undated digest (and
        one found unchanged keeps it): the recipe leaves its status_date out, and no expiry
        rule picks patrons by it (the rule's dates would move with it)."""
        for page in snap.present_patrons(conn, self.feed_id):
            self.present.extend(page.ids)
            self.leads.extend(leads_of(page.digests))
            if use_raw:
                self.raw_index.update(zip(page.raw_digests, page.keyed, strict=True))
        self.raw_index.pop(None, None)  # patrons without a stored raw digest
        self.extra_tier1: dict[int, int] = defaultdict(int)
        """Patrons read unchanged more than once → how many more times."""
        self.repeats: dict[int, list[str]] = {}
        """Patrons the extract holds more than once → where, as far as known yet."""
        self.unplaced: dict[int, bytes] = {}
        """Repeated patrons one of whose copies was read unchanged without noting where: the
        raw digest to find it by after the pass."""
        self.read = 0
        self.waiting: list[_Read] = []
        self.new_keys: set[int] = set()
        """64-bit hashes of new match keys staged so far: a repeat is checked in the store."""
        self.maybe_repeated: set[str] = set()
        self.unidentified: list[HeldBack] = []
        self.failed: dict[str, HeldBack] = {}
        self.repaired: set[str] = set()
        self.folds: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {}
        """Non-ASCII IDs read in full: key → (match ID, where, other foldings)."""
        self.moves: set[str] = set()
        """Match keys of changed records whose only change is later dates."""
        self.cuts: set[str] = set()
        """Match keys of records whose dates moved earlier."""
        self.expiry_days: dict[int, int] = defaultdict(int)
        self.read_unchanged: dict[str, int] = {}
        """Match key → patron of the fold participants read only by their bytes (never staged):
        one held back is counted held back, not unchanged, and its stored record stands."""

    # -- the pass -----------------------------------------------------------------------------

    def run(self, source: Source) -> Scanned:
        cut: Callable[[], Iterator[Slice]] | None = getattr(source, "slices", None)
        if self.fast and cut is not None:
            self.read = self._slices(cut())
        else:
            self.read = self._slices(as_slices(source.records(fast=self.fast)))
        self._classify()
        self.staging.finish()
        return self._settle(source)

    def _slices(self, slices: Iterator[Slice]) -> int:
        """Read a source's slices: a record is made of one only when its digest is not
        enough (a day-1 run at 100,000 patrons made 100,000 records to look up 1,000).

        Once per record, and most records are tier 1: everything at hand in locals, and the
        usual tier-1 record (first seen, its line ends stored) handled right in the loop."""
        index, seen, low, unit = self.raw_index, self.seen, self.low, snap.LINES_UNIT
        ids, bits = unit - 1, snap.LINES_BITS  # bit operations: divmod cost a tenth of a loop
        dated = self.undated
        read = 0
        for raw_digest, offset, raw, document in slices:
            read += 1
            keyed = index.get(raw_digest)  # None is never a key: not for a raw None
            undated = None
            if keyed is None and dated:
                # Not these bytes: perhaps the same ones with another status_date.
                undated = document.undated(raw)
                keyed = index.get(undated)
                if keyed is not None:
                    raw_digest = undated  # the one stored, and where it is found again
            if keyed is not None:
                slot = (keyed & ids) - low
                if seen[slot] or keyed < unit:  # seen already, or line ends not known
                    self._tier1(keyed, document.record(offset, raw, raw_digest))
                else:
                    seen[slot] = TIER1
                    document.passed(offset, offset + len(raw), (keyed >> bits) - 1)
                continue
            self._tier2(document.record(offset, raw, raw_digest), undated)
            if len(self.waiting) >= LOOKUP_BATCH:
                self._classify()
        return read

    def _tier1(self, keyed: int, record: Record) -> None:
        patron, lines = snap.keyed_patron(keyed)
        slot = patron - self.low
        flags = self.seen[slot]
        self.seen[slot] = flags | TIER1
        if flags:
            self._repeat(patron, record.where, flags, record.raw_digest)
            if flags & TIER1:
                self.extra_tier1[patron] += 1
        # Its line ends are those stored with its raw digest: the source numbers the lines
        # after it without reading it (after ``where`` above, which reads up to it).
        if lines < 0:
            counted = record.newlines
            if counted is None:
                return
            assert record.raw_digest is not None  # it was found by it
            # Known from now on, for another copy of the same bytes.
            self.raw_index[record.raw_digest] = snap.keyed(patron, counted)
            self.counted.add(patron, record.raw_digest, counted)
            lines = counted
        record.pass_lines(lines)

    def _repeat(self, patron: int, where: str, flags: int, raw: bytes | None) -> None:
        """Note another copy of a patron already seen in this extract."""
        first = patron not in self.repeats
        self.repeats.setdefault(patron, []).append(where)
        if first and flags & TIER1 and raw is not None:
            self.unplaced[patron] = raw

    def _tier2(self, record: Record, undated: bytes | None = None) -> None:
        user = record.element
        where = record.where  # now, while the source is at this record
        if undated is not None and not undated_keeps(record.raw or b"", user, self.setup.today):
            undated = None
        # Fixes first: one may change the match ID itself (a control character in it).
        inspection = self.checker.fix(
            user, record.source, plain=record.plain, line_shift=record.line_shift
        )
        # Computed dates are the record's dates: they are hashed and sent like the SIS's.
        apply_rules(user, self.setup.expiry, self.setup.today)
        rule = self.setup.rule
        match_id = rule.value(user)
        if match_id is None:
            message = f"the record has no {rule}"
            self.unidentified.append(HeldBack(None, message, (where,)))
            finding = Finding(
                "match-id-missing", Policy.ERROR, None, record.source, record.line, message
            )
            self.report.add([*record.findings, finding])
            return
        # What the source found making the element (a CSV source's mapping) counts as the
        # checks' findings do.
        made = list(record.findings)
        if len(match_id) > MAX_LENGTH:
            self._too_long(match_id, record, [*made, *self.checker.check(inspection)])
            return
        key = rule.key(match_id)
        folds = rule.folds(match_id)
        if folds:
            self.folds.setdefault(key, (match_id, where, tuple(folds.items())))
        repaired = any(f.policy == Policy.FIX for f in inspection.findings)
        kept = self._kept(user)
        later = isinstance(kept, etree._Element) and not self.setup.count_expiry
        expiry = None if later else record_expiry(user)
        if expiry is not None and self.setup.count_expiry:
            self.expiry_days[(expiry - self.setup.today).days] += 1
        self.waiting.append(
            _Read(
                where,
                record.raw_digest,
                record.newlines,
                record.source,
                record.line,
                match_id,
                key,
                self.setup.recipe.digest(user),
                kept,
                expiry,
                partial(_findings, made, self.checker, inspection),
                [] if later else _identifiers(user),
                snap.encode_folds(folds),
                repaired,
                undated,
                user if later else None,
            )
        )

    def _kept(self, user: etree._Element) -> bytes | etree._Element | None:
        """What a read record keeps to make its payload from: the element itself while the
        fast reader parsed it on its own, its payload at once from the full parse, which
        clears each element once the next is read."""
        if not self.setup.keep_payloads:
            return None
        return user if self.fast else self.setup.recipe.payload(user)

    def _too_long(self, match_id: str, record: Record, findings: list[Finding]) -> None:
        """A match ID longer than Alma takes: the record cannot be a patron, nor be stored."""
        named = shown(match_id)
        # The store keeps match IDs in columns of a bounded size, and Alma refuses them anyway.
        too_long = Finding(
            "match-id-too-long",
            Policy.ERROR,
            named,
            record.source,
            record.line,
            f"the match ID has {len(match_id)} characters; Alma takes at most {MAX_LENGTH}",
        )
        self.report.add([*(replace(f, match_id=named) for f in findings), too_long])
        self.unidentified.append(HeldBack(named, _reason([too_long]), (record.where,)))

    def _classify(self) -> None:
        """Look the waiting records' match keys up in the snapshot and stage each."""
        if not self.waiting:
            return
        known = snap.lookup(self.conn, self.feed_id, [r.key for r in self.waiting])
        # Changed records are compared field-wise for their dates with the stored record.
        changed = [
            entry.patron_id
            for read in self.waiting
            if (entry := known.get(read.key)) is not None
            and entry.present
            and entry.digest != read.digest
            and read.made is not None
        ]
        stored = snap.current_payloads(self.conn, changed) if changed else {}
        for read in self.waiting:
            self._stage(read, known.get(read.key), stored)
        self.waiting = []

    def _dates(self, read: _Read, stored: bytes | None) -> Kind | str:
        """A changed record's kind by how its dates moved: a later date alone waits for
        renewal (with ``renew_within_days``) or is an expiry move; earlier is a cut."""
        if stored is None or read.made is None:
            return Kind.CHANGED
        moved = compare_dates(self.setup.recipe, read.made, stored)
        if moved.earlier:
            self.cuts.add(read.key)
        if not moved.later_only:
            return Kind.CHANGED
        if self.setup.expiry.renew_within_days:
            return DATES_LATER
        self.moves.add(read.key)
        return Kind.CHANGED

    def _stage(
        self, read: _Read, entry: snap.Known | None, stored: dict[int, bytes] | None = None
    ) -> None:
        self.fingerprint.add(term_of(read.digest))
        kind: Kind | str
        if entry is None:
            kind = Kind.NEW
            hashed = xxhash.xxh3_64_intdigest(read.key.encode("utf-8"))
            if hashed in self.new_keys:
                self.maybe_repeated.add(read.key)
            self.new_keys.add(hashed)
        else:
            slot = entry.patron_id - self.low
            flags = self.seen[slot]
            self.seen[slot] = flags | TIER2
            if flags:
                self._repeat(entry.patron_id, read.where, flags, entry.raw_digest)
            if not entry.present:
                kind = Kind.RETURNED
            elif entry.digest != read.digest:
                kind = self._dates(read, (stored or {}).get(entry.patron_id))
            else:
                kind = Kind.UNCHANGED

        def add(
            kind: Kind | str,
            payload: bytes | None = None,
            expiry: dt.date | None = None,
            raw_digest: bytes | None = read.raw_digest,
        ) -> None:
            self.staging.add(
                match_key=read.key,
                match_id=read.match_id,
                patron_id=None if entry is None else entry.patron_id,
                kind=str(kind),
                digest=read.digest,
                payload=payload,
                expiry_date=expiry,
                raw_digest=raw_digest,
                raw_lines=read.raw_lines,
                source=read.source,
                line=read.line,
                fold_forms=read.fold_forms,
            )

        if kind == Kind.UNCHANGED:
            # The same record, spelled anew or read in full: its new raw digest is kept, or
            # its undated one, so that tomorrow's status_date finds it by its bytes too.
            add(kind, raw_digest=read.undated or read.raw_digest)
            return
        read.take()
        if kind == DATES_LATER:
            # Not a change: the stored record (and its raw digest) stands, so this one is read
            # in full again tomorrow; it is kept at hand in case it is renewed today.
            add(kind, read.payload(self.setup.recipe), read.expiry)
            return
        named = shown(read.match_id)
        findings = [replace(f, match_id=named) for f in read.findings()]
        self.report.add(findings)
        if read.repaired or any(f.policy == Policy.FIX for f in findings):
            self.repaired.add(read.key)
        self.staging.add_identifiers(read.key, read.identifiers)
        blocking = errors(findings)
        if blocking:
            self.failed[read.key] = HeldBack(named, _reason(blocking), (read.where,))
            add(Kind.HELD_BACK)
            return
        add(kind, read.payload(self.setup.recipe), read.expiry)

    # -- after the pass -----------------------------------------------------------------------

    def _settle(self, source: Source) -> Scanned:
        held: dict[str, HeldBack] = {}
        repeated = self._duplicates(held, source)
        self._ambiguous(held, source)
        for key in held:
            self.failed.pop(key, None)
            self.moves.discard(key)
            self.cuts.discard(key)
        self.staging.hold(held)
        self._identifier_conflicts()
        self.staging.hold(self.failed, kinds=[k.value for k in SENT_KINDS])
        counts = Counts()
        for kind, number in self.staging.kinds().items():
            if kind in (Kind.NEW, Kind.CHANGED, Kind.RETURNED, Kind.UNCHANGED):
                setattr(counts, kind, getattr(counts, kind) + number)
            elif kind == DATES_LATER:
                counts.unchanged += number
        # Read unchanged by their bytes, never in full, not in two copies and not held back.
        repeated_tier1 = sum(1 for p in repeated if self.seen[p - self.low] == TIER1)
        held_unread = self._held_unread(held, repeated)
        counts.unchanged += self.seen.count(TIER1) - repeated_tier1 - len(held_unread)
        held_back = [*held.values(), *self.failed.values(), *self.unidentified]
        counts.held_back = len(held_back)
        departures, present_before, tier1_terms = self._present()
        self.fingerprint.add(tier1_terms, count=self._tier1_reads())
        return Scanned(
            counts=counts,
            held_back=held_back,
            report=self.report,
            fingerprint=self.fingerprint,
            departures=departures,
            present_before=present_before,
            records=counts.new
            + counts.changed
            + counts.unchanged
            + counts.returned
            + len(held)
            + len(self.failed),
            read=self.read,
            repaired=self.repaired - set(held) - set(self.failed),
            held_patrons=self._held_patrons(set(held) | set(self.failed), repeated + held_unread),
            expiry_moves=len(self.moves - set(self.failed)),
            expiry_cuts=len(self.cuts - set(self.failed)),
            expiry_days=dict(self.expiry_days),
            counted_lines=self.counted,
        )

    def _held_patrons(self, keys: set[str], repeated: list[int]) -> list[int]:
        found = {row.patron_id for row in self.staging.find(keys) if row.patron_id is not None}
        return sorted(found | set(repeated))

    def _held_unread(self, held: dict[str, HeldBack], repeated: list[int]) -> list[int]:
        """Patrons held back whose record was read only by its bytes, in one copy."""
        twice = set(repeated)
        return [
            patron
            for key, patron in self.read_unchanged.items()
            if key in held and patron not in twice and self.seen[patron - self.low] == TIER1
        ]

    def _tier1_reads(self) -> int:
        return (
            self.seen.count(TIER1) + self.seen.count(TIER1 | TIER2) + sum(self.extra_tier1.values())
        )

    def _present(self) -> tuple[list[int], int, int]:
        """Departures, patrons present before, and the terms of the records read unchanged
        by their bytes (the fingerprint counts them too)."""
        departures: list[int] = []
        terms = 0
        seen, low, extra = self.seen, self.low, self.extra_tier1
        for patron, lead in zip(self.present, self.leads, strict=True):
            flags = seen[patron - low]
            if not flags:
                departures.append(patron)
            elif flags & TIER1:
                terms += (lead >> LEAD_SHIFT) * (1 + extra.get(patron, 0))
        return departures, len(self.present), terms

    def _duplicates(self, held: dict[str, HeldBack], source: Source) -> list[int]:
        """Hold back every match ID the extract holds twice; the repeated known patrons."""
        names = snap.keys_of(self.conn, list(self.repeats))
        copies: dict[str, dict[str, str]] = defaultdict(dict)
        """match key → where → the match ID as written there."""
        for patron, places in self.repeats.items():
            key, stored_id = names[patron]
            for where in places:
                copies[key][where] = stored_id
        located = source.locate(set(self.unplaced.values())) if self.unplaced else {}
        for patron, raw in self.unplaced.items():
            key, stored_id = names[patron]
            for where in located.get(raw, []):
                copies[key][where] = stored_id
        # Copies read in full were staged: their places and spellings come from the rows.
        for row in self.staging.find(set(copies) | self._repeated_new()):
            copies[row.match_key][f"{row.source}, line {row.line}"] = row.match_id
        for key, found in copies.items():
            if len(found) < 2:
                continue
            ordered = sorted(found, key=_position)
            # Named as the second copy spells it: the one that made it a duplicate.
            named = shown(found[ordered[1]])
            held[key] = HeldBack(named, DUPLICATE, tuple(ordered))
            source_name, line = _split(ordered[-1])
            also = "; ".join(ordered[:-1])
            self.report.add(
                [
                    Finding(
                        "match-id-duplicate",
                        Policy.ERROR,
                        named,
                        source_name,
                        line,
                        f"match ID occurs {len(ordered)} times (also at {also})",
                    )
                ]
            )
        return list(self.repeats)

    def _repeated_new(self) -> set[str]:
        """New match keys staged twice (the in-memory hashes only said "maybe")."""
        if not self.maybe_repeated:
            return set()
        counted: dict[str, int] = defaultdict(int)
        for row in self.staging.find(self.maybe_repeated):
            if row.patron_id is None:
                counted[row.match_key] += 1
        return {key for key, count in counted.items() if count > 1}

    def _ambiguous(self, held: dict[str, HeldBack], source: Source) -> None:
        """Hold back match IDs that another common case folding takes for one another."""
        owners: dict[str, tuple[str, str]] = {}
        """match key → (match ID, where) of every participant."""
        forms: dict[str, list[tuple[str, str]]] = defaultdict(list)
        """A form → [(match key, folding)] that reduce to it."""
        for key, (match_id, where, folded) in self.folds.items():
            owners[key] = (match_id, where)
            for name, form in folded:
                forms[form].append((key, name))
        stored = [
            p
            for p in snap.fold_participants(self.conn, self.feed_id)
            if self.seen[p.patron_id - self.low] & TIER1 and p.match_key not in owners
        ]
        unplaced: dict[str, bytes] = {}
        for p in stored:
            owners[p.match_key] = (p.match_id, "")
            self.read_unchanged[p.match_key] = p.patron_id
            if p.raw_digest is not None:
                unplaced[p.match_key] = p.raw_digest
            for name, form in p.folds:
                forms[form].append((p.match_key, name))
        if not forms:
            return
        # A key of the extract equal to another ID's form: ASCII IDs take part too.
        for form in list(forms):
            if form in owners:
                continue
            for row in self.staging.find([form]):
                owners[form] = (row.match_id, f"{row.source}, line {row.line}")
            known = snap.lookup(self.conn, self.feed_id, [form]).get(form)
            if known is not None and self.seen[known.patron_id - self.low] & TIER1:
                owners.setdefault(form, (known.match_id, ""))
                self.read_unchanged.setdefault(form, known.patron_id)
                if known.raw_digest is not None:
                    unplaced[form] = known.raw_digest
        clashes: list[tuple[str, str, str]] = []
        for form, holders in forms.items():
            keys = dict.fromkeys(k for k, _name in holders)
            if form in owners and form not in keys:
                keys = {form: None, **keys}
            ordered = list(keys)
            for other in ordered[1:]:
                name = next(n for k, n in holders if k in (other, ordered[0]))
                clashes.append((ordered[0], other, name))
        if not clashes:
            return
        located = source.locate(set(unplaced.values())) if unplaced else {}
        for key, raw in unplaced.items():
            match_id, where = owners[key]
            if not where and located.get(raw):
                owners[key] = (match_id, located[raw][0])
        for first, second, folding in clashes:
            a, b = sorted((owners[first][0], owners[second][0]))
            reason = (
                f"match IDs {a} and {b} are one under {folding}: Alma may take them for one patron"
            )
            for key, other in ((first, second), (second, first)):
                if key in held:
                    continue
                where = owners[key][1]
                held[key] = HeldBack(
                    owners[key][0], reason, tuple(w for w in (where, owners[other][1]) if w)
                )
                source_name, line = _split(where) if where else ("", 0)
                self.report.add(
                    [
                        Finding(
                            "match-id-ambiguous",
                            Policy.ERROR,
                            owners[key][0],
                            source_name,
                            line,
                            f"{reason} (the other at {owners[other][1] or 'an unchanged record'})",
                        )
                    ]
                )

    def _identifier_conflicts(self) -> None:
        """An identifier value another patron holds — in this extract, or in Alma (a
        departed patron not yet purged) — is taken: Alma would reject the record."""
        policy = self.setup.checks.policy("identifier-taken")
        if policy == Policy.OFF:
            return
        conflicts: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
        by_value: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for key, id_type, hashed in self.staging.shared_values():
            by_value[hashed].append((key, id_type))
        for hashed, holders in by_value.items():
            for key, id_type in holders:
                for other in dict.fromkeys(o for o, _t in holders if o != key):
                    conflicts[key].append((id_type, other, hashed))
        if snap.has_identifiers(self.conn, self.feed_id):
            staged_values = list(self.staging.staged_values())
            restaged = {key for key, _t, _h in staged_values}
            holders_of = snap.identifier_holders(
                self.conn, self.feed_id, {h for _k, _t, h in staged_values}
            )
            for key, id_type, hashed in staged_values:
                for other in holders_of.get(hashed, ()):
                    if other != key and other not in restaged:
                        conflicts[key].append((id_type, other, hashed))
        if not conflicts:
            return
        involved = set(conflicts) | {o for found in conflicts.values() for _t, o, _h in found}
        before = snap.identifier_values_of(self.conn, self.feed_id, involved)
        names = self._match_ids(involved)
        # Where each record that would be sent stands: from the staged rows, not kept in
        # memory for every record (a first run sends them all).
        sent_kinds = {kind.value for kind in SENT_KINDS}
        sending_at = {
            row.match_key: f"{row.source}, line {row.line}"
            for row in self.staging.find(conflicts)
            if row.kind in sent_kinds
        }
        for key, found in conflicts.items():
            sending = key in sending_at
            if not (sending or key in self.failed):
                continue
            mine = before.get(key, set())
            # A patron whose stored record already held the value keeps it against one whose
            # record did not: a newcomer copying a barcode must not block its holder.
            lost = list(
                dict.fromkeys(
                    (id_type, names.get(other, other))
                    for id_type, other, hashed in found
                    if hashed not in mine or hashed in before.get(other, set())
                )
            )
            if not lost:
                continue
            where = sending_at.get(key) or self.failed[key].where[0]
            source_name, line = _split(where)
            finding = Finding(
                "identifier-taken",
                policy,
                shown(names.get(key, key)),
                source_name,
                line,
                f"identifier value taken: {_described(lost)}",
            )
            self.report.add([finding])
            if policy == Policy.ERROR and sending:
                self.failed[key] = HeldBack(
                    shown(names.get(key, key)), _reason([finding]), (where,)
                )
                sending_at.pop(key, None)

    def _match_ids(self, keys: set[str]) -> dict[str, str]:
        found = {row.match_key: row.match_id for row in self.staging.find(keys)}
        missing = keys - set(found)
        if missing:
            for key, known in snap.lookup(self.conn, self.feed_id, sorted(missing)).items():
                found[key] = known.match_id
        return found


def _described(lost: list[tuple[str, str]]) -> str:
    shown_ = ", ".join(f"{id_type} also held by {other}" for id_type, other in lost[:SHOWN_OTHERS])
    more = len(lost) - SHOWN_OTHERS
    return f"{shown_} and {more} more" if more > 0 else shown_


def _split(where: str) -> tuple[str, int]:
    """``(source, line)`` of a ``file, line N``."""
    source, _, line = where.rpartition(", line ")
    return source, int(line or 0)


def _position(where: str) -> tuple[str, int]:
    return _split(where)


def _identifiers(user: etree._Element) -> list[tuple[str, int]]:
    return [(id_type, value_hash(value)) for id_type, value in identifier_values(user)]


def _findings(made: list[Finding], checker: RecordChecker, inspection: Any) -> list[Finding]:
    return [*made, *checker.check(inspection)]


def _reason(findings: list[Finding]) -> str:
    codes = ", ".join(dict.fromkeys(f.code for f in findings))
    return f"failed checks: {codes}"
