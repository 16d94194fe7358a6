"""Reports as the commands print them: the lines ``run``, ``diff``, ``replay`` and
``baseline`` write on stdout, and ``report``'s summary of a feed. Scripts and tests read some
of these lines: keep their wording."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import TYPE_CHECKING

from ..checks.findings import summary_lines
from ..job import RunResult
from .jinja import local_time
from .run import RunReport

if TYPE_CHECKING:
    from .period import FeedReport  # only ``report`` prints one: imported by it

RUN_DETAILS = 50
"""Findings listed one by one in ``run``'s text output; ``--json`` and ``check`` list more."""


def lines(report: RunReport) -> list[str]:
    """The command's output for a run that ended (a failed one prints only its error)."""
    result = report.result
    if result is None:
        return []
    if report.command == "replay":
        return _replay(result)
    if report.command == "baseline":
        return _baseline(result)
    return _run(result)


def when(moment: dt.datetime) -> str:
    """A moment as every command prints it: UTC, to the second."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _run(result: RunResult) -> list[str]:
    prefix = "dry run: " if result.dry_run else ""
    out = [f"{prefix}feed {result.feed}: {result.extract}"]
    if result.already_ingested_at is not None:
        out.append(f"  already ingested {when(result.already_ingested_at)}; no new changes")
    else:
        out += _diff(result)
    if result.batch is not None:
        b = result.batch
        carried = f", {result.carried_over} carried over" if result.carried_over else ""
        out.append(f"  batch {b.seq}: {b.file} ({b.records} records{carried}, {b.parts} part(s))")
    elif not result.dry_run:
        out.append("  nothing to send: no file written")
    out += [f"  ledger: {event}" for event in result.ledger_events]
    out += [f"  ATTENTION: {reason}" for reason in result.attention]
    return out


def _diff(result: RunResult) -> list[str]:
    c = result.counts
    out = [
        f"  {result.records} patrons: {c.new} new, {c.changed} changed, {c.unchanged} "
        f"unchanged, {c.departed} departed, {c.returned} returned, {c.held_back} held back"
    ]
    policy = [
        f"{c.renewed} renewed",
        f"{c.refreshed} refreshed",
        f"{c.expiry_moves} with later dates",
        f"{c.expiry_cuts} with earlier dates",
        f"{c.absent} absent, not departed",
    ]
    if c.renewed or c.refreshed or c.expiry_moves or c.expiry_cuts or c.absent:
        out.append(f"  expiry policy: {', '.join(policy)}")
    if result.departed_without_record:
        out.append(
            f"  {result.departed_without_record} departed patrons already expire in "
            "Alma: no expiration record needed"
        )
    if result.rehashed:
        out.append(f"  hash recipe changed: re-hashed {result.rehashed} snapshot records")
    if result.stepped_aside:
        # Correct either way, only slower: worth knowing when a night takes longer.
        out.append(f"  read in full, not the fast way: {result.stepped_aside}")
    for held in result.held_back:
        where = "; ".join(held.where)
        out.append(f"  held back {held.match_id or '(no match ID)'}: {held.reason} ({where})")
    for orphan in result.orphans:
        out.append(f"  set aside {orphan}: a crashed run left it and the store never recorded it")
    if result.findings.total:
        out += [f"  {line}" for line in summary_lines(result.findings, details=RUN_DETAILS)]
    return out


def _replay(result: RunResult) -> list[str]:
    if result.batch is None:
        out = ["nothing to send: Alma has confirmed every current record"]
    else:
        b = result.batch
        out = [f"batch {b.seq}: {b.file} ({b.records} records, {b.parts} part(s))"]
    out += [f"ledger: {event}" for event in result.ledger_events]
    out += [f"ATTENTION: {reason}" for reason in result.attention]
    return out


def _baseline(result: RunResult) -> list[str]:
    held = f", {result.counts.held_back} held back" if result.counts.held_back else ""
    out = [
        f"feed {result.feed}: adopted {result.counts.new} patrons from {result.extract} "
        f"as confirmed{held}; nothing was sent"
    ]
    out += [f"ATTENTION: {reason}" for reason in result.attention]
    return out


VERDICTS = {"ok": "all is well", "attention": "needs attention", "error": "stopped"}


def period_lines(report: FeedReport) -> list[str]:
    """``report``'s text output for one feed: where it stands, then the period in sums."""
    s = report.state
    tz = report.timezone
    out = [f"feed {report.feed}: {VERDICTS[s.level]}"]
    if s.last_run is None:
        out.append("  last run: none yet")
    else:
        r = s.last_run
        out.append(
            f"  last run: {r.command} {local_time(r.started_at, tz)}: "
            f"{r.outcome.value} (exit {r.outcome.exit_code})"
        )
    if s.last_extract is not None:
        name, records, at = s.last_extract
        out.append(f"  last extract: {name}: {records} records, {local_time(at, tz)}")
    out.append(
        f"  patrons present: {s.patrons_present}; awaiting confirmation by Alma: "
        f"{s.awaiting_confirmation}"
    )
    for b in s.in_flight:
        out.append(f"  in flight: batch {b.seq} {b.status} since {local_time(b.since, tz)}")
    out += [f"  ATTENTION: {reason}" for reason in s.attention]
    from .period import KINDS

    days = [d for d in report.daily if d.extracts]
    sums = {kind: sum(d.count(kind) for d in days) for kind in KINDS}
    states = Counter(b.status for b in report.batches)
    out.append(
        f"  {report.start} to {report.end}: {sum(d.extracts for d in days)} extract(s): "
        f"{sums['new']} new, {sums['changed']} changed, {sums['returned']} returned, "
        f"{sums['departed']} departed, {sums['held_back']} held back; {len(report.batches)} "
        f"batch(es)" + (f" ({_states(states)})" if states else "")
    )
    for flagged in report.flagged:
        out.append(
            f"  {flagged.kind} now: {flagged.match_id}: {flagged.code} "
            f"(since {local_time(flagged.since, tz)})"
        )
    return out


def _states(states: Counter[str]) -> str:
    return ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in sorted(states.items()))
