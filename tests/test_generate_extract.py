"""Tests of scripts/generate_extract.py, the synthetic SIS extract generator."""

from __future__ import annotations

import gzip
import json
import re
import sys
import time
import zipfile
from pathlib import Path

import pytest
from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import generate_extract as ge  # noqa: E402

SCHEMA_PATH = ROOT / "deltasync" / "schema" / "rest_users.xsd"
# Rates high enough that every category shows up in a few hundred patrons over a few days.
BUSY = {"change_rate": 0.15, "depart_rate": 0.05, "return_rate": 0.3, "new_rate": 0.02}
STATUS_DATE = re.compile(r"<status_date>[^<]*</status_date>")


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMA_PATH)))


def strip_status(xml: str) -> str:
    return STATUS_DATE.sub("", xml)


def as_users(texts: list[str]) -> etree._ElementTree:
    doc = "<users>\n" + "\n".join(texts) + "\n</users>"
    return etree.ElementTree(etree.fromstring(doc.encode("utf-8")))


def day_records(patrons: int, day: int, **kwargs: float) -> dict[str, str]:
    return dict(ge.records(patrons=patrons, day=day, **kwargs))


def users_of(data: bytes, *, blank: bool = True) -> list[bytes]:
    root = etree.fromstring(data, etree.XMLParser(remove_blank_text=not blank))
    return [etree.tostring(user, method="c14n") for user in root.iter("user")]


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for suffix in (".xml", ".xml.gz", ".zip"):
        # Same file name: a zip member is named after it.
        a, b = tmp_path / "a" / f"x{suffix}", tmp_path / "b" / f"x{suffix}"
        ge.write_extract(a, patrons=150, day=2, seed=7, **BUSY)
        ge.write_extract(b, patrons=150, day=2, seed=7, **BUSY)
        assert a.read_bytes() == b.read_bytes(), suffix


def test_different_seeds_differ(tmp_path: Path) -> None:
    a, b = tmp_path / "a.xml", tmp_path / "b.xml"
    ge.write_extract(a, patrons=100, day=1, seed=1)
    ge.write_extract(b, patrons=100, day=1, seed=2)
    assert a.read_bytes() != b.read_bytes()
    assert ge.truth(patrons=300, day=2, seed=1, **BUSY) != ge.truth(
        patrons=300, day=2, seed=2, **BUSY
    )


def test_records_validate_against_alma_schema(schema: etree.XMLSchema) -> None:
    for rates in ({}, BUSY):
        for day in range(4):
            texts = [xml for _, xml in ge.records(patrons=300, day=day, seed=3, **rates)]
            assert texts
            doc = as_users(texts)
            assert schema.validate(doc), schema.error_log.last_error


def test_every_version_is_a_real_change(schema: etree.XMLSchema) -> None:
    changed_tags: set[str] = set()
    for number in range(12):
        previous = None
        for version in range(30):
            xml = ge.user_xml(number, version, seed=5, day=version)
            assert schema.validate(as_users([xml])), schema.error_log.last_error
            leaves = {
                (el.tag, el.text, tuple(sorted(el.attrib.items())))
                for el in etree.fromstring(xml.encode()).iter()
                if len(el) == 0 and el.tag != "status_date"
            }
            if previous is not None:
                assert leaves != previous, (number, version)
                changed_tags |= {tag for tag, _, _ in leaves ^ previous}
            previous = leaves
    expected = {
        "email_address", "line1", "phone_number", "user_group", "last_name",
        "statistic_category", "note_text", "expiry_date",
    }  # fmt: skip
    assert expected <= changed_tags


def test_truth_is_consistent_with_records() -> None:
    patrons = 300
    day0 = ge.truth(patrons=patrons, day=0, **BUSY)
    assert day0["present"] == patrons and len(day0["new"]) == patrons
    assert day0["changed"] == day0["departed"] == day0["returned"] == []
    assert day0["unchanged"] == 0

    previous = day_records(patrons, 0, **BUSY)
    last_seen = dict(previous)
    totals = {"new": 0, "changed": 0, "departed": 0, "returned": 0}
    for day in range(1, 6):
        t = ge.truth(patrons=patrons, day=day, **BUSY)
        current = day_records(patrons, day, **BUSY)
        prev_ids, cur_ids = set(previous), set(current)
        new, changed = set(t["new"]), set(t["changed"])
        departed, returned = set(t["departed"]), set(t["returned"])
        assert all(t[k] == sorted(t[k]) for k in totals)
        assert len(new | changed | departed | returned) == sum(
            map(len, (new, changed, departed, returned))
        )
        assert cur_ids == (prev_ids - departed) | new | returned
        assert set(ge.present_ids(patrons=patrons, day=day, **BUSY)) == cur_ids
        assert (
            t["present"] == len(cur_ids) == len(prev_ids) - len(departed) + len(new) + len(returned)
        )
        assert t["unchanged"] == len(prev_ids & cur_ids) - len(changed)
        assert departed <= prev_ids and not departed & cur_ids
        assert not new & set(last_seen)
        assert returned <= set(last_seen) - prev_ids
        assert changed <= prev_ids & cur_ids
        for pid in prev_ids & cur_ids:
            same = strip_status(previous[pid]) == strip_status(current[pid])
            assert same == (pid not in changed), pid
            assert previous[pid] != current[pid]  # status_date moves every day
        for pid in returned:
            assert strip_status(current[pid]) == strip_status(last_seen[pid])
        for key in totals:
            totals[key] += len(t[key])
        last_seen.update(current)
        previous = current
    assert all(totals.values()), totals


def test_compressed_formats_round_trip(tmp_path: Path) -> None:
    plain, packed, archive = tmp_path / "x.xml", tmp_path / "x.xml.gz", tmp_path / "x.zip"
    n = ge.write_extract(plain, patrons=200, day=2, **BUSY)
    assert ge.write_extract(packed, patrons=200, day=2, **BUSY) == n
    assert ge.write_extract(archive, patrons=200, day=2, members=3, **BUSY) == n
    expected = users_of(plain.read_bytes())
    assert len(expected) == n
    assert users_of(gzip.decompress(packed.read_bytes())) == expected
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        assert names == ["x_01.xml", "x_02.xml", "x_03.xml"]
        parts = [users_of(zf.read(name)) for name in names]
    assert all(parts) and sum(parts, []) == expected
    single = tmp_path / "y.zip"
    ge.write_extract(single, patrons=50, day=0)
    with zipfile.ZipFile(single) as zf:
        assert zf.namelist() == ["y.xml"]


def test_root_crlf_and_declaration(tmp_path: Path) -> None:
    lf, crlf = tmp_path / "lf.xml", tmp_path / "crlf.xml"
    ge.write_extract(lf, patrons=40, day=1)
    ge.write_extract(crlf, patrons=40, day=1, root="userRecords", crlf=True)
    lf_bytes, crlf_bytes = lf.read_bytes(), crlf.read_bytes()
    assert lf_bytes.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<users>\n  <user>')
    assert b"\r" not in lf_bytes
    assert crlf_bytes.count(b"\n") == crlf_bytes.count(b"\r\n") == lf_bytes.count(b"\n")
    assert etree.fromstring(crlf_bytes).tag == "userRecords"
    assert users_of(crlf_bytes) == users_of(lf_bytes)


def test_indent_false_has_no_whitespace_between_elements(tmp_path: Path) -> None:
    compact, indented = tmp_path / "compact.xml", tmp_path / "indented.xml"
    ge.write_extract(compact, patrons=30, day=1, indent=False)
    ge.write_extract(indented, patrons=30, day=1)
    body = compact.read_text(encoding="utf-8").split("\n", 1)[1]
    assert re.search(r">\s+<", body) is None
    assert users_of(compact.read_bytes()) == users_of(indented.read_bytes(), blank=False)


def test_shuffle_changes_order_not_content(tmp_path: Path) -> None:
    ordered, shuffled = tmp_path / "o.xml", tmp_path / "s.xml"
    ge.write_extract(ordered, patrons=200, day=1)
    ge.write_extract(shuffled, patrons=200, day=1, shuffle=True)
    a, b = users_of(ordered.read_bytes()), users_of(shuffled.read_bytes())
    assert a != b and sorted(a) == sorted(b)
    ids = [pid for pid, _ in ge.records(patrons=200, day=1, shuffle=True)]
    assert ids != sorted(ids) and sorted(ids) == ge.present_ids(patrons=200, day=1)


def test_record_content_is_realistic() -> None:
    day = 3
    root = as_users(list(day_records(300, day, **BUSY).values())).getroot()
    users = root.findall("user")
    assert users
    for user in users:
        assert user.findtext("status_date") == "2027-01-07Z"
        addresses = user.findall("contact_info/addresses/address")
        emails = user.findall("contact_info/emails/email")
        phones = user.findall("contact_info/phones/phone")
        assert 1 <= len(addresses) <= 3 and 1 <= len(emails) <= 2
        assert [a.get("preferred") for a in addresses].count("true") == 1
        assert [e.get("preferred") for e in emails].count("true") == 1
        assert [p.get("preferred") for p in phones].count("true") == (1 if phones else 0)
        expiry, purge = user.findtext("expiry_date"), user.findtext("purge_date")
        assert expiry and purge and expiry.endswith("Z") and expiry <= purge
        assert "2031" <= expiry[:4] and purge[:4] <= "2036"
        assert user.find("user_group").get("desc") in ge.GROUPS.values()
        types = [i.findtext("id_type") for i in user.iter("user_identifier")]
        assert types == ["UNIV_ID", "BARCODE"]
    notes = [t for u in users for t in u.itertext() if "&" in t or "<" in t]
    assert notes, "some note text should need escaping"
    names = {u.findtext("last_name") for u in users}
    assert any("'" in name for name in names if name)
    assert any(not name.isascii() for name in names if name)


def test_identifiers_are_unique() -> None:
    numbers = range(20_000)
    for make in (ge.primary_id, ge.univ_id, ge.barcode):
        values = [make(n) for n in numbers]
        assert len({v.lower() for v in values}) == len(values)
    for code in map(ge.barcode, range(500)):
        digits = [int(c) for c in reversed(code)]
        total = sum(digits[0::2]) + sum(d * 2 - 9 if d > 4 else d * 2 for d in digits[1::2])
        assert len(code) == 14 and total % 10 == 0


def test_simulation_is_fast() -> None:
    start = time.perf_counter()
    result = ge.truth(patrons=100_000, day=3)
    assert time.perf_counter() - start < 2.0
    assert result["present"] > 99_000 and result["changed"]


def test_cli_truth_and_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.zip"
    args = ["--patrons", "120", "--day", "2", "--seed", "4", "--members", "2", "--truth"]
    assert ge.main([*args, "--out", str(out), "--change-rate", "0.1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == ge.truth(patrons=120, day=2, seed=4, change_rate=0.1)
    with zipfile.ZipFile(out) as zf:
        assert len(zf.namelist()) == 2
    with pytest.raises(SystemExit):
        ge.main(["--patrons", "10", "--day", "1"])


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ge.write_extract(tmp_path / "x.csv", patrons=5, day=0)
    with pytest.raises(ValueError):
        ge.write_extract(tmp_path / "x.xml", patrons=5, day=0, members=2)
    with pytest.raises(ValueError):
        ge.truth(patrons=5, day=1, change_rate=1.5)
