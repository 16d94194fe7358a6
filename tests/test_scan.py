"""The pass classifies every patron against the snapshot: what the diff of a run says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from helpers import record, run_json, users, write
from sqlalchemy import create_engine, text


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


def test_lines_after_records_read_by_their_bytes(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    # A record read by its bytes is not read again to number the lines after it: the line
    # ends stored with its raw digest count for it; a store without them (from before they
    # were kept) has them counted on its next run, and kept.
    config = write_config(db_url)

    def squashed(match_id: str) -> str:
        return record(match_id).replace("\n  ", "")

    def spread(match_id: str) -> str:
        return record(match_id).replace("\n  ", "\n\n    ")

    same = [record("A"), squashed("B"), "<!-- a note\nover two lines -->", spread("C")]
    same += [record("D"), squashed("E")]
    nameless = record("X").replace("<primary_id>X</primary_id>", "")
    run_json(config, str(write(tmp_path, "d0.xml", users(*same))))
    engine = create_engine(db_url)
    for day, forget in ((1, False), (2, True), (3, False)):
        if forget:
            with engine.begin() as conn:
                conn.execute(text("UPDATE patron SET raw_lines = NULL"))
        # After every record read by its bytes: a copy of C, and a record read in full.
        content = users(f"<!-- day {day}\n-->", *same, spread("C"), nameless)
        path = write(tmp_path, f"d{day}.xml", content)
        starts = [n for n, line in enumerate(content.splitlines(), 1) if line.startswith("<user>")]
        result = run_json(config, str(path), exit_code=4)
        where = sorted(w for held in result["held_back"] for w in held["where"])
        # Records 3 and 6 are the copies of C, record 7 the one without a match ID.
        assert where == sorted(f"{path}, line {starts[i]}" for i in (2, 5, 6)), day
        assert result["counts"]["unchanged"] == 4
        with engine.connect() as conn:
            unknown = conn.execute(text("SELECT count(*) FROM patron WHERE raw_lines IS NULL"))
            assert unknown.scalar() == 0, day
    engine.dispose()


def test_present_patrons_taken_whole_read_as_they_would_one_by_one() -> None:
    # The pass takes each page's digests and line ends in bulk (leads, keyed patrons); what
    # it reads back must be what the one-at-a-time forms give.
    import xxhash

    from deltasync.fingerprint import LEAD_SHIFT, leads_of, term_of
    from deltasync.store.snapshot import MAX_KEYED_LINES, keyed, keyed_patron

    digests = [xxhash.xxh3_128_digest(str(i).encode()) for i in range(1000)]
    assert [lead >> LEAD_SHIFT for lead in leads_of(digests)] == [term_of(d) for d in digests]
    uneven = [*digests[:3], b"\xff" * 5, b"\x01\x02"]  # a damaged row: one at a time
    assert [lead >> LEAD_SHIFT for lead in leads_of(uneven)] == [term_of(d) for d in uneven]
    for patron, lines, known in (
        (1, -1, -1),
        (1, 0, 0),
        (2**40 - 1, 5, 5),
        (7, MAX_KEYED_LINES, MAX_KEYED_LINES),
        (7, MAX_KEYED_LINES + 1, -1),
    ):
        assert keyed_patron(keyed(patron, lines)) == (patron, known)
