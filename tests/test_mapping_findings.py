"""What a mapping cannot map is a record finding with its row, never the end of the run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from csvworld import COLUMNS, MAPPING, row, write_csv
from helpers import invoke, read_delta, run_json

ConfigWriter = Callable[..., Path]


def config_for(write_config: ConfigWriter, url: str, **checks: object) -> Path:
    return write_config(
        url,
        feed={"source": "csv", "mapping": str(MAPPING), "timezone": "UTC"},
        checks=checks or None,
    )


def findings(data: dict[str, object]) -> list[tuple[str, str, str | None, int, str]]:
    checks = data["checks"]
    assert isinstance(checks, dict)
    return [
        (f["code"], f["policy"], f["match_id"], f["line"], f["message"]) for f in checks["findings"]
    ]


def test_bad_rows_unknown_codes_and_bad_dates_are_held_back_with_their_rows(
    db_url: str, tmp_path: Path, write_config: ConfigWriter
) -> None:
    config = config_for(write_config, db_url)
    good = [row(n, 0) for n in range(4)]
    run_json(config, str(write_csv(tmp_path / "day0.csv", good)))
    unknown = row(1, 0)
    unknown[COLUMNS.index("DEPT")] = "ZOOL"
    bad_date = row(2, 0)
    bad_date[COLUMNS.index("TERM_END")] = "31/12/2031"
    short = row(3, 0)[:5]
    # Row 0 (line 2) is fine; row 1 starts on line 3, row 2 on line 5 (row 1's ADDR2 holds
    # a line break: patron 0 and 3 do too, patron 1 and 2 do not).
    rows = [row(0, 0), unknown, bad_date, short]
    day1 = write_csv(tmp_path / "day1.csv", rows)
    data = run_json(config, str(day1), exit_code=4)
    got = {(code, policy, match_id, line) for code, policy, match_id, line, _m in findings(data)}
    assert ("map-code-unknown", "error", "s000001", 4) in got
    assert ("map-date-invalid", "error", "s000002", 5) in got
    assert ("row-bad", "error", "s000003", 6) in got
    messages: dict[str, list[str]] = {}
    for code, _p, _id, _l, message in findings(data):
        messages.setdefault(code, []).append(message)
    assert messages["map-code-unknown"] == [
        "row 2, statistic[1].statistic_category (column DEPT): "
        "code 'ZOOL' is not in table 'departments'"
    ]
    assert messages["map-date-invalid"] == [
        "row 3, user.expiry_date (column TERM_END): not a date of the form '%m/%d/%Y'",
        "row 3, user.purge_date (column TERM_END): not a date of the form '%m/%d/%Y'",
    ]
    assert messages["row-bad"] == ["row 4: 5 fields where the header has 16"]
    held = {h["match_id"]: h["reason"] for h in data["held_back"]}
    assert set(held) == {"s000001", "s000002", "s000003"}
    assert data["counts"]["departed"] == 0  # held back, not departed
    assert data["batch"] is None


def test_an_unbalanced_quote_spoils_one_row_not_the_rest_of_the_file(
    sqlite_url: str, tmp_path: Path, write_config: ConfigWriter
) -> None:
    config = config_for(write_config, sqlite_url)
    path = write_csv(tmp_path / "day0.csv", [row(n, 0) for n in (1, 2, 4, 5)])
    lines = path.read_bytes().split(b"\r\n")
    assert lines[2].startswith(b"S000002,")
    lines[2] = lines[2].replace(b",Urbana,", b',"Urbana,', 1)
    path.write_bytes(b"\r\n".join(lines))
    data = run_json(config, str(path), exit_code=4)
    assert data["counts"]["new"] == 3
    [bad] = [f for f in findings(data) if f[0] == "row-bad"]
    assert bad[2:4] == ("s000002", 3)
    assert bad[4].startswith("row 2: the row cannot be read (")
    sent = read_delta(Path(data["batch"]["file"]))
    assert set(sent) == {"s000001", "s000004", "s000005"}


def test_control_characters_are_removed_and_reported(
    sqlite_url: str, tmp_path: Path, write_config: ConfigWriter
) -> None:
    config = config_for(write_config, sqlite_url)
    spoilt = row(1, 0)
    spoilt[COLUMNS.index("LAST")] = "Do\x07e"
    data = run_json(config, str(write_csv(tmp_path / "day0.csv", [spoilt])))
    [(code, policy, match_id, line, message)] = findings(data)
    assert (code, policy, match_id, line) == ("char-control", "fix", "s000001", 2)
    assert message == "row 1, user.last_name (column LAST): removed U+0007"
    sent = read_delta(Path(data["batch"]["file"]))
    assert sent["s000001"].findtext("last_name") == "Doe"


def test_a_policy_of_warn_sends_the_record_without_the_field(
    sqlite_url: str, tmp_path: Path, write_config: ConfigWriter
) -> None:
    config = config_for(write_config, sqlite_url, policy={"map-code-unknown": "warn"})
    unknown = row(1, 0)
    unknown[COLUMNS.index("DEPT")] = "ZOOL"
    data = run_json(config, str(write_csv(tmp_path / "day0.csv", [unknown])))
    assert [f[:2] for f in findings(data)] == [("map-code-unknown", "warn")]
    sent = read_delta(Path(data["batch"]["file"]))
    assert sent["s000001"].find("user_statistics") is None


def test_check_cites_rows_and_columns_of_a_csv_file(
    sqlite_url: str, tmp_path: Path, write_config: ConfigWriter
) -> None:
    config = config_for(write_config, sqlite_url)
    unknown = row(1, 0)
    unknown[COLUMNS.index("DEPT")] = "ZOOL"
    path = write_csv(tmp_path / "day0.csv", [row(0, 0), unknown])
    result = invoke(config, "check", "--json", str(path))
    assert result.exit_code == 4, result.output
    data = json.loads(result.stdout)
    assert data["records"] == 2
    [finding] = data["findings"]
    assert (finding["code"], finding["match_id"], finding["line"]) == (
        "map-code-unknown",
        "s000001",
        4,
    )
    assert result.stderr == (f"ATTENTION: {path}: 1 record(s) would be held back by the checks\n")
    assert not (tmp_path / "state").exists()


def test_a_column_the_mapping_needs_missing_from_the_header_fails_the_run(
    db_url: str, tmp_path: Path, write_config: ConfigWriter
) -> None:
    config = config_for(write_config, db_url)
    path = tmp_path / "day0.csv"
    path.write_text("NETID,LAST\nS1,Doe\n", encoding="cp1252")
    result = invoke(config, "run", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path}: no column 'ADDR1', 'ADDR2', ")
    assert f"which the mapping {MAPPING} uses" in result.stderr
    assert "Traceback" not in result.output


def test_a_match_id_twice_in_a_csv_file_names_both_lines(
    sqlite_url: str, tmp_path: Path, write_config: ConfigWriter
) -> None:
    config = config_for(write_config, sqlite_url)
    run_json(config, str(write_csv(tmp_path / "day0.csv", [row(n, 0) for n in (1, 2, 4)])))
    # Patron 1 again, unchanged (tier 1), and a second copy of it that is changed.
    day1 = write_csv(tmp_path / "day1.csv", [row(1, 0), row(2, 0), row(4, 0), row(1, 1)])
    data = run_json(config, str(day1), exit_code=4)
    [held] = data["held_back"]
    assert held["match_id"] == "s000001"
    assert held["where"] == [f"{day1}, line 2", f"{day1}, line 5"]
    assert data["counts"]["departed"] == 0
