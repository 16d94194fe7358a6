"""Ingest an extract: make it the snapshot's desired state, inside the caller's transaction.

The step between the extract and the delta: refuse an extract that would roll patrons back
(older than the last one, or an earlier one's content), read every record once (the pass,
:mod:`scan`), refuse a run the guards do not trust, stage an expiration record for every
departure, and — unless it is a dry run — apply it all: the new snapshot, the next version of
each changed patron, and the extract's own row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash
from sqlalchemy import Connection

from . import extract_order
from .canonical import Recipe
from .checks.codes import Policy
from .checks.findings import Finding, Report
from .config import FeedConfig, Limit
from .delta.departure import expiration_record, is_record_of, needs_expiration
from .diff import Counts, HeldBack, Kind
from .errors import GuardRefused
from .matchid import shown
from .policy.absence import not_departed
from .policy.resend import stage_resends
from .policy.rules import seed_part
from .scan import ScanSetup, scan
from .source.factory import describe, open_source
from .source.merged import MergedSource
from .store import extracts, feeds
from .store import snapshot as snap
from .store.apply import apply
from .store.feeds import FeedRow
from .store.staging import Staging

Step = Callable[[str], None]
"""Called with the name of each step as a run passes it (for tests that inject failures)."""


@dataclass(frozen=True)
class Ingested:
    """What ingesting an extract did, or in a dry run would do."""

    records: int
    counts: Counts
    held_back: list[HeldBack] = field(default_factory=list)
    findings: Report = field(default_factory=Report)
    extract_id: int | None = None
    """The new extract's row; None when nothing was applied (a dry run)."""
    rehashed: int = 0
    departed_with_record: int = 0
    departed_without_record: int = 0
    repaired: set[str] = field(default_factory=set)
    """Match keys of records sent in a form a fix changed (the SIS's differs)."""
    notices: list[str] = field(default_factory=list)
    """What a person should know about this ingest (the run exits 4)."""
    stepped_aside: str | None = None
    """Why the fast reader stepped aside (every record was read in full); None: it did not."""


class AlreadyIngested(Exception):
    """The extract's bytes were ingested before: there is nothing to diff. Raised by
    :func:`ingest` once ``ingested_before`` says so; what it staged is cleared."""

    def __init__(self, earlier: Any) -> None:
        super().__init__("the extract was ingested before")
        self.earlier = earlier
        """What ``ingested_before`` found: the earlier extract's row."""


def recipe_of(feed: FeedConfig) -> Recipe:
    """The digest recipe of a feed."""
    return Recipe(feed.ignore, sis_ignored=not feed.count_sis_fields)


def raw_seed(feed: FeedConfig, recipe: Recipe, today: dt.date | None = None) -> str:
    """What the feed's raw digests are made with: a change of any makes every record unread."""
    rules = "" if today is None else seed_part(feed.expiry, today)
    parts = [
        *([rules] if rules else []),
        recipe.fingerprint,
        f"fixes={feed.checks.fixes}",
        describe(feed),
        f"encoding={feed.encoding}",
        f"match={feed.match_id}",
    ]
    return xxhash.xxh3_128_hexdigest("\n".join(parts).encode())


def ingest(
    conn: Connection,
    feed: FeedConfig,
    feed_row: FeedRow,
    path: Path,
    *,
    sha256: Callable[[], str],
    mtime: dt.datetime,
    now: dt.datetime,
    force: bool,
    apply_it: bool,
    progress: Callable[[int], None] | None = None,
    step: Step = lambda _name: None,
    ingested_before: Callable[[], Any | None] = lambda: None,
) -> Ingested:
    """Diff the extract at ``path`` against the snapshot and (with ``apply_it``) make it the
    snapshot's desired state; no file is written.

    ``sha256`` gives the file's SHA-256 when called (it may be worked out meanwhile);
    ``ingested_before`` gives the earlier extract of the same bytes, if any (it may refuse the
    file, GuardRefused): it is asked after the pass, and before the file is refused for its
    age; if there is one, :class:`AlreadyIngested` stops the ingest.
    """
    recipe = recipe_of(feed)
    last = extracts.last(conn, feed_row.id)
    try:
        extract_order.check_time(path, mtime, last, force=force)
    except GuardRefused:
        earlier = ingested_before()
        if earlier is not None:
            raise AlreadyIngested(earlier) from None
        raise
    rehashed = snap.rehash(conn, feed_row, recipe)
    snap.ensure_identifier_index(conn, feed_row)
    today = now.astimezone(feed.timezone).date()
    seed = raw_seed(feed, recipe, today)
    setup = ScanSetup(
        feed_id=feed_row.id,
        rule=feed.match_id,
        recipe=recipe,
        checks=feed.checks,
        today=today,
        trusted_raw=feed_row.raw_seed == seed,
        expiry=feed.expiry,
    )
    staging = Staging(conn, feed_row.id)
    source = open_source(feed, path, seed=seed.encode(), progress=progress)
    scanned = scan(conn, setup, source, staging)
    earlier = ingested_before()
    if earlier is not None:
        staging.clear()
        raise AlreadyIngested(earlier)
    if isinstance(source, MergedSource):
        scanned.report.add(_merges(feed, source))
    step("scanned")
    # Digests depend on the recipe and the fixes: so does the content they sum up to.
    fingerprint = scanned.fingerprint.value(f"{recipe.fingerprint};fixes={feed.checks.fixes}")
    same = extracts.with_content(conn, feed_row.id, fingerprint)
    extract_order.check_content(path, same, last, force=force)
    counts = scanned.counts
    policy = feed.departure
    staying = not_departed(
        conn,
        scanned.departures,
        grace_days=policy.grace_days,
        keep_groups=policy.keep_groups,
        today=today,
        tz=feed.timezone,
        last_extract_at=None if last is None else last.ingested_at,
    )
    departures = [p for p in scanned.departures if p not in staying]
    counts.departed = len(departures)
    counts.absent = len(staying)
    counts.expiry_moves = scanned.expiry_moves
    counts.expiry_cuts = scanned.expiry_cuts
    _guard(feed, path, counts, scanned.present_before, force=force)
    resent = stage_resends(
        conn,
        feed_row.id,
        staging,
        feed.expiry,
        today,
        not_seen=scanned.departures,
        held=scanned.held_patrons,
    )
    counts.renewed, counts.refreshed = resent.renewed, resent.refreshed
    notices: list[str] = []
    without_record = _stage_departures(conn, feed, staging, departures, now, notices)
    staging.flush()
    step("staged")
    result = Ingested(
        records=scanned.records,
        counts=counts,
        held_back=scanned.held_back,
        findings=scanned.report,
        rehashed=rehashed,
        departed_with_record=counts.departed - len(without_record),
        departed_without_record=len(without_record),
        repaired=scanned.repaired,
        notices=notices,
        stepped_aside=scanned.stepped_aside,
    )
    if not apply_it:
        return result
    extract_id = extracts.record(
        conn,
        feed_id=feed_row.id,
        name=str(path),
        sha256=sha256(),
        records=scanned.records,
        counts=counts,
        now=now,
        mtime=mtime,
        fingerprint=fingerprint,
    )
    apply(
        conn,
        feed_id=feed_row.id,
        extract_id=extract_id,
        now=now,
        last_seen_before=None if last is None else last.ingested_at,
        departed_without_record=without_record,
        held=scanned.held_patrons,
        absent=sorted(staying) if policy.grace_days or policy.keep_groups else None,
    )
    scanned.counted_lines.store(conn)
    feeds.record_settings(conn, feed_row.id, fixes=feed.checks.fixes, raw_seed=seed)
    return Ingested(**{**result.__dict__, "extract_id": extract_id})


def _merges(feed: FeedConfig, source: MergedSource) -> list[Finding]:
    """A finding per match ID that more than one source holds (the first source's is sent)."""
    policy = feed.checks.policy("source-merged")
    if policy == Policy.OFF:
        return []
    findings = []
    for merge in source.merges:
        where, _, line = merge.dropped.rpartition(", line ")
        findings.append(
            Finding(
                "source-merged",
                policy,
                shown(merge.match_id),
                where,
                int(line or 0),
                f"also in an earlier source, whose record is taken ({merge.kept})",
            )
        )
    return findings


def _guard(
    feed: FeedConfig, path: Path, counts: Counts, present_before: int, *, force: bool
) -> None:
    if force or present_before == 0:
        return
    policy = feed.departure
    # A later expiry alone is not a change for max_changes: a term rollover moves everyone's.
    limits: list[tuple[str, int, Limit, str]] = [
        ("max_departures", counts.departed, policy.max_departures, "depart"),
        (
            "max_expiry_cuts",
            counts.expiry_cuts,
            policy.max_expiry_cuts,
            "have their expiry or purge date moved earlier",
        ),
        ("max_changes", counts.changed - counts.expiry_moves, policy.max_changes, "change"),
        (
            "max_expiry_moves",
            counts.expiry_moves,
            policy.max_expiry_moves,
            "have only their expiry or purge date moved later",
        ),
    ]
    for key, count, limit, verb in limits:
        if count > limit.ceiling(present_before):
            share = 100 * count / present_before
            raise GuardRefused(
                f"{path}: {count} of {present_before} patrons would {verb} "
                f"({share:.1f}%), over {key} = {limit} for feed {feed.name!r}. "
                "Check the extract; if it is right, run again with --force"
            )


def _stage_departures(
    conn: Connection,
    feed: FeedConfig,
    staging: Staging,
    patron_ids: list[int],
    now: dt.datetime,
    notices: list[str],
) -> list[int]:
    """Stage an expiration record per departure; returns the patrons that need none."""
    policy = feed.departure
    recipe = recipe_of(feed)
    expiry = policy.policy_date(now, feed.timezone)
    today = now.astimezone(feed.timezone).date()
    without_record: list[int] = []
    for last in snap.last_sent(conn, patron_ids):
        if not needs_expiration(last.expiry_date, expiry):
            without_record.append(last.patron_id)
            continue
        base = _readable_record(conn, feed, last, notices)
        if base is None:
            without_record.append(last.patron_id)
            continue
        user = expiration_record(base, policy, expiry, today)
        staging.add(
            match_key=last.match_key,
            match_id=last.match_id,
            patron_id=last.patron_id,
            kind=Kind.DEPARTED.value,
            digest=recipe.digest(user),
            payload=recipe.payload(user),
            expiry_date=expiry,
        )
    return without_record


def _readable_record(
    conn: Connection, feed: FeedConfig, last: snap.LastSent, notices: list[str]
) -> bytes | None:
    """The payload to build ``last``'s expiration record from: the stored record, or when it
    is damaged the newest earlier version that reads as this patron's; None if none."""
    rule = feed.match_id
    if is_record_of(last.payload, rule, last.match_key):
        return last.payload
    for payload in snap.earlier_payloads(conn, last.patron_id):
        if is_record_of(payload, rule, last.match_key):
            notices.append(
                f"{last.match_id}: the stored record is unreadable; the expiration record "
                "was built from an earlier version, which Alma gets in full (swap-all)"
            )
            return payload
    notices.append(
        f"{last.match_id}: the stored record is unreadable and no earlier version is: no "
        "expiration record was sent; expire the patron in Alma by hand"
    )
    return None
