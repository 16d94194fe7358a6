"""The report of a feed over a period: where it stands, and its last N days, from the store.

Days are the feed's own calendar days (its time zone). The daily counts are the extracts'
(new, changed, returned, departed, held back); the guard limits are today's configuration
applied to the patrons of the extract before each day's (what the guard compared with, give
or take the held-back ones). The batch timeline is the ledger's times; held-back records by
code come from the run log, Alma's rejections from the ledger.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select

from ..config import FeedConfig
from ..store import Store, runs
from ..store import batches as led
from ..store import tables as tb
from ..store.feeds import find_feed
from . import reads

DEFAULT_DAYS = 90
STALE_AFTER = dt.timedelta(hours=48)
"""A feed whose last run is older than this needs a look: the nightly job may have stopped."""
OK, ATTENTION, ERROR = "ok", "attention", "error"
KINDS = ("new", "changed", "returned", "departed", "held_back")


@dataclass(frozen=True)
class Day:
    """One calendar day of the feed: what its extracts brought, and the guard limits."""

    date: dt.date
    new: int = 0
    changed: int = 0
    returned: int = 0
    departed: int = 0
    held_back: int = 0
    extracts: int = 0
    max_changes: int | None = None
    """The most changed patrons the guard allowed that day (None: not limited, a first run)."""
    max_departures: int | None = None

    def count(self, kind: str) -> int:
        """The count of one of :data:`KINDS`."""
        value: int = getattr(self, kind)
        return value


@dataclass(frozen=True)
class Span:
    """A batch on the timeline: built → uploaded → picked up → confirmed, or how it ended."""

    seq: int
    status: str
    records: int
    created_at: dt.datetime
    uploaded_at: dt.datetime | None
    picked_up_at: dt.datetime | None
    resolved_at: dt.datetime | None
    failed_attempts: list[dt.datetime] = field(default_factory=list)
    last_error: str | None = None

    @property
    def waited(self) -> dt.timedelta | None:
        """From the upload to Alma's pickup: how long the file sat in remote_dir."""
        if self.uploaded_at is None:
            return None
        end = self.picked_up_at or (
            self.resolved_at if self.status != tb.BatchStatus.UPLOADED else None
        )
        return None if end is None else end - self.uploaded_at


@dataclass(frozen=True)
class CodeDay:
    """How many records one code held back (or Alma rejected for one reason) on one day."""

    date: dt.date
    kind: str
    """held back, or rejected."""
    code: str
    count: int


@dataclass(frozen=True)
class Flagged:
    """A patron held back now, or whose current record Alma rejected, and since when."""

    match_id: str
    kind: str
    code: str
    since: dt.datetime


@dataclass(frozen=True)
class State:
    """Where the feed stands now, in words: the top of the page."""

    level: str
    """ok, attention or error."""
    last_run: runs.RunEntry | None
    last_extract: tuple[str, int, dt.datetime] | None
    """Name, records and when it was ingested."""
    in_flight: list[reads.Batch]
    awaiting_confirmation: int
    patrons_present: int
    attention: list[str]


@dataclass(frozen=True)
class FeedReport:
    """A feed over ``days`` days up to ``end``."""

    feed: str
    timezone: dt.tzinfo
    start: dt.date
    end: dt.date
    generated_at: dt.datetime
    state: State
    daily: list[Day]
    batches: list[Span]
    codes: list[CodeDay]
    flagged: list[Flagged]

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def as_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (``report --json``)."""
        data = asdict(self)
        data["timezone"] = str(self.timezone)
        data["state"]["last_run"] = (
            None if self.state.last_run is None else _run_json(self.state.last_run)
        )
        if self.state.last_extract is not None:
            name, records, at = self.state.last_extract
            data["state"]["last_extract"] = {"name": name, "records": records, "ingested_at": at}
        plain: dict[str, Any] = _plain(data)
        return plain


def feed_report(
    store: Store, feed: FeedConfig, *, days: int = DEFAULT_DAYS, now: dt.datetime
) -> FeedReport:
    """The report of ``feed`` over the ``days`` days ending today (in the feed's time zone)."""
    tz = feed.timezone
    end = now.astimezone(tz).date()
    start = end - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(start, dt.time(), tz)
    with store.read() as conn:
        row = find_feed(conn, feed.name)
        last_run = runs.last(conn, feed.name)
        if row is None:
            state = _state(last_run, None, [], 0, 0, [], now)
            return FeedReport(feed.name, tz, start, end, now, state, _days(start, end), [], [], [])
        extracts = conn.execute(
            select(tb.extract_t).where(tb.extract_t.c.feed_id == row.id).order_by(tb.extract_t.c.id)
        ).all()
        daily = _daily(feed, extracts, start, end)
        spans = _spans(conn, row.id, since)
        ingests = reads.ingests(conn, feed.name, row.id, dt.datetime.min.replace(tzinfo=dt.UTC))
        rejected = [r for r in reads.rejected(conn, row.id) if r.at >= since]
        codes = _codes(ingests, rejected, since, tz)
        flagged = _held_now(ingests) + [
            Flagged(r.match_id, "rejected", r.reason, r.at)
            for r in reads.still_rejected(conn, row.id)
        ]
        present = conn.execute(
            select(func.count())
            .select_from(tb.patron_t)
            .where(tb.patron_t.c.feed_id == row.id, tb.patron_t.c.state == tb.PatronState.PRESENT)
        ).scalar_one()
        last = extracts[-1] if extracts else None
        state = _state(
            last_run,
            None if last is None else (last.name, last.records, last.ingested_at),
            reads.batches(conn, row.id, statuses=tb.OPEN),
            led.awaiting_confirmation(conn, row.id),
            int(present),
            flagged,
            now,
        )
    return FeedReport(feed.name, tz, start, end, now, state, daily, spans, codes, flagged)


def _days(start: dt.date, end: dt.date) -> list[Day]:
    return [Day(start + dt.timedelta(days=n)) for n in range((end - start).days + 1)]


def _daily(feed: FeedConfig, extracts: Sequence[Any], start: dt.date, end: dt.date) -> list[Day]:
    totals: dict[dt.date, Counter[str]] = defaultdict(Counter)
    base: dict[dt.date, int | None] = {}
    previous: int | None = None
    for extract in extracts:
        day = extract.ingested_at.astimezone(feed.timezone).date()
        if start <= day <= end:
            totals[day].update({kind: getattr(extract, kind) for kind in KINDS})
            totals[day]["extracts"] += 1
            base.setdefault(day, previous)
        previous = extract.records
    limits = feed.departure
    out: list[Day] = []
    for day in _days(start, end):
        counts = totals.get(day.date)
        if counts is None:
            out.append(day)
            continue
        before = base.get(day.date)
        out.append(
            Day(
                day.date,
                **{kind: counts[kind] for kind in KINDS},
                extracts=counts["extracts"],
                max_changes=None if not before else limits.max_changes.ceiling(before),
                max_departures=None if not before else limits.max_departures.ceiling(before),
            )
        )
    return out


def _spans(conn: Any, feed_id: int, since: dt.datetime) -> list[Span]:
    attempts: dict[int, list[dt.datetime]] = defaultdict(list)
    for event in reads.events(conn, feed_id, since):
        if event.status == "attempt_failed":
            attempts[event.seq].append(event.at)
    return [
        Span(
            b.seq,
            b.status,
            b.records,
            b.created_at,
            b.uploaded_at,
            b.picked_up_at,
            b.resolved_at,
            attempts.get(b.seq, []),
            b.last_error,
        )
        for b in reads.batches(conn, feed_id, since=since)
    ]


def _codes(
    ingests: list[reads.Ingest], rejected: list[reads.Rejected], since: dt.datetime, tz: dt.tzinfo
) -> list[CodeDay]:
    # A record stays held back every day until the SIS fixes it; with several runs a day,
    # the day's last ingest says what the day ended with.
    last_of_day: dict[dt.date, reads.Ingest] = {}
    for ingest in ingests:
        if ingest.run.started_at >= since:
            last_of_day[ingest.run.started_at.astimezone(tz).date()] = ingest
    found: list[CodeDay] = []
    for day, ingest in sorted(last_of_day.items()):
        held = Counter(code for _match_id, code in ingest.held_back)
        found += [CodeDay(day, "held back", code, n) for code, n in sorted(held.items())]
    per_day: Counter[tuple[dt.date, str]] = Counter(
        (r.at.astimezone(tz).date(), r.reason) for r in rejected
    )
    found += [CodeDay(day, "rejected", code, n) for (day, code), n in sorted(per_day.items())]
    return sorted(found, key=lambda c: (c.date, c.kind, c.code))


def _held_now(ingests: list[reads.Ingest]) -> list[Flagged]:
    """What the newest ingest held back, each since the first of the ingests in a row that
    held it back."""
    if not ingests:
        return []
    newest = ingests[-1]
    found: list[Flagged] = []
    for match_id, code in dict.fromkeys(newest.held_back):
        since = newest.run.started_at
        for ingest in reversed(ingests[:-1]):
            if (match_id, code) not in ingest.held_back:
                break
            since = ingest.run.started_at
        found.append(Flagged(match_id or "(no match ID)", "held back", code, since))
    return found


def _state(
    last_run: runs.RunEntry | None,
    last_extract: tuple[str, int, dt.datetime] | None,
    in_flight: list[reads.Batch],
    awaiting: int,
    present: int,
    flagged: list[Flagged],
    now: dt.datetime,
) -> State:
    attention: list[str] = []
    level = OK
    if last_run is None:
        attention.append("the feed has not run yet")
        level = ATTENTION
    else:
        if last_run.outcome in (runs.Outcome.ERROR, runs.Outcome.REFUSED):
            verb = "stopped" if last_run.outcome == runs.Outcome.ERROR else "was refused"
            attention.append(f"the last {last_run.command} {verb}: {last_run.error}")
            level = ERROR
        elif last_run.attention:
            attention += last_run.attention
            level = ATTENTION
        if now - last_run.started_at > STALE_AFTER:
            hours = (now - last_run.started_at).total_seconds() / 3600
            attention.append(
                f"no run for {hours / 24:.1f} days: is the nightly job still scheduled?"
            )
            level = ERROR if level == ERROR else ATTENTION
    held = sum(1 for f in flagged if f.kind == "held back")
    rejected = len(flagged) - held
    if held and not any("held back" in reason for reason in attention):
        attention.append(f"{held} record(s) held back by the checks: fix them in the SIS")
    if rejected:
        attention.append(f"{rejected} patron(s) whose current record Alma rejected")
    if attention and level == OK:
        level = ATTENTION
    return State(level, last_run, last_extract, in_flight, awaiting, present, attention)


def _run_json(entry: runs.RunEntry) -> dict[str, Any]:
    return {
        "command": entry.command,
        "started_at": entry.started_at,
        "finished_at": entry.finished_at,
        "outcome": entry.outcome.value,
        "exit_code": entry.outcome.exit_code,
        "error": entry.error,
        "attention": entry.attention,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return value
