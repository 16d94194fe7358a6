"""The fast reader and the full parse agree: same counts, byte-identical delta files.

Hypothesis writes two days of the same generated population with random spellings of the same
content — indentation, CRLF, comments inside and between records, shuffled order, character
references for literal characters, single-quoted attributes, CDATA, a root carrying a prefixed
namespace declaration. One world runs the files as they are (the fast reader takes them,
unless a spelling makes it step aside); the other runs the same files with a DOCTYPE
prepended, which the fast reader never vouches for, so every record is read in full. Whatever
the spelling, both worlds must send the same records in the same bytes, and a spelling alone
never makes a patron "changed". Every record carries the day's status_date: on the third day
the fast reader finds the records of the second it found unchanged by their undated digests
(where their spelling lets it), which must not change what is sent either.
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from pathlib import Path
from typing import Any

import generate_extract
import pytest
from helpers import count_parses, run_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

PATRONS = 40


@st.composite
def spellings(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "indent": draw(st.sampled_from(["", "  ", "    ", "\t"])),
        "crlf": draw(st.booleans()),
        "comments": draw(st.booleans()),
        "shuffle": draw(st.randoms(use_true_random=False)) if draw(st.booleans()) else None,
        "charrefs": draw(st.floats(min_value=0.0, max_value=0.3)),
        "single_quotes": draw(st.booleans()),
        "cdata": draw(st.booleans()),
        "namespaced_root": draw(st.booleans()),
        "seed": draw(st.integers(min_value=0, max_value=2**16)),
    }


def _respell(user_xml: str, spelling: dict[str, Any], record: int) -> str:
    element = etree.fromstring(user_xml, etree.XMLParser(remove_blank_text=True))
    if spelling["indent"]:
        etree.indent(element, space=spelling["indent"])
    text = etree.tostring(element, encoding="unicode")
    rng = __import__("random").Random(spelling["seed"] * 1000 + record)
    if spelling["comments"] and rng.random() < 0.5:
        # A comment between two child elements: not part of the record's meaning.
        text = text.replace("</primary_id>", "</primary_id><!-- from the SIS -->", 1)
    if spelling["single_quotes"]:
        text = re.sub(r'(\s[\w:]+)="([^"\']*)"', r"\1='\2'", text)

    def spell_text(match: re.Match[str]) -> str:
        body = match.group(1)
        if spelling["cdata"] and body.strip() and "&" not in body and rng.random() < 0.2:
            return f"><![CDATA[{body}]]><"
        parts = re.split(r"(&[^;]*;)", body)  # the serializer's own references stay whole
        for index in range(0, len(parts), 2):
            parts[index] = "".join(
                f"&#{ord(c)};" if c.isalpha() and rng.random() < spelling["charrefs"] else c
                for c in parts[index]
            )
        return ">" + "".join(parts) + "<"

    return re.sub(r">([^<>]*)<", spell_text, text)


def _write(path: Path, day: int, spelling: dict[str, Any], *, doctype: bool) -> Path:
    # The day's status_date, near the day of the run as a date stamped by the SIS is.
    stamp = f"<status_date>{dt.date.today() - dt.timedelta(days=2 - day)}Z</status_date>"
    records = [
        _respell(re.sub("<status_date>[^<]*</status_date>", stamp, xml), spelling, number)
        for number, (_, xml) in enumerate(generate_extract.records(patrons=PATRONS, day=day))
    ]
    if spelling["shuffle"] is not None:
        order = list(range(len(records)))
        __import__("random").Random(spelling["seed"] + day).shuffle(order)
        records = [records[i] for i in order]
    root = (
        '<users xmlns:sis="urn:example:sis" sis:export="nightly">'
        if spelling["namespaced_root"]
        else "<users>"
    )
    between = "\n<!-- next patron -->\n" if spelling["comments"] else "\n"
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        + ("<!DOCTYPE users>\n" if doctype else "")
        + root
        + "\n"
        + between.join(records)
        + "\n</users>\n"
    )
    if spelling["crlf"]:
        body = body.replace("\n", "\r\n")
    path.write_bytes(body.encode("utf-8"))
    return path


def _delta(outbox: Path, result: dict[str, Any]) -> list[bytes]:
    """The parts of the run's delta file in order (their names carry the time of the run)."""
    if result["batch"] is None:
        return []
    with zipfile.ZipFile(outbox / Path(result["batch"]["file"]).name) as archive:
        return [archive.read(name) for name in archive.namelist()]


def _world(
    folder: Path, spelling: dict[str, Any], *, doctype: bool, parsed: list[int] | None = None
) -> list[dict[str, Any]]:
    """Run the three days; ``parsed`` (the fast reader's parses, counted) is kept per day."""
    folder.mkdir()
    config = folder / "config.toml"
    config.write_text(
        f'[state]\nurl = "sqlite:///{folder / "state.db"}"\n'
        '[feeds.patrons]\ntimezone = "America/Chicago"\nignore = ["status_date"]\n'
    )
    days = []
    for day in (0, 1, 2):
        extract = _write(folder / f"day{day}.xml", day, spelling, doctype=doctype)
        before = len(parsed or [])
        result = run_json(config, str(extract))
        result["parsed"] = len(parsed or []) - before
        result["delta"] = _delta(folder / "outbox" / "patrons", result)
        days.append(result)
    return days


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spelling=spellings())
def test_fast_and_full_reading_send_the_same_bytes(
    tmp_path_factory: Any, spelling: dict[str, Any]
) -> None:
    base = tmp_path_factory.mktemp("spelling")
    fast = _world(base / "fast", spelling, doctype=False)
    full = _world(base / "full", spelling, doctype=True)
    truth = generate_extract.truth(patrons=PATRONS, day=1)
    for fast_day, full_day in zip(fast, full, strict=True):
        assert full_day["extract"]["read_in_full"] is not None
        assert fast_day["counts"] == full_day["counts"]
        assert fast_day["delta"] == full_day["delta"]  # every part, byte for byte
    assert fast[1]["counts"]["changed"] == len(truth["changed"])
    assert fast[1]["counts"]["new"] == len(truth["new"])
    assert fast[1]["counts"]["departed"] == len(truth["departed"])


def test_the_fast_reader_takes_a_plain_file_and_says_when_it_steps_aside(
    tmp_path_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The property above is only worth something if the first world really reads fast.
    plain = {
        "indent": "  ",
        "crlf": True,
        "comments": True,
        "shuffle": None,
        "charrefs": 0.1,
        "single_quotes": True,
        "cdata": True,
        "namespaced_root": True,
        "seed": 7,
    }
    base = tmp_path_factory.mktemp("plain")
    parsed = count_parses(monkeypatch)
    fast = _world(base / "fast", plain, doctype=False, parsed=parsed)
    full = _world(base / "full", plain, doctype=True)
    assert [day["extract"]["read_in_full"] for day in fast] == [None, None, None]
    # Day 1: every record's status_date moved, each read in full. Day 2 too: every record
    # of this spelling holds a comment or a CDATA section, where a date could hide.
    assert [day["parsed"] for day in fast[1:]] == [day["extract"]["records"] for day in fast[1:]]
    # Without them, the records found unchanged on day 1 are read by their undated digests.
    bare = {**plain, "comments": False, "cdata": False, "charrefs": 0.0}
    parsed.clear()
    undated = _world(base / "undated", bare, doctype=False, parsed=parsed)
    assert undated[1]["parsed"] == undated[1]["extract"]["records"]
    assert 0 < undated[2]["parsed"] < undated[2]["extract"]["records"] / 2
    assert undated[2]["counts"] == fast[2]["counts"]
    # The same records sent in the same bytes, however each was read.
    assert undated[2]["delta"] and undated[2]["delta"] == fast[2]["delta"]
    assert fast[2]["delta"] == full[2]["delta"] and fast[2]["delta"]
    assert (
        full[0]["extract"]["read_in_full"] == "a DOCTYPE or other declaration (at byte 40)"
    )  # after the CRLF XML declaration
    assert fast[1]["delta"] == full[1]["delta"] and fast[1]["delta"]
