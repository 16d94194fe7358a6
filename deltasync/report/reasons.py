"""Attention reasons in short: a subject line's words for each, and what a person does next.

The reasons themselves are sentences the run wrote (the ledger, the checks, retention). Each
is sorted into a kind by its opening words; a reason of no known kind is still reported in
full, and gets a generic next step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One kind of reason: how it opens, its words in a subject, and what to do about it."""

    name: str
    pattern: re.Pattern[str]
    headline: str
    """``str.format`` with the pattern's groups."""
    next_step: str


KINDS = (
    Kind(
        "failed-in-alma",
        re.compile(r"^batch (?P<seq>\d+) failed: Alma job run"),
        "batch {seq} failed in Alma",
        "Open the SIS job's report in Alma for the failed batch: its patrons go out again with "
        "the next run by themselves; nothing needs re-sending by hand.",
    ),
    Kind(
        "vanished",
        re.compile(r"^batch (?P<seq>\d+) failed: vanished"),
        "batch {seq} vanished unread",
        "A delivered file disappeared from remote_dir without being loaded: find out who or "
        "what removed it (the server's expiry?). Its patrons go out again with the next run.",
    ),
    Kind(
        "failed",
        re.compile(r"^batch (?P<seq>\d+) failed: "),
        "batch {seq} failed",
        "Read why the batch failed (deltasync batch show N); its patrons go out again with the "
        "next run.",
    ),
    Kind(
        "not-delivered",
        re.compile(r"^batch (?P<seq>\d+) not delivered: "),
        "batch {seq} not delivered",
        "Check the connection to remote_dir (the SFTP server, its key, the mounted folder): the "
        "batch stays built and the next run tries again.",
    ),
    Kind(
        "unchecked",
        re.compile(r"^cannot check delivered batches: "),
        "remote_dir unreachable",
        "Check the connection to remote_dir (the SFTP server, its key, the mounted folder): "
        "what Alma picked up is learnt once it answers again.",
    ),
    Kind(
        "not-picked-up",
        re.compile(r"^batch (?P<seq>\d+) not picked up by Alma"),
        "batch {seq} not picked up",
        "Check that Alma's SIS synchronize job is scheduled, active and reads remote_dir.",
    ),
    Kind(
        "no-result",
        re.compile(r"^batch (?P<seq>\d+) was picked up .* but has no result"),
        "batch {seq} has no result from Alma",
        "Read the SIS job's report in Alma, then confirm or fail the batch by hand "
        "(deltasync confirm N / deltasync fail N --reason …).",
    ),
    Kind(
        "rejected",
        re.compile(r"^batch (?P<seq>\d+): Alma rejected (?P<count>\d+) patrons"),
        "Alma rejected {count} patron(s) in batch {seq}",
        "Fix the rejected patrons (by match ID in this report) in the SIS or in Alma; a "
        "rejected record goes out again when it changes, or with deltasync replay.",
    ),
    Kind(
        "held-back",
        re.compile(r"^(?P<count>\d+) record\(s\) held back"),
        "{count} record(s) held back",
        "Fix the held-back records (by match ID and check code in this report) in the SIS: "
        "each goes out with the first extract that passes its checks.",
    ),
    Kind(
        "unknown-file",
        re.compile(r"^took back (?P<name>\S+) from remote_dir"),
        "an unknown file was taken back",
        "A file of this feed that the ledger does not know was in remote_dir (was the store "
        "restored from a backup?): check what Alma loaded recently.",
    ),
    Kind(
        "cleanup",
        re.compile(r"^cannot delete "),
        "old files could not be deleted",
        "Retention could not delete old files (the reason names them); the next prune tries again.",
    ),
    Kind(
        "hand-expiry",
        re.compile(r"^(?P<id>\S+): the stored record is unreadable and no earlier version"),
        "a departed patron needs expiring by hand",
        "Expire the patron this reason names in Alma by hand: no expiration record could be built.",
    ),
)
GENERIC_STEP = "Read the reasons; the run's own work is done, and the next run carries on."
REFUSED_STEP = (
    "The run was refused and changed nothing. Check the extract; if it is right, run again "
    "with --force."
)
ERROR_STEP = (
    "The run stopped and changed nothing (the store is as it was). Fix the cause named above; "
    "the next run starts from the same place."
)


def kind_of(reason: str) -> tuple[Kind, dict[str, str]] | None:
    """The kind of ``reason`` and the values its opening words name, if it is a known one."""
    for kind in KINDS:
        match = kind.pattern.match(reason)
        if match is not None:
            return kind, {k: v for k, v in match.groupdict().items() if v is not None}
    return None


def headlines(reasons: list[str]) -> list[str]:
    """A few words for each reason, most urgent kinds first, each said once."""
    found: list[tuple[int, str]] = []
    for reason in reasons:
        known = kind_of(reason)
        if known is None:
            found.append((len(KINDS), _shorten(reason)))
            continue
        kind, values = known
        found.append((KINDS.index(kind), kind.headline.format(**values)))
    seen: list[str] = []
    for _rank, words in sorted(found, key=lambda item: item[0]):
        if words not in seen:
            seen.append(words)
    return seen


def next_steps(reasons: list[str]) -> list[str]:
    """What to do about ``reasons``, one step per kind, in the order of urgency."""
    steps: list[tuple[int, str]] = []
    for reason in reasons:
        known = kind_of(reason)
        rank, step = (
            (len(KINDS), GENERIC_STEP)
            if known is None
            else (
                KINDS.index(known[0]),
                known[0].next_step,
            )
        )
        if all(step != s for _r, s in steps):
            steps.append((rank, step))
    return [step for _rank, step in sorted(steps, key=lambda item: item[0])]


def _shorten(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
