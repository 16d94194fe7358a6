"""A feed of several sources: merged by precedence; one missing fails the run untouched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from csvworld import MAPPING, row, write_csv
from helpers import dump_store, invoke, listing, read_delta, record, users, write


def merged_config(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[state]\nurl = "{url}"\n\n[feeds.people]\ntimezone = "UTC"\n'
        f'outbox = "{tmp_path / "outbox"}"\n\n'
        "[[feeds.people.sources]]       # staff first: their record wins\n"
        'source = "alma-xml"\n'
        f'extract = "{tmp_path / "staff" / "*.xml"}"\n\n'
        "[[feeds.people.sources]]\n"
        'source = "csv"\n'
        f'extract = "{tmp_path / "students" / "*.csv"}"\n'
        f'mapping = "{MAPPING}"\n\n'
        # A handful of patrons: one staff record giving way to its student record moves an
        # expiry earlier for a quarter of the feed, which the cut guard would refuse.
        "[feeds.people.departure]\nmax_departures = '100%'\nmax_changes = '100%'\n"
        "max_expiry_cuts = '100%'\n",
        encoding="utf-8",
    )
    (tmp_path / "staff").mkdir()
    (tmp_path / "students").mkdir()
    return config


def run(config: Path, exit_code: int = 0) -> dict[str, Any]:
    result = invoke(config, "run", "--json")
    assert result.exit_code == exit_code, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_two_sources_merge_by_precedence_and_report_each_merge(db_url: str, tmp_path: Path) -> None:
    config = merged_config(tmp_path, db_url)
    staff = write(
        tmp_path / "staff", "staff.xml", users(record("s000001", name="Staffer"), record("t1"))
    )
    students = write_csv(tmp_path / "students" / "day0.csv", [row(n, 0) for n in (1, 2, 3)])
    data = run(config)
    assert data["counts"]["new"] == 4
    sent = read_delta(Path(data["batch"]["file"]))
    assert set(sent) == {"s000001", "t1", "s000002", "s000003"}
    assert sent["s000001"].findtext("last_name") == "Staffer"  # the first source's record
    [merge] = data["checks"]["findings"]
    assert (merge["code"], merge["policy"], merge["match_id"]) == (
        "source-merged",
        "warn",
        "s000001",
    )
    assert (merge["source"], merge["line"]) == (str(students), 2)
    assert merge["message"] == (
        f"also in an earlier source, whose record is taken ({staff}, line 3)"
    )
    # The staff record goes: the student record of the same person is sent instead, and
    # nobody departs who is still in one source.
    write(tmp_path / "staff", "staff.xml", users(record("t1")))
    data = run(config)
    assert data["counts"]["changed"] == 1
    assert data["counts"]["departed"] == 0
    sent = read_delta(Path(data["batch"]["file"]))
    assert set(sent) == {"s000001"}
    assert sent["s000001"].findtext("last_name") != "Staffer"
    assert data["checks"]["findings"] == []


def test_a_missing_source_fails_the_run_and_changes_nothing(db_url: str, tmp_path: Path) -> None:
    config = merged_config(tmp_path, db_url)
    write(tmp_path / "staff", "staff.xml", users(record("t1"), record("t2")))
    write_csv(tmp_path / "students" / "day0.csv", [row(n, 0) for n in (1, 2, 3)])
    run(config)
    for old in (tmp_path / "students").iterdir():
        old.unlink()
    before = dump_store(db_url)
    outbox = listing(tmp_path / "outbox")
    result = invoke(config, "run")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: feed 'people': source 2 (csv): no file matches extract = "
        f"'{tmp_path / 'students' / '*.csv'}'; a missing source fails the run "
        "(its patrons have not left)\n"
    )
    assert dump_store(db_url) == before
    assert listing(tmp_path / "outbox") == outbox


def test_an_extract_argument_is_refused_for_a_feed_of_several_sources(tmp_path: Path) -> None:
    config = merged_config(tmp_path, f"sqlite:///{tmp_path / 'state.db'}")
    result = invoke(config, "run", str(config))
    assert result.exit_code == 2
    assert "feed 'people' reads several sources or a SQL query: each source names its own " in (
        result.stderr
    )
