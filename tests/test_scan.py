"""The pass classifies every patron against the snapshot: what the diff of a run says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from helpers import record, run_json, users, write


def test_each_kind(db_url: str, write_config: Callable[..., Path], tmp_path: Path) -> None:
    config = write_config(db_url, departure={"max_departures": "100%", "max_changes": "100%"})
    names = ("SAME", "EDITED", "GONE", "BACK")
    run_json(config, str(write(tmp_path, "d0.xml", users(*(record(n) for n in names)))))
    run_json(
        config,
        str(write(tmp_path, "d1.xml", users(record("SAME"), record("EDITED"), record("GONE")))),
    )
    day2 = users(record("SAME"), record("EDITED", name="Roe"), record("BACK"), record("FRESH"))
    result = run_json(config, str(write(tmp_path, "d2.xml", day2)))
    assert result["counts"] == {
        "new": 1,
        "changed": 1,
        "unchanged": 1,
        "departed": 1,
        "returned": 1,
        "held_back": 0,
    }
    assert result["extract"]["records"] == 4


def test_duplicate_is_held_back_whole_and_not_departed(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url)
    run_json(config, str(write(tmp_path, "d0.xml", users(record("EDITED"), record("OTHER")))))
    day1 = write(
        tmp_path,
        "d1.xml",
        users(
            record("EDITED", name="Roe"),
            record("OTHER"),
            record("edited"),
            record("Edited", name="Poe"),
        ),
    )
    result = run_json(config, str(day1), exit_code=4)
    [held] = result["held_back"]
    # Each record is 12 lines, from line 3: the copies of EDITED are the 1st, 3rd and 4th.
    assert held["where"] == [f"{day1}, line {n}" for n in (3, 27, 39)]
    assert len(held["where"]) == 3
    assert "more than once" in held["reason"]
    assert result["counts"]["departed"] == 0
    assert result["counts"]["changed"] == 0
    assert result["counts"]["held_back"] == 1


def test_an_unchanged_copy_and_a_changed_one_are_both_held_back(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """One copy read by its bytes alone (tier 1), the other in full: still one duplicate."""
    config = write_config(db_url)
    run_json(config, str(write(tmp_path, "d0.xml", users(record("A"), record("B")))))
    day1 = write(tmp_path, "d1.xml", users(record("A"), record("B"), record("a", name="Roe")))
    result = run_json(config, str(day1), exit_code=4)
    [held] = result["held_back"]
    assert held["match_id"] == "a"
    assert held["where"] == [f"{day1}, line 3", f"{day1}, line 27"]
    assert result["counts"]["unchanged"] == 1 and result["counts"]["departed"] == 0
    # Two byte-identical copies: both read by their bytes, found again for the message.
    day2 = write(tmp_path, "d2.xml", users(record("A"), record("B"), record("B")))
    result = run_json(config, str(day2), exit_code=4)
    [held] = result["held_back"]
    assert held["match_id"] == "B" and len(held["where"]) == 2
    assert result["counts"]["unchanged"] == 1


def test_record_without_match_id_is_held_back(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url)
    nameless = record("X").replace("  <primary_id>X</primary_id>\n", "")
    result = run_json(
        config, str(write(tmp_path, "d0.xml", users(record("A"), nameless))), exit_code=4
    )
    assert [(h["match_id"], h["where"]) for h in result["held_back"]] == [
        (None, [f"{tmp_path / 'd0.xml'}, line 15"])
    ]
    assert result["counts"]["held_back"] == 1
