"""Primary IDs compare the way Alma (Java) compares them, and IDs that another common case
folding would merge are held back; stores made with the old folding are migrated."""

from __future__ import annotations

import json
import shutil
import subprocess
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from helpers import invoke, read_delta, record, run_json, users, write
from sqlalchemy import text

from deltasync.matchid import MatchIdRule
from deltasync.store import create_store_engine
from deltasync.store.engine import alembic_config

MICRO, MU = "\u00b5", "\u03bc"  # MICRO SIGN and GREEK SMALL LETTER MU: one in Java


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        ("JDoe", "jdoe", True),
        ("İD1", "iD1", True),  # Java: toLowerCase('İ') is 'i'
        ("ıD2", "ID2", True),  # Java: toUpperCase('ı') is 'I'
        (f"{MICRO}7", f"{MU}7", True),
        ("ǅ5", "ǆ5", True),  # a titlecase letter
        ("σς", "ΣΣ", True),  # final sigma, letter by letter
        ("STRASSE3", "straße3", False),  # different lengths: never equal in Java
        ("ß", "ẞ", True),  # capital sharp s lowers to ß
    ],
)
def test_alma_fold_is_javas_equals_ignore_case(one: str, other: str, same: bool) -> None:
    from deltasync.matchid import alma_fold

    assert (alma_fold(one) == alma_fold(other)) is same
    assert len(alma_fold(one)) == len(one)


JAVA_FOLD = """
public class Fold {
    public static void main(String[] args) {
        StringBuilder out = new StringBuilder();
        for (int cp = 0; cp < 0x110000; cp++) {
            if (!Character.isDefined(cp) || Character.getType(cp) == Character.SURROGATE) continue;
            int folded = Character.toLowerCase(Character.toUpperCase(cp));
            out.append(cp).append(' ').append(folded).append('\\n');
        }
        System.out.print(out);
    }
}
"""


@pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime to compare with")
def test_alma_fold_is_javas_for_every_letter(tmp_path: Path) -> None:
    """Java's equalsIgnoreCase takes two letters for one when lower(upper(c)) agree; the fold
    must give that for every character both Unicode versions know."""
    from deltasync.matchid import alma_fold

    source = tmp_path / "Fold.java"
    source.write_text(JAVA_FOLD)
    out = subprocess.run(
        ["java", str(source)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    java = {int(a): int(b) for a, b in (line.split() for line in out.splitlines())}
    differ = [
        hex(cp)
        for cp, folded in java.items()
        # Only characters both Unicode versions know (Java's and Python's differ).
        if unicodedata.category(chr(cp)) != "Cn" and ord(alma_fold(chr(cp))) != folded
    ]
    assert differ == []


def test_identifier_match_ids_compare_exactly() -> None:
    rule = MatchIdRule("UNIV_ID")
    assert rule.key("AbC") == "AbC" and rule.folds("AbC") == {}
    assert MatchIdRule().folds("straße3") == {"casefold()": "strasse3"}


def test_spellings_alma_takes_for_one_patron_are_one(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url)
    run_json(config, str(write(tmp_path, "d0.xml", users(record(f"{MICRO}7"), record("A")))))
    result = run_json(config, str(write(tmp_path, "d1.xml", users(record(f"{MU}7"), record("A")))))
    # The SIS changed the spelling: the same patron, sent again, never new + departed.
    assert result["counts"]["new"] == 0 and result["counts"]["departed"] == 0
    assert result["counts"]["changed"] == 1
    assert set(read_delta(Path(result["batch"]["file"]))) == {f"{MU}7"}
    history = json.loads(invoke(config, "history", f"{MICRO}7", "--json").stdout)
    assert [v["kind"] for v in history] == ["new", "changed"]


def test_ids_that_some_folding_merges_are_held_back(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url)
    extract = write(
        tmp_path,
        "d0.xml",
        users(
            record("A"),
            record("STRASSE3", barcode="b1"),
            record("straße3", barcode="b2"),
            record("İD1", barcode="b3"),
            record("iD1", barcode="b4"),
            record("ıD2", barcode="b5"),
            record("ID2", barcode="b6"),
        ),
    )
    result = run_json(config, str(extract), exit_code=4)
    assert set(read_delta(Path(result["batch"]["file"]))) == {"A"}
    assert result["counts"]["new"] == 1 and result["counts"]["held_back"] == 4
    held = {h["match_id"]: h["reason"] for h in result["held_back"]}
    assert held == {
        "iD1": "match ID occurs more than once in the extract",
        "ID2": "match ID occurs more than once in the extract",
        "STRASSE3": "match IDs STRASSE3 and straße3 are one under casefold(): Alma may take "
        "them for one patron",
        "straße3": "match IDs STRASSE3 and straße3 are one under casefold(): Alma may take "
        "them for one patron",
    }
    codes = sorted((f["code"], f["match_id"]) for f in result["checks"]["findings"])
    assert codes == [
        ("match-id-ambiguous", "STRASSE3"),
        ("match-id-ambiguous", "straße3"),
        ("match-id-duplicate", "ID2"),
        ("match-id-duplicate", "iD1"),
    ]
    # Held back, so not departed either when a later extract still holds them.
    copy = tmp_path / "d1.xml"
    copy.write_bytes(extract.read_bytes().replace(b"\n", b"\r\n"))
    later = run_json(config, str(copy), exit_code=4)
    assert later["counts"]["departed"] == 0


def test_a_huge_match_id_is_a_record_finding(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url)
    huge = "X" * 5000
    extract = write(tmp_path, "d0.xml", users(record("A"), record(huge)))
    result = run_json(config, str(extract), exit_code=4)
    assert result["counts"]["new"] == 1 and result["counts"]["held_back"] == 1
    # Alma's schema says so too (a warning); the finding that holds it back is its own.
    [finding] = [f for f in result["checks"]["findings"] if f["policy"] == "error"]
    assert finding["code"] == "match-id-too-long"
    assert finding["message"] == "the match ID has 5000 characters; Alma takes at most 255"
    assert finding["match_id"] == huge[:40] + "…"
    assert set(read_delta(Path(result["batch"]["file"]))) == {"A"}


def _migrate(url: str, revision: str) -> None:
    engine = create_store_engine(url)
    config = alembic_config()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            if revision == "head":
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)
    finally:
        engine.dispose()


def _execute(url: str, statement: str) -> list[tuple[object, ...]]:
    engine = create_store_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_stored_keys_are_refolded_and_collisions_are_never_expired(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url, departure={"max_departures": "100%"})
    day0 = users(record("İD1"), record(f"{MICRO}7"), record("Q"), record("A"))
    run_json(config, str(write(tmp_path, "d0.xml", day0)))
    _migrate(db_url, "0003")  # the store as the lower() folding left it
    keys = dict(_execute(db_url, "SELECT match_id, match_key FROM patron"))
    assert keys == {"İD1": "i\u0307d1", f"{MICRO}7": f"{MICRO}7", "Q": "q", "A": "a"}
    # Under lower() a second spelling was a second patron, sent separately to Alma.
    _execute(
        db_url, f"UPDATE patron SET match_id = '{MU}7', match_key = '{MU}7' WHERE match_id = 'Q'"
    )

    _migrate(db_url, "head")
    keys = dict(_execute(db_url, "SELECT match_id, match_key FROM patron"))
    assert keys["İD1"] == "id1" and keys["A"] == "a"
    # μ7 was written last (the higher version): it keeps the key; µ7 is retired, departed.
    assert keys[f"{MU}7"] == f"{MU}7" and keys[f"{MICRO}7"].startswith("\x01")
    states = dict(_execute(db_url, "SELECT match_id, state FROM patron"))
    assert states[f"{MICRO}7"] == "departed" and states[f"{MU}7"] == "present"

    # Nothing looks new, and no expiration record goes out for the retired spelling: Alma
    # holds one user under both, and that user is still here.
    day1 = users(record("İD1"), record(f"{MU}7"), record("A"))
    result = run_json(config, str(write(tmp_path, "d1.xml", day1)))
    assert result["counts"]["new"] == 0 and result["counts"]["departed"] == 0


@pytest.mark.parametrize(("stored", "arriving"), [("Straße9", "STRASSE9"), ("STRASSE9", "Straße9")])
def test_a_record_read_by_its_bytes_and_held_back_by_a_folding_counts_once(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path, stored: str, arriving: str
) -> None:
    """The unchanged ``stored`` is read by its bytes; a new ``arriving`` holds both back. It is
    counted held back and not unchanged too, and its stored record stands (not seen), as when
    every record is read in full (a DOCTYPE makes the fast reader step aside). Stored with a
    folding of its own or, ASCII, as the form the newcomer folds to."""
    config = write_config(db_url)
    before = users(record("A", barcode="b0"), record(stored, barcode="b1"))
    run_json(config, str(write(tmp_path, "d0.xml", before)))
    day1 = users(
        record("A", barcode="b0"), record(stored, barcode="b1"), record(arriving, barcode="b2")
    )
    in_full = write(tmp_path, "full.xml", day1.replace("<users>", "<!DOCTYPE users>\n<users>", 1))
    expected = run_json(config, "--dry-run", str(in_full), exit_code=4)
    assert expected["extract"]["read_in_full"], expected
    fast = run_json(config, str(write(tmp_path, "d1.xml", day1)), exit_code=4)
    assert fast["extract"]["read_in_full"] is None
    for result in (expected, fast):
        counts = {k: result["counts"][k] for k in ("new", "changed", "unchanged", "held_back")}
        assert counts == {"new": 0, "changed": 0, "unchanged": 1, "held_back": 2}
        assert result["extract"]["records"] == 3
    assert sorted(h["match_id"] for h in fast["held_back"]) == ["STRASSE9", "Straße9"]
    # Held back: the stored version was last seen in the extract before this one.
    (version,) = json.loads(invoke(config, "history", stored, "--json").stdout)
    assert version["last_seen"] == version["first_seen"]
