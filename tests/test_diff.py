"""Classifying patrons against the snapshot."""

from __future__ import annotations

from deltasync.diff import Diff, Kind, SnapshotEntry

A, B = b"a" * 16, b"b" * 16


def make() -> Diff:
    return Diff(
        {
            "same": SnapshotEntry(1, A, True),
            "edited": SnapshotEntry(2, A, True),
            "gone": SnapshotEntry(3, A, True),
            "back": SnapshotEntry(4, A, False),
            "still-gone": SnapshotEntry(5, A, False),
        }
    )


def test_each_kind() -> None:
    diff = make()
    assert diff.observe("same", "SAME", A, "f, line 1") is Kind.UNCHANGED
    assert diff.observe("edited", "EDITED", B, "f, line 2") is Kind.CHANGED
    assert diff.observe("back", "BACK", A, "f, line 3") is Kind.RETURNED
    assert diff.observe("fresh", "FRESH", A, "f, line 4") is Kind.NEW
    assert [key for key, _ in diff.departed()] == ["gone"]
    counts = diff.counts(departed=1)
    assert counts.as_dict() == {
        "new": 1,
        "changed": 1,
        "unchanged": 1,
        "departed": 1,
        "returned": 1,
        "held_back": 0,
    }
    assert diff.records == 4


def test_duplicate_is_held_back_whole_and_not_departed() -> None:
    diff = make()
    assert diff.observe("edited", "EDITED", B, "f, line 2") is Kind.CHANGED
    assert diff.observe("edited", "edited", A, "f, line 9") is Kind.HELD_BACK
    assert diff.observe("edited", "Edited", A, "f, line 12") is Kind.HELD_BACK
    assert diff.held_back_keys == {"edited"}
    [held] = diff.held_back
    assert held.where == ("f, line 2", "f, line 9", "f, line 12")
    assert "more than once" in held.reason
    assert "edited" not in [key for key, _ in diff.departed()]
    assert diff.counts(departed=0).changed == 0
    assert diff.counts(departed=0).held_back == 1


def test_record_without_match_id_is_held_back() -> None:
    diff = make()
    diff.observe_unidentified("f, line 7", "the record has no primary_id")
    assert [(h.match_id, h.where) for h in diff.held_back] == [(None, ("f, line 7",))]
    assert diff.counts(departed=0).held_back == 1
