"""Record-level pre-flight checks through `run` and `check`: one bad record per code.

Each case starts from a day on which patrons A and B were sent, then changes A in one way.
A finding of policy ``error`` holds A back (exit 4, nothing about A stored, A not in the file);
``warn`` sends A and reports; ``fix`` sends the repaired A and reports the repair.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import EMAIL, invoke, read_delta, record, run_json, users, write
from lxml import etree

from deltasync.checks import FILE_CODES, RECORD_CODES
from deltasync.errors import ConfigError


@dataclass(frozen=True)
class Case:
    """How to spoil A, and what a run must do about it."""

    old: str
    new: str
    policy: str
    sent: Callable[[etree._Element], bool] | None = None
    """For warn and fix: a test of A as it went out in the delta."""


A = record("A")
SECOND_EMAIL = EMAIL.format(id="second")
CASES: dict[str, Case] = {
    "identifier-taken": Case("<value>BC-A</value>", "<value>bc-b</value>", "error"),
    "identifier-repeated": Case(
        "</user_identifiers>",
        "<user_identifier><id_type>UNIV_ID</id_type><value>a</value></user_identifier>"
        "</user_identifiers>",
        "error",
    ),
    "account-not-external": Case("EXTERNAL", "INTERNAL", "error"),
    "mandatory-missing": Case("<last_name>Doe</last_name>", "", "error"),
    "date-invalid": Case("<expiry_date>2032-06-30Z", "<expiry_date>2032-02-30Z", "error"),
    "code-unknown": Case("<user_group>UGRD", "<user_group>XYZ", "error"),
    "email-no-preferred": Case(
        '<email preferred="true">',
        "<email>",
        "fix",
        lambda a: a.find("contact_info/emails/email").get("preferred") == "true",
    ),
    "address-no-preferred": Case(
        '<address preferred="true">',
        '<address preferred="false">',
        "fix",
        lambda a: a.find("contact_info/addresses/address").get("preferred") == "true",
    ),
    "preferred-multiple": Case(
        "</emails>",
        SECOND_EMAIL + "</emails>",
        "fix",
        lambda a: (
            [e.get("preferred") for e in a.iterfind("contact_info/emails/email")]
            == ["true", "false"]
        ),
    ),
    "date-empty": Case(
        "<status>ACTIVE</status>",
        "<status>ACTIVE</status><birth_date/>",
        "fix",
        lambda a: a.find("birth_date") is None,
    ),
    "code-case": Case(
        "EXTERNAL", "external", "fix", lambda a: a.findtext("account_type") == "EXTERNAL"
    ),
    "char-control": Case(
        "<last_name>Doe", "<last_name>Ro\u0085e", "fix", lambda a: a.findtext("last_name") == "Roe"
    ),
    "char-replacement": Case(
        "<last_name>Doe",
        "<last_name>M\ufffdller",
        "warn",
        lambda a: a.findtext("last_name") == "M\ufffdller",
    ),
    "purge-before-expiry": Case(
        "<purge_date>2033-06-30Z",
        "<purge_date>2031-01-01Z",
        "warn",
        lambda a: a.findtext("purge_date") == "2031-01-01Z",
    ),
    "expired-active": Case(
        "<expiry_date>2032-06-30Z</expiry_date>\n  <purge_date>2033-06-30Z",
        "<expiry_date>2020-06-30Z</expiry_date>\n  <purge_date>2021-06-30Z",
        "warn",
        lambda a: a.findtext("expiry_date") == "2020-06-30Z",
    ),
    "schema-invalid": Case(
        "<status>ACTIVE</status>",
        "<status>ACTIVE</status><favourite_colour>blue</favourite_colour>",
        "warn",
        lambda a: a.findtext("favourite_colour") == "blue",
    ),
}
CODE_TABLES = {"user_group": ["UGRD", "GRAD", "FAC"]}


def history(config: Path, match_id: str) -> object:
    return json.loads(invoke(config, "history", match_id, "--json").stdout)


@pytest.fixture
def sent_day0(db_url: str, tmp_path: Path, write_config: Callable[..., Path]) -> tuple[Path, Path]:
    # Some cases move A's dates earlier: with two patrons that is 50 %, over max_expiry_cuts.
    config = write_config(
        db_url, checks={"codes": CODE_TABLES}, departure={"max_expiry_cuts": "100%"}
    )
    run_json(config, str(write(tmp_path, "day0.xml", users(A, record("B")))))
    return config, tmp_path


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_record_problem_has_its_code_and_policy(
    code: str, sent_day0: tuple[Path, Path]
) -> None:
    config, folder = sent_day0
    case = CASES[code]
    assert case.old in A, code
    before = history(config, "A")
    # The group changes too, so A is sent even where the fix restores yesterday's record.
    spoilt = A.replace(case.old, case.new).replace("<user_group>UGRD<", "<user_group>GRAD<")
    day1 = write(folder, "day1.xml", users(spoilt, record("B")))

    result = invoke(config, "run", "--json", str(day1))

    out = json.loads(result.stdout)
    codes = {(f["code"], f["policy"], f["match_id"]) for f in out["checks"]["findings"]}
    assert (code, case.policy, "A") in codes, out["checks"]
    assert all(f["source"] == str(day1) and f["line"] >= 3 for f in out["checks"]["findings"])
    if case.policy == "error":
        assert result.exit_code == 4, result.output
        assert [h["match_id"] for h in out["held_back"]] == ["A"]
        assert code in out["held_back"][0]["reason"]
        assert out["counts"]["held_back"] == 1 and out["counts"]["changed"] == 0
        assert out["batch"] is None  # nothing else changed: no file at all
        assert history(config, "A") == before  # nothing about A was stored
    else:
        assert result.exit_code == 0, result.output
        assert out["held_back"] == [] and out["counts"]["changed"] == 1
        sent = read_delta(Path(out["batch"]["file"]), validate=False)["A"]
        assert case.sent is not None and case.sent(sent), etree.tostring(sent)


def test_a_held_back_record_goes_out_the_day_the_extract_fixes_it(
    sent_day0: tuple[Path, Path],
) -> None:
    config, folder = sent_day0
    broken = A.replace("<last_name>Doe</last_name>", "").replace("UGRD", "GRAD")
    newcomer = record("C").replace("<purge_date>2033-06-30Z</purge_date>", "")
    for day in (1, 2):  # held back every day it stays broken (B changes, so the files differ)
        text = users(broken, record("B", name=f"Day{day}"), newcomer)
        out = run_json(config, str(write(folder, f"day{day}.xml", text)), exit_code=4)
        assert sorted(h["match_id"] for h in out["held_back"]) == ["A", "C"]
        assert out["counts"]["departed"] == 0  # held back is not gone
    fixed = A.replace("UGRD", "GRAD")
    out = run_json(
        config, str(write(folder, "day3.xml", users(fixed, record("B", name="Day2"), record("C"))))
    )
    assert out["counts"] == {
        "new": 1,
        "changed": 1,
        "unchanged": 1,
        "departed": 0,
        "returned": 0,
        "held_back": 0,
    }
    sent = read_delta(Path(out["batch"]["file"]))
    assert set(sent) == {"A", "C"}
    assert sent["A"].findtext("user_group") == "GRAD"


def test_identifier_taken_holds_back_only_the_patron_being_sent(
    sent_day0: tuple[Path, Path],
) -> None:
    config, folder = sent_day0
    # Two newcomers share a barcode; B (unchanged, already in Alma) is not held back.
    c = record("C", barcode="SHARED")
    d = record("D", barcode="shared")
    out = run_json(config, str(write(folder, "day1.xml", users(A, record("B"), c, d))), exit_code=4)
    assert sorted(h["match_id"] for h in out["held_back"]) == ["C", "D"]
    messages = {f["match_id"]: f["message"] for f in out["checks"]["findings"]}
    assert messages["C"] == "identifier value taken: BARCODE also held by D"
    assert messages["D"] == "identifier value taken: BARCODE also held by C"


def test_policies_are_configurable(
    sqlite_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    checks = {
        "mandatory": ["primary_id", "identifier:UNIV_ID"],
        "policy": {"account-not-external": "warn", "code-case": "error", "expired-active": "off"},
    }
    config = write_config(sqlite_url, checks=checks)
    spoilt = (
        record("A")
        .replace("EXTERNAL", "INTERNAL")
        .replace("2032-06-30Z</expiry", "2020-06-30Z</expiry")
    )
    lower = (
        record("B").replace("UGRD", "ugrd").replace("<record_type>PUBLIC", "<record_type>public")
    )
    text = users(spoilt, lower)
    out = run_json(config, str(write(tmp_path, "d.xml", text)), exit_code=4)
    found = sorted((f["match_id"], f["code"], f["policy"]) for f in out["checks"]["findings"])
    assert found == [
        ("A", "account-not-external", "warn"),
        ("A", "mandatory-missing", "error"),
        ("B", "code-case", "error"),
        ("B", "mandatory-missing", "error"),
    ]
    assert {f["message"] for f in out["checks"]["findings"]} >= {
        "mandatory field missing: identifier:UNIV_ID",
        "record_type 'public' should be 'PUBLIC'",
    }


def test_check_reports_like_a_job_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = [
        A.replace("EXTERNAL", "INTERNAL"),
        record("B").replace("<last_name>Doe</last_name>", ""),
        record("C").replace('<email preferred="true">', "<email>"),
        record("D").replace("<primary_id>D</primary_id>", ""),
        record("b"),
    ]
    path = write(tmp_path, "extract.xml", users(*bad))
    text = invoke(tmp_path / "none.toml", "check", str(path))
    assert text.exit_code == 1 and "configuration file not found" in text.output
    from click.testing import CliRunner

    from deltasync.cli import cli

    runner = CliRunner()
    monkeypatch.chdir(tmp_path)  # no config.toml here: the defaults apply
    monkeypatch.delenv("DELTASYNC_CONFIG", raising=False)
    result = runner.invoke(cli, ["check", str(path)])
    as_json = runner.invoke(cli, ["check", "--json", str(path)])
    assert result.exit_code == 4, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{path}: 5 records"
    assert re.match(r"checks: 4 error\(s\), held back; 0 warning\(s\), sent; 1 fixed", lines[1])
    assert any(re.fullmatch(r"\s+account-not-external\s+error\s+1", line) for line in lines)
    text_lines = path.read_text().splitlines()
    line_of_b = text_lines.index("  <primary_id>b</primary_id>") + 1 - 2  # its <user> line
    assert f"error match-id-duplicate b ({path}, line {line_of_b})" in result.output
    data = json.loads(as_json.stdout)
    assert data["records"] == 5
    assert {(c["code"], c["count"]) for c in data["counts"]} == {
        ("account-not-external", 1),
        ("mandatory-missing", 1),
        ("email-no-preferred", 1),
        ("match-id-missing", 1),
        ("match-id-duplicate", 1),
    }


def test_check_a_delta_file_and_an_unreadable_file(
    sqlite_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(sqlite_url)
    out = run_json(config, str(write(tmp_path, "d.xml", users(A, record("B")))))
    delta = Path(out["batch"]["file"])
    result = invoke(config, "check", str(delta))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"{delta}: 2 records", "checks: no findings"]
    broken = tmp_path / "broken.zip"
    broken.write_bytes(delta.read_bytes()[:100])
    result = invoke(config, "check", str(broken))
    assert result.exit_code == 1 and "not a readable zip" in result.output
    with zipfile.ZipFile(delta) as archive:
        assert archive.testzip() is None


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        ({"policy": {"no-such-code": "warn"}}, "policy.no-such-code: unknown check code"),
        ({"policy": {"mandatory-missing": "fix"}}, "'fix' is not possible here"),
        ({"policy": {"match-id-duplicate": "warn"}}, "'warn' is not possible here; use error"),
        ({"mandatory": ["address.city", "favourite colour"]}, "'favourite colour' is not a field"),
        ({"codes": {"shoe_size": ["S"]}}, "codes.shoe_size: not a code field"),
        ({"codes": {"user_group": []}}, "must be a non-empty list"),
        ({"codes": {"user_group": [" GRAD "]}}, "without surrounding spaces"),
        ({"mandatory": ["last_nmae"]}, "'last_nmae' is not a field"),
        ({"mandatory": ["address.postcode"]}, "'address.postcode' is not a field"),
        ({"colour": 1}, "checks.colour: unknown key"),
    ],
)
def test_bad_check_settings_name_the_key(
    checks: dict[str, object],
    message: str,
    sqlite_url: str,
    tmp_path: Path,
    write_config: Callable[..., Path],
) -> None:
    config = write_config(sqlite_url, checks=checks)
    result = invoke(config, "status")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {config}: feeds.patrons.checks"), result.output
    assert message in result.output


def test_shared_checks_apply_to_every_feed_and_a_feed_can_override(tmp_path: Path) -> None:
    from deltasync.config import load

    path = tmp_path / "config.toml"
    path.write_text(
        "[checks]\nmandatory = ['primary_id', 'address.line1']\n"
        "[checks.policy]\nexpired-active = 'off'\n"
        "[feeds.students]\n[feeds.staff]\n[feeds.staff.checks.policy]\n"
        "schema-invalid = 'error'\n"
    )
    config = load(path)
    students, staff = config.feeds["students"].checks, config.feeds["staff"].checks
    assert students.mandatory == staff.mandatory == ("primary_id", "address.line1")
    path.write_text("[checks.policy]\nbogus = 'warn'\n[feeds.a]\n[feeds.a.checks]\n")
    with pytest.raises(ConfigError, match=r"config.toml: checks.policy.bogus: unknown check code"):
        load(path)
    assert staff.policy("expired-active").value == "off"
    assert staff.policy("schema-invalid").value == "error"
    assert students.policy("schema-invalid").value == "warn"


def test_readme_lists_every_code_with_its_default_policy() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    for code in RECORD_CODES.values():
        assert re.search(rf"^\| `{code.name}` \| {code.default.value} \|", readme, re.M), code.name
    for name in FILE_CODES:
        assert re.search(rf"^\| `{name}` \| stop \|", readme, re.M), name


def test_fixes_come_before_the_match_id(
    sqlite_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    """A fix that changes the match ID itself must not make the patron new (or departed)."""
    config = write_config(sqlite_url, checks={"codes": {"id_type": ["UNIV_ID", "BARCODE"]}})
    run_json(config, str(write(tmp_path, "d0.xml", users(A, record("B")))))
    spoilt = A.replace("<primary_id>A<", "<primary_id>A\u0096<").replace("Doe", "Doe-Roe")
    out = run_json(config, str(write(tmp_path, "d1.xml", users(spoilt, record("B")))))
    assert (out["counts"]["new"], out["counts"]["changed"], out["counts"]["departed"]) == (0, 1, 0)
    assert [f["match_id"] for f in out["checks"]["findings"]] == ["A"]
    assert set(read_delta(Path(out["batch"]["file"]))) == {"A"}
    # By identifier: a code-case fix of the id_type is what makes the record matchable.
    config = write_config(
        sqlite_url.replace("deltasync.db", "by-id.db"),
        feed={"match_id": "identifier:BARCODE"},
        checks={"codes": {"id_type": ["UNIV_ID", "BARCODE"]}},
    )
    run_json(config, str(write(tmp_path, "e0.xml", users(A, record("B")))))
    lower = A.replace("<id_type>BARCODE", "<id_type>barcode").replace("Doe", "Roe")
    out = run_json(config, str(write(tmp_path, "e1.xml", users(lower, record("B")))))
    assert (out["counts"]["changed"], out["counts"]["departed"]) == (1, 0)


def test_messages_name_fields_never_values(tmp_path: Path) -> None:
    secret = A.replace(
        "<status>ACTIVE</status>",
        "<birth_date>1990-02-30</birth_date><is_researcher>2031</is_researcher>",
    )
    path = write(tmp_path, "x.xml", users(secret))
    result = invoke(tmp_path / "missing.toml", "check", str(path))
    assert result.exit_code == 1  # no such config: proves --config is honoured
    from click.testing import CliRunner

    from deltasync.cli import cli

    output = CliRunner().invoke(cli, ["check", str(path)]).output
    assert "birth_date is not a date like 2027-06-30Z" in output
    assert "(the value) is not a valid value" in output  # the schema's message, redacted
    assert "1990" not in output and "2031" not in output


def test_schema_errors_on_a_one_line_record_are_not_hidden(
    sqlite_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(sqlite_url, checks={"policy": {"schema-invalid": "error"}})
    one_line = (
        A.replace("\n", "")
        .replace("<status>ACTIVE</status>", "<status>ACTIVE</status><status_date/>")
        .replace("</user>", "<favourite_colour>blue</favourite_colour></user>")
    )
    path = write(tmp_path, "d.xml", users(one_line))
    out = run_json(config, str(path), exit_code=4)
    found = {(f["code"], f["policy"]) for f in out["checks"]["findings"]}
    assert found == {("date-empty", "fix"), ("schema-invalid", "error")}
    assert [h["match_id"] for h in out["held_back"]] == ["A"]


def test_a_newcomer_copying_a_barcode_does_not_block_its_holder(
    sent_day0: tuple[Path, Path],
) -> None:
    config, folder = sent_day0
    changed_a = A.replace("Doe", "Doe-Roe")
    copycat = record("C", barcode="bc-a")
    out = run_json(
        config, str(write(folder, "d1.xml", users(changed_a, record("B"), copycat))), exit_code=4
    )
    assert [h["match_id"] for h in out["held_back"]] == ["C"]
    assert set(read_delta(Path(out["batch"]["file"]))) == {"A"}


def test_many_holders_of_one_value_give_a_short_message(tmp_path: Path) -> None:
    placeholder = [record(f"P{n}", barcode="0000") for n in range(40)]
    path = write(tmp_path, "x.xml", users(*placeholder))
    from click.testing import CliRunner

    from deltasync.cli import cli

    data = json.loads(CliRunner().invoke(cli, ["check", "--json", str(path)]).stdout)
    first = next(f for f in data["findings"] if f["match_id"] == "P0")
    assert first["message"].endswith("and 34 more") and len(first["message"]) < 250


def test_control_characters_between_fields_are_removed(
    sqlite_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(sqlite_url)
    stray = A.replace("</last_name>", "</last_name>\u0096")
    out = run_json(config, str(write(tmp_path, "d.xml", users(stray))))
    assert [f["code"] for f in out["checks"]["findings"]] == ["char-control"]
    sent = read_delta(Path(out["batch"]["file"]))["A"]  # validates against Alma's schema
    assert sent.find("last_name").tail is None


def test_a_user_nested_in_a_record_is_part_of_it(tmp_path: Path) -> None:
    nested = A.replace(
        "</user_identifiers>",
        "</user_identifiers><user_notes><user_note><note_text>x</note_text>"
        "<user><primary_id>Q</primary_id></user></user_note></user_notes>",
    )
    from deltasync.source.fullparse import read_records

    path = write(tmp_path, "n.xml", users(nested, record("B")))
    assert [r.element.findtext("primary_id") for r in read_records(path)] == ["A", "B"]


def test_a_fix_turned_on_reaches_unchanged_records_once(
    db_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    """Unchanged records skip the fixes while the fixes stay the same; a new fix re-checks."""
    # Not record_type: Alma's SIS load ignores it, so its fix is no change to send.
    lower = A.replace("<status>ACTIVE", "<status>active")
    empty = record("B").replace("<status>", "<birth_date/><status>")  # needs date-empty daily
    text = users(lower, empty)
    policy = {"code-case": "warn"}
    config = write_config(db_url, checks={"policy": policy})
    out = run_json(config, str(write(tmp_path, "d0.xml", text)))
    assert {(f["match_id"], f["code"], f["policy"]) for f in out["checks"]["findings"]} == {
        ("A", "code-case", "warn"),
        ("B", "date-empty", "fix"),
    }
    # The same records again: B still needs its fix every day, yet is unchanged.
    same = run_json(config, str(write(tmp_path, "d1.xml", text.replace("\n", "\r\n"))))
    assert same["counts"]["unchanged"] == 2 and same["batch"] is None
    write_config(db_url, checks={"policy": {**policy, "code-case": "fix"}})
    fixed = run_json(config, str(write(tmp_path, "d2.xml", text + "\n")))
    assert fixed["counts"]["changed"] == 1 and fixed["counts"]["unchanged"] == 1
    sent = read_delta(Path(fixed["batch"]["file"]))
    assert set(sent) == {"A"} and sent["A"].findtext("status") == "ACTIVE"
    again = run_json(config, str(write(tmp_path, "d3.xml", text + "\n\n")))
    assert again["counts"]["unchanged"] == 2 and again["batch"] is None
