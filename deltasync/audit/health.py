"""Does a feed need attention, and what should someone do next?

One answer serves ``status`` (one feed), ``status --all`` (every feed, a monitoring probe) and
the metrics file. It comes from the run log (the last run's outcome and reasons) and from the
ledger as it stands now, judged against the clock:

- the last run failed (exit 1) or was refused by a guard (exit 3);
- the last run needed attention (held-back records, a remote folder it could not read, a file
  it could not prune): its reasons stand until the next run. Its reasons about one batch are
  left to the ledger's current state instead, so they clear when the batch moves on;
- a batch failed and no batch was confirmed after it (its patrons are on their way again);
- a batch could not be delivered (its last attempt failed);
- a batch was uploaded and not picked up within ``pickup_timeout``, or picked up and without a
  result within it.

Patrons Alma rejected are counted and get a next action, but do not by themselves make a feed
need attention: the run that learned of them said so, and they stay rejected until their record
changes or someone replays them, which may be weeks.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace

from sqlalchemy import Connection, func, select

from ..config import FeedConfig
from ..store import Store, feeds, runs
from ..store import batches as batch_store
from ..store.tables import OPEN, BatchStatus, extract_t, patron_t

_ABOUT_A_BATCH = re.compile(r"^batch \d+\b")
"""How the ledger words a reason about one batch (ledger.py): judged from the ledger instead."""


@dataclass(frozen=True)
class NewestExtract:
    """The extract a feed ingested last."""

    name: str
    modified_at: dt.datetime | None
    """The file's modification time as the store recorded it (None before migration 0004)."""
    ingested_at: dt.datetime
    held_back: int


@dataclass(frozen=True)
class FeedHealth:
    """A feed at a glance: its last run, what is in flight, and whether someone must act."""

    feed: str
    checked_at: dt.datetime
    last_run: runs.RunEntry | None
    newest_extract: NewestExtract | None
    in_flight: int
    """Batches built, uploaded or picked up but not yet confirmed or failed."""
    oldest_in_flight_at: dt.datetime | None
    """When the oldest of them was built."""
    failed: int
    """Failed batches with no confirmed batch after them."""
    held_back: int
    """Patrons the checks held back from the newest extract."""
    rejected: int
    """Patrons whose current record Alma rejected (not yet changed or replayed)."""
    attention: list[str] = field(default_factory=list)
    next_action: str = "none"

    @property
    def needs_attention(self) -> bool:
        """Whether someone should look (``status`` exits 4)."""
        return bool(self.attention)

    @property
    def oldest_in_flight_age(self) -> dt.timedelta | None:
        """How long the oldest batch in flight has waited, as of ``checked_at``."""
        if self.oldest_in_flight_at is None:
            return None
        return max(dt.timedelta(0), self.checked_at - self.oldest_in_flight_at)

    def as_json(self) -> dict[str, object]:
        """The ``status --all --json`` object of one feed."""
        run = self.last_run
        extract = self.newest_extract
        age = self.oldest_in_flight_age
        return {
            "feed": self.feed,
            "last_run": None
            if run is None
            else {
                "command": run.command,
                "started_at": run.started_at.isoformat(),
                "finished_at": run.finished_at.isoformat(),
                "outcome": run.outcome.value,
                "exit_code": run.outcome.exit_code,
                "error": run.error,
                "counts": run.counts,
            },
            "newest_extract": None
            if extract is None
            else {
                "name": extract.name,
                "modified_at": None
                if extract.modified_at is None
                else extract.modified_at.isoformat(),
                "ingested_at": extract.ingested_at.isoformat(),
            },
            "in_flight": self.in_flight,
            "oldest_in_flight_age_seconds": None if age is None else int(age.total_seconds()),
            "failed": self.failed,
            "held_back": self.held_back,
            "rejected": self.rejected,
            "needs_attention": self.needs_attention,
            "attention": self.attention,
            "next_action": self.next_action,
        }


def collect(store: Store, feeds: list[FeedConfig], now: dt.datetime) -> list[FeedHealth]:
    """The health of each of ``feeds``, read in one transaction (one view of the store)."""
    with store.read() as conn:
        return [health(conn, feed, now) for feed in feeds]


def health(conn: Connection, feed: FeedConfig, now: dt.datetime) -> FeedHealth:
    """The health of ``feed`` as of ``now``."""
    last_run = runs.last(conn, feed.name)
    row = feeds.find_feed(conn, feed.name)
    problems = _Problems(feed)
    problems.from_run(last_run)
    if row is None:
        return problems.verdict(FeedHealth(feed.name, now, last_run, None, 0, None, 0, 0, 0))
    batches = batch_store.listed(conn, row.id)
    in_flight = [b for b in batches if b.status in OPEN]
    confirmed = max((b.seq for b in batches if b.status == BatchStatus.CONFIRMED), default=0)
    failed = [b for b in batches if b.status == BatchStatus.FAILED and b.seq > confirmed]
    for batch in failed:
        events = batch_store.events(conn, batch.id)
        problems.failed(batch, events[-1][2] if events else None)
    for batch in in_flight:
        problems.in_flight(batch, now)
    newest = _newest_extract(conn, row.id)
    found = FeedHealth(
        feed=feed.name,
        checked_at=now,
        last_run=last_run,
        newest_extract=newest,
        in_flight=len(in_flight),
        oldest_in_flight_at=min((b.created_at for b in in_flight), default=None),
        failed=len(failed),
        held_back=0 if newest is None else newest.held_back,
        rejected=_rejected(conn, row.id),
    )
    return problems.verdict(found)


def _newest_extract(conn: Connection, feed_id: int) -> NewestExtract | None:
    e = extract_t.c
    row = conn.execute(
        select(e.name, e.mtime, e.ingested_at, e.held_back)
        .where(e.feed_id == feed_id)
        .order_by(e.id.desc())
        .limit(1)
    ).one_or_none()
    if row is None:
        return None
    return NewestExtract(row.name, row.mtime, row.ingested_at, int(row.held_back))


def _rejected(conn: Connection, feed_id: int) -> int:
    p = patron_t.c
    return int(
        conn.execute(
            select(func.count())
            .select_from(patron_t)
            .where(
                p.feed_id == feed_id,
                p.rejected_digest.is_not(None),
                p.rejected_digest == p.digest,
            )
        ).scalar_one()
    )


# Next actions by the kind of problem, most urgent first.
_PRIORITY = ("error", "refused", "undelivered", "unread", "no-result", "run", "failed")


class _Problems:
    """Collects a feed's reasons for attention, each with its kind, for the next action."""

    def __init__(self, feed: FeedConfig) -> None:
        self.feed = feed
        self.found: list[tuple[str, str]] = []
        self.first_batch: dict[str, int] = {}

    def add(self, kind: str, text: str, seq: int | None = None) -> None:
        self.found.append((kind, text))
        if seq is not None:
            self.first_batch.setdefault(kind, seq)

    def from_run(self, run: runs.RunEntry | None) -> None:
        if run is None:
            return
        at = f"{run.started_at.astimezone(dt.UTC):%Y-%m-%d %H:%M}Z"
        if run.outcome == runs.Outcome.ERROR:
            self.add("error", f"the last {run.command} ({at}) failed: {run.error}")
        elif run.outcome == runs.Outcome.REFUSED:
            self.add("refused", f"the last {run.command} ({at}) was refused: {run.error}")
        for reason in run.attention:
            if not _ABOUT_A_BATCH.match(reason):
                self.add("run", f"the last {run.command} ({at}): {reason}")

    def failed(self, batch: batch_store.BatchState, why: str | None) -> None:
        because = f": {why}" if why else ""
        self.add(
            "failed",
            f"batch {batch.seq} failed{because}; no batch was confirmed since (its patrons go "
            "out again with the next one)",
            batch.seq,
        )

    def in_flight(self, batch: batch_store.BatchState, now: dt.datetime) -> None:
        delivery = self.feed.delivery
        if delivery is None:
            return
        timeout = delivery.pickup_timeout
        if batch.status == BatchStatus.BUILT and batch.last_error:
            self.add(
                "undelivered",
                f"batch {batch.seq} not delivered ({batch.attempts} failed attempt(s)): "
                f"{batch.last_error}",
                batch.seq,
            )
        elif (
            batch.status == BatchStatus.UPLOADED
            and batch.uploaded_at
            and now - batch.uploaded_at > timeout
        ):
            self.add(
                "unread",
                f"batch {batch.seq} not picked up by Alma since {_when(batch.uploaded_at)} "
                f"(pickup_timeout {timeout}): is the SIS job scheduled?",
                batch.seq,
            )
        elif (
            batch.status == BatchStatus.PICKED_UP
            and batch.picked_up_at
            and now - batch.picked_up_at > timeout
        ):
            self.add(
                "no-result",
                f"batch {batch.seq} was picked up {_when(batch.picked_up_at)} but has no "
                f"result yet (confirm = {delivery.confirm!r})",
                batch.seq,
            )

    def verdict(self, found: FeedHealth) -> FeedHealth:
        return replace(
            found, attention=[text for _kind, text in self.found], next_action=self._next(found)
        )

    def _next(self, found: FeedHealth) -> str:
        feed = f"deltasync --feed {self.feed.name}"
        kinds = {kind for kind, _text in self.found}
        kind = next((k for k in _PRIORITY if k in kinds), None)
        seq = self.first_batch.get(kind or "")
        if kind == "error":
            return f"fix what the last run's error names, then run again: {feed} run"
        if kind == "refused":
            return f"check the extract; if it is right, run again with: {feed} run --force"
        if kind == "undelivered":
            return f"check the delivery with: {feed} doctor (the batch goes out with the next run)"
        if kind == "unread":
            return "check that Alma's SIS job is scheduled and reads remote_dir"
        if kind == "no-result":
            assert self.feed.delivery is not None
            if self.feed.delivery.confirm == "manual":
                return f"record Alma's result: {feed} confirm {seq} (or fail {seq} --reason ...)"
            return (
                f"check the SIS job's report, then {feed} confirm {seq} (or fail {seq} "
                "--reason ...)"
            )
        if kind == "run":
            return "read the last run's reasons: held-back records are fixed in the SIS"
        if kind == "failed":
            return f"see why with: {feed} batch show {seq}; its patrons go out with the next run"
        if found.rejected:
            return f"fix the rejected patrons in the SIS or Alma, then: {feed} replay"
        if found.last_run is None and found.newest_extract is None:
            return f"first run: {feed} run (or baseline EXTRACT if Alma holds these patrons)"
        return "none"


def _when(moment: dt.datetime) -> str:
    return f"{moment.astimezone(dt.UTC):%Y-%m-%d %H:%M}Z"
