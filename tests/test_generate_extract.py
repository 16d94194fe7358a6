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


def day_records(patrons: int, day: int, **kwargs: float | str) -> dict[str, str]:
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


USER = re.compile(r"<user>.*?</user>", re.DOTALL)
PRIMARY_ID = re.compile(r"<primary_id>([^<]*)</primary_id>")


def raw_users(path: Path) -> dict[str, str]:
    """Each ``<user>`` element of a file exactly as written, keyed by primary id."""
    found = USER.findall(path.read_text(encoding="utf-8"))
    users = {PRIMARY_ID.findall(text)[0]: text for text in found}
    assert len(users) == len(found)
    return users


def content(user: etree._Element) -> bytes:
    """The record with layout and the order of ``<user>``'s children taken out."""
    for el in user.iter():
        if el.text is not None and not el.text.strip():
            el.text = None
        el.tail = None
    user[:] = sorted(user, key=lambda child: str(child.tag))
    return etree.tostring(user, method="c14n")


def test_status_date_version_repeats_unchanged_records_byte_for_byte() -> None:
    patrons = 300
    previous = day_records(patrons, 0, status_date="version", **BUSY)
    last_seen = dict(previous)
    assert {etree.fromstring(x).findtext("status_date") for x in previous.values()} == {
        ge.status_date(0)
    }
    for day in range(1, 6):
        t = ge.truth(patrons=patrons, day=day, **BUSY)
        current = day_records(patrons, day, status_date="version", **BUSY)
        daily = day_records(patrons, day, **BUSY)
        assert current.keys() == daily.keys()
        for pid, xml in current.items():
            # Only status_date tells the two modes apart.
            assert strip_status(xml) == strip_status(daily[pid])
        for pid in set(previous) & set(current):
            assert (previous[pid] == current[pid]) == (pid not in t["changed"]), pid
        for pid in t["returned"]:
            assert current[pid] == last_seen[pid]
        for pid in t["changed"] + t["new"]:
            assert etree.fromstring(current[pid]).findtext("status_date") == ge.status_date(day)
        last_seen.update(current)
        previous = current


def test_status_date_version_in_files_and_cli(tmp_path: Path, schema: etree.XMLSchema) -> None:
    day0, day1, cli = tmp_path / "day0.xml", tmp_path / "day1.xml", tmp_path / "cli.xml"
    ge.write_extract(day0, patrons=400, day=0, status_date="version", shuffle=True)
    ge.write_extract(day1, patrons=400, day=1, status_date="version", shuffle=True)
    assert ge.main(["--patrons", "400", "--day", "1", "--status-date", "version", "--shuffle",
                    "--out", str(cli)]) == 0  # fmt: skip
    assert cli.read_bytes() == day1.read_bytes()
    assert schema.validate(etree.parse(str(day1))), schema.error_log.last_error
    t = ge.truth(patrons=400, day=1)
    before, after = raw_users(day0), raw_users(day1)
    same = {pid for pid in set(before) & set(after) if before[pid] == after[pid]}
    assert t["unchanged"] > 300
    assert same == set(before) & set(after) - set(t["changed"])
    # The default stays what every other test relies on: the day's date on every record.
    daily = tmp_path / "daily.xml"
    ge.write_extract(daily, patrons=400, day=1, shuffle=True)
    assert set(re.findall(r"<status_date>([^<]*)<", daily.read_text())) == {ge.status_date(1)}
    assert daily.read_bytes() != day1.read_bytes()


@pytest.mark.parametrize("indent", [True, False])
def test_reformat_changes_every_record_but_no_content(
    tmp_path: Path, schema: etree.XMLSchema, indent: bool
) -> None:
    plain, reformatted = tmp_path / "plain.xml", tmp_path / "reformat.xml"
    for path, reformat in ((plain, False), (reformatted, True)):
        ge.write_extract(
            path, patrons=300, day=1, shuffle=True, status_date="version", indent=indent,
            reformat=reformat, **BUSY,
        )  # fmt: skip
    assert schema.validate(etree.parse(str(reformatted))), schema.error_log.last_error
    text = reformatted.read_text(encoding="utf-8")
    assert ("\n\t<user>\n\t\t<" in text) == indent and "  <" not in text
    before, after = raw_users(plain), raw_users(reformatted)
    assert list(before) == list(after)  # same records, same record order
    parser = etree.XMLParser(remove_blank_text=True)
    for pid, xml in before.items():
        old = etree.fromstring(xml, parser)
        new = etree.fromstring(after[pid], parser)
        assert [c.tag for c in old] != [c.tag for c in new], pid
        assert sorted(c.tag for c in old) == sorted(c.tag for c in new), pid
        # contact_info keeps its inner order: the schema fixes it.
        assert etree.tostring(old.find("contact_info"), method="c14n") == etree.tostring(
            new.find("contact_info"), method="c14n"
        )
        assert content(old) == content(new), pid
    cli = tmp_path / "cli.xml"
    flags = [] if indent else ["--no-indent"]
    args = ["--patrons", "300", "--day", "1", "--shuffle", "--status-date", "version"]
    rates = [f"--{k.replace('_', '-')}={v}" for k, v in BUSY.items()]
    assert ge.main([*args, *rates, *flags, "--reformat", "--out", str(cli)]) == 0
    assert cli.read_bytes() == reformatted.read_bytes()


def test_reformat_records_are_deterministic() -> None:
    a = list(ge.records(patrons=50, day=2, reformat=True))
    b = list(ge.records(patrons=50, day=2, reformat=True))
    assert a == b
    assert all(xml.startswith("<user>\n\t<") for _, xml in a)
    assert [pid for pid, _ in a] == ge.present_ids(patrons=50, day=2)


def test_rejects_unknown_status_date(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="status_date must be one of daily, version"):
        ge.write_extract(tmp_path / "x.xml", patrons=5, day=0, status_date="weekly")
    with pytest.raises(SystemExit):
        ge.main(["--patrons", "5", "--day", "0", "--status-date", "weekly", "--truth"])
