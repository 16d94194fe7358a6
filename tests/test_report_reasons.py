"""The words a notice's subject gives each attention reason, and the step it suggests: the
reasons as the ledger, the checks and retention write them."""

from __future__ import annotations

import pytest

from deltasync.report import reasons

CASES = [
    (
        "batch 41 failed: Alma job run 6112: ABORTED_BY_SYSTEM; counters []",
        "batch 41 failed in Alma",
    ),
    ("batch 7 failed: vanished from remote_dir without being handled", "batch 7 vanished unread"),
    ("batch 7 failed: /x/outbox/a.zip: missing, and it cannot be rebuilt: …", "batch 7 failed"),
    (
        "batch 9 not delivered: /mnt/alma: the delivery folder does not exist",
        "batch 9 not delivered",
    ),
    (
        "cannot check delivered batches: sftp.example.edu:22: list failed: …",
        "remote_dir unreachable",
    ),
    (
        "batch 3 not picked up by Alma since 2027-01-05 11:00Z (pickup_timeout 1 day, 2:00:00): "
        "is the SIS job scheduled?",
        "batch 3 not picked up",
    ),
    (
        "batch 3 was picked up 2027-01-05 11:00Z but has no result yet (confirm = 'manual'): …",
        "batch 3 has no result from Alma",
    ),
    ("batch 4: Alma rejected 2 patrons", "Alma rejected 2 patron(s) in batch 4"),
    ("3 record(s) held back (named in the run's output); fix them …", "3 record(s) held back"),
    ("took back patrons_000002_x.zip from remote_dir as …", "an unknown file was taken back"),
    ("cannot delete old withdrawn files from remote_dir: …", "old files could not be deleted"),
    (
        "S0001: the stored record is unreadable and no earlier version is: no expiration …",
        "a departed patron needs expiring by hand",
    ),
    ("something new that no kind knows about, said at some length so that it is cut", None),
]


@pytest.mark.parametrize(("reason", "words"), CASES, ids=[c[1] or "unknown" for c in CASES])
def test_each_reason_has_its_words_and_a_next_step(reason: str, words: str | None) -> None:
    [headline] = reasons.headlines([reason])
    if words is None:
        assert reasons.kind_of(reason) is None
        assert headline == "something new that no kind knows about, said at some leng..."
        assert reasons.next_steps([reason]) == [reasons.GENERIC_STEP]
        return
    assert headline == words
    known = reasons.kind_of(reason)
    assert known is not None and reasons.next_steps([reason]) == [known[0].next_step]


def test_the_most_urgent_comes_first_and_each_is_said_once() -> None:
    found = reasons.headlines(
        [
            "2 record(s) held back (named in the run's output); …",
            "batch 5 not delivered: x",
            "batch 4 failed: Alma job run 1: FAILED",
            "batch 5 not delivered: y",
        ]
    )
    assert found == ["batch 4 failed in Alma", "batch 5 not delivered", "2 record(s) held back"]
