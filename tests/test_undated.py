"""A status_date stamped with the day of the extract does not make every record be read in full.

Its bytes differ every day, but the record's digest leaves the field out: a record found
unchanged keeps its undated digest, and the next day's copy, the same bytes with another date,
is found by it without being parsed. Where the bytes alone could mislead (the tag inside a
comment or a CDATA section, or a status_date that is not the record's own), nothing is kept
that could hide a change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from helpers import count_calls, count_parses, read_delta, record, run_json, users, write

from deltasync.source import undated
from deltasync.source import xml as xml_source

TODAY = dt.date.today()
"""A date moved daily is near the day of the run (the feed's, in Chicago: a day apart at most)."""


def dated(match_id: str, day: str, *, name: str = "Doe", inside: str = "") -> str:
    """A record with ``<status_date>`` of ``day`` (None: without one), ``inside`` added."""
    stamp = f"  <status_date>{day}</status_date>\n" if day else ""
    return record(match_id, name=name).replace(
        "  <account_type>", stamp + inside + "  <account_type>", 1
    )


def note(text: str) -> str:
    return (
        "  <user_notes><user_note><note_type>OTHER</note_type>"
        f"<note_text>{text}</note_text><user_viewable>false</user_viewable>"
        "<popup_note>false</popup_note><created_by>SIS</created_by>"
        "<created_date>2027-01-01T00:00:00Z</created_date>"
        "</user_note></user_notes>\n"
    )


def test_the_undated_digest_leaves_out_only_a_plain_date() -> None:
    one = dated("A", "2027-01-04Z").encode()
    other_day = dated("A", "2027-01-05").encode()
    assert undated.digest(one, 7) == undated.digest(other_day, 7) is not None
    assert undated.digest(one, 7) != undated.digest(one, 8)  # the document's seed counts
    assert undated.digest(dated("A", "2027-01-04Z", name="Roe").encode(), 7) != undated.digest(
        one, 7
    )
    for without in (
        record("A"),  # no date
        record("A").replace("<status", "<status_date></status_date><status", 1),  # empty
        dated("A", "2027-01-04Z", inside="  <status_date>2027-01-04Z</status_date>\n"),  # two
        dated("A", "2027-01-04&#90;"),  # a reference
        dated("A", "<![CDATA[2027-01-04Z]]>"),
        dated("A", "2027-01-04\n"),  # a line end: lines after it would be numbered wrong
    ):
        assert undated.digest(without.encode(), 7) is None, without


def test_records_whose_only_change_is_the_status_date_are_read_by_their_bytes(
    db_url: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(db_url)
    parsed = count_parses(monkeypatch)
    names = ("A", "B", "C", "D")

    def day(number: int, **names_of: str) -> dict[str, Any]:
        stamp = f"{TODAY - dt.timedelta(days=number)}Z"  # stamped with the day of the extract
        path = write(
            tmp_path,
            f"d{number}.xml",
            users(*(dated(n, stamp, name=names_of.get(n, "Doe")) for n in names)),
        )
        parsed.clear()
        return run_json(config, str(path))

    assert day(0)["counts"]["new"] == 4
    # The first day with another date: each record read in full, found unchanged.
    result = day(1)
    assert result["counts"]["unchanged"] == 4 and result["batch"] is None
    assert len(parsed) == 4
    # From then on the date alone is not read: no record parsed.
    result = day(2)
    assert result["counts"]["unchanged"] == 4 and result["batch"] is None
    assert parsed == []
    # A change beside the date is a change, read in full and sent.
    result = day(3, B="Roe")
    assert result["counts"] == {
        "new": 0,
        "changed": 1,
        "unchanged": 3,
        "departed": 0,
        "returned": 0,
        "held_back": 0,
    }
    assert len(parsed) == 1
    sent = read_delta(Path(result["batch"]["file"]))
    assert list(sent) == ["B"] and sent["B"].findtext("last_name") == "Roe"
    assert sent["B"].findtext("status_date") == f"{TODAY - dt.timedelta(days=3)}Z"


def test_a_date_in_a_comment_or_in_a_notes_text_hides_no_change(
    db_url: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_config(db_url, departure={"max_changes": "100%"})
    parsed = count_parses(monkeypatch)

    def extract(number: int, noted: int, *, spaced: bool = False) -> Path:
        stamp = str(TODAY - dt.timedelta(days=number))
        in_cdata = f"<![CDATA[<status_date>2027-01-{4 + noted:02d}</status_date>]]>"
        # Its own date spelled with a blank in the tag: only the note's text has the tag.
        own = f"  <status_date >{TODAY}Z</status_date >\n"
        cdata = dated("CDATA", "", inside=own + note(in_cdata))
        # A status_date of a note's (Alma's schema has none): part of the record's digest.
        nested = note("x").replace(
            "</user_note>", f"<status_date>2027-01-{4 + noted:02d}</status_date></user_note>"
        )
        nesting = dated("NESTED", "", inside=own + nested)
        # The same in an element of another namespace: lxml's name for it is not
        # status_date, its bytes' is.
        foreign = (
            f'  <user_extension xmlns="urn:example:x"><status_date>2027-01-{4 + noted:02d}'
            "</status_date></user_extension>\n"
        )
        namespaced = dated("NAMESPACED", "", inside=own + foreign)
        return write(
            tmp_path,
            f"d{number}.xml",
            users(
                nesting.replace("\n  ", "\n    ") if spaced else nesting,
                namespaced.replace("\n  ", "\n    ") if spaced else namespaced,
                # The tag in a comment: not the record's date, but nothing to hide either.
                dated("COMMENT", "", inside=f"  <!-- <status_date>{stamp}</status_date> -->\n"),
                # The tag as the text of a note: the note changes with it.
                cdata.replace("\n  ", "\n    ") if spaced else cdata,
                # A record's own date beside a comment: read in full each day, unchanged.
                dated("BESIDE", f"{stamp}Z", inside="  <!-- from the SIS -->\n"),
                dated("PLAIN", f"{stamp}Z"),
            ),
        )

    assert run_json(config, str(extract(0, 0)))["counts"]["new"] == 6
    # Every record's bytes differ (a date, or the notes' records indented anew), none
    # changed: each read in full and found unchanged.
    parsed.clear()
    result = run_json(config, str(extract(1, 0, spaced=True)))
    assert result["counts"]["unchanged"] == 6 and result["batch"] is None
    assert len(parsed) == 6
    # The dates in the notes move: those are changes, and they are sent. PLAIN alone is read
    # by its bytes.
    parsed.clear()
    result = run_json(config, str(extract(2, 2, spaced=True)))
    assert result["counts"]["changed"] == 3 and result["counts"]["unchanged"] == 3
    sent = read_delta(Path(result["batch"]["file"]), validate=False)
    assert sorted(sent) == ["CDATA", "NAMESPACED", "NESTED"]
    assert "2027-01-06" in (sent["CDATA"].findtext(".//note_text") or "")
    assert sent["NESTED"].findtext(".//user_note/status_date") == "2027-01-06"
    assert len(parsed) == 5


def test_a_date_that_does_not_move_keeps_records_found_by_their_raw_digests(
    write_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A day that spells every record anew has each read in full and found unchanged. Where
    # the date is the day the record last changed, long ago, the raw digest is kept: the next
    # day finds every record by it, without looking for an undated digest at all.
    looked = count_calls(monkeypatch, xml_source, "undated_digest")
    parsed = count_parses(monkeypatch)
    for old, stamp in ((True, "2019-08-26Z"), (False, f"{TODAY}Z")):
        folder = tmp_path / stamp
        folder.mkdir()
        config = write_config(f"sqlite:///{folder / 'deltasync.db'}")
        records = [dated(n, stamp) for n in ("A", "B", "C")]
        spaced = [r.replace("\n  ", "\n\t") for r in records]
        run_json(config, str(write(folder, "d0.xml", users(*records))))
        parsed.clear()
        result = run_json(config, str(write(folder, "d1.xml", users(*spaced))))
        assert result["counts"]["unchanged"] == 3 and len(parsed) == 3
        looked.clear()
        parsed.clear()
        # The same records (a comment between them: another file).
        day2 = users("<!-- day 2 -->", *spaced)
        result = run_json(config, str(write(folder, "d2.xml", day2)))
        assert result["counts"]["unchanged"] == 3 and parsed == []
        # A date near today's is kept undated: the record is found by its undated digest.
        assert len(looked) == (0 if old else 3), stamp


def test_an_expiry_rule_that_reads_the_status_date_keeps_every_record_read_in_full(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    # The rule's dates move with the status_date, so the date is part of what the record
    # means: a record whose only change is its date may be changed (a review found it).
    today_there = dt.datetime.now(ZoneInfo("America/Chicago")).date()
    rule = {"name": "stamped-today", "match": {"status_date": f"{today_there}Z"}}
    config = write_config(
        db_url,
        feed={"expiry": {"rules": [{**rule, "expiry": "2035-01-01"}]}},
        departure={"max_changes": "100%"},
    )
    counts = []
    for number, back in enumerate((2, 1, 0)):
        stamp = f"{today_there - dt.timedelta(days=back)}Z"
        path = write(tmp_path, f"d{number}.xml", users(dated("A", stamp), dated("B", "")))
        counts.append(run_json(config, str(path)))
    assert counts[1]["counts"]["unchanged"] == 2
    # Today's date: the rule gives A another expiry date, and that is sent.
    assert counts[2]["counts"]["changed"] == 1
    sent = read_delta(Path(counts[2]["batch"]["file"]))
    assert list(sent) == ["A"] and sent["A"].findtext("expiry_date") == "2035-01-01Z"
