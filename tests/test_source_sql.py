"""SQL sources: a campus view read through a mapping, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from csvworld import COLUMNS, MAPPING, rows_of, simulate, write_csv
from helpers import dump_store, invoke, read_delta, run_json
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class SisDatabase:
    """A table ``people`` of the CSV world's columns, in its own SQLite file or PG schema."""

    def __init__(self, url: str, schema: str | None) -> None:
        self.url = url
        self.schema = schema
        self.table = f'"{schema}".people' if schema else "people"
        columns = ", ".join(f'"{c}" TEXT' for c in COLUMNS)
        engine = create_engine(url)
        with engine.begin() as conn:
            if schema:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            conn.execute(text(f"CREATE TABLE {self.table} ({columns})"))
        engine.dispose()

    def load(self, rows: list[list[str]]) -> None:
        names = ", ".join(f":c{i}" for i in range(len(COLUMNS)))
        engine = create_engine(self.url)
        with engine.begin() as conn:
            conn.execute(text(f"DELETE FROM {self.table}"))
            conn.execute(
                text(f"INSERT INTO {self.table} VALUES ({names})"),
                [{f"c{i}": value or None for i, value in enumerate(r)} for r in rows],
            )
        engine.dispose()


@pytest.fixture
def sis(db_url: str, tmp_path: Path) -> Iterator[SisDatabase]:
    if db_url.startswith("sqlite"):
        yield SisDatabase(f"sqlite:///{tmp_path / 'sis.db'}", None)
    else:
        yield SisDatabase(db_url, f"sis_{uuid.uuid4().hex[:8]}")


def sql_mapping(tmp_path: Path, url: str, query: str, **extra: str) -> Path:
    """The Banner example mapping, reading rows from SQL instead of a CSV file."""
    text_ = MAPPING.read_text(encoding="utf-8")
    head, _, rest = text_.partition("[user]")
    lines = [f"url = '{url}'", f"query = '{query}'"]
    lines += [f"{key} = '{value}'" for key, value in extra.items()]
    path = tmp_path / "sql-mapping.toml"
    path.write_text("[sql]\n" + "\n".join(lines) + "\n\n[user]" + rest, encoding="utf-8")
    return path


def two_feeds(tmp_path: Path, db_url: str, sql_map: Path) -> Path:
    guards = '[feeds.{0}.departure]\nmax_departures = "100%"\nmax_changes = "100%"\n'
    config = tmp_path / "config.toml"
    config.write_text(
        f'[state]\nurl = "{db_url}"\n\n'
        f'[feeds.fromcsv]\nsource = "csv"\nmapping = "{MAPPING}"\ntimezone = "UTC"\n'
        + guards.format("fromcsv")
        + f'\n[feeds.fromsql]\nsource = "sql"\nmapping = "{sql_map}"\ntimezone = "UTC"\n'
        + guards.format("fromsql"),
        encoding="utf-8",
    )
    return config


def run_feed(config: Path, feed: str, *args: str) -> dict[str, Any]:
    result = invoke(config, "--feed", feed, "run", "--json", *args)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def parts(delta: Path) -> list[bytes]:
    with zipfile.ZipFile(delta) as archive:
        return [archive.read(name) for name in sorted(archive.namelist())]


def test_a_sql_source_gives_byte_identical_deltas_to_the_csv_source(
    db_url: str, sis: SisDatabase, tmp_path: Path
) -> None:
    sql_map = sql_mapping(tmp_path, sis.url, f"SELECT * FROM {sis.table}")
    config = two_feeds(tmp_path, db_url, sql_map)
    for number, day in enumerate(simulate(40, 4)):
        rows = rows_of(day, shuffle=number)
        extract = write_csv(tmp_path / f"day{number}.csv", rows)
        sis.load(rows_of(day, shuffle=number + 100))
        from_csv = run_feed(config, "fromcsv", str(extract))
        from_sql = run_feed(config, "fromsql")
        assert from_sql["counts"] == from_csv["counts"], number
        assert from_sql["extract"]["records"] == len(day.versions)
        read_delta(Path(from_sql["batch"]["file"]))  # every part against Alma's schema
        assert parts(Path(from_sql["batch"]["file"])) == parts(Path(from_csv["batch"]["file"]))
    # Nothing changed in the view: nothing is sent, and no row needed its mapping.
    unchanged = run_feed(config, "fromsql")
    assert unchanged["batch"] is None
    assert unchanged["counts"]["unchanged"] == len(day.versions)


def test_the_password_comes_only_from_the_environment(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_url(pg_url)
    sis = SisDatabase(pg_url, f"sis_{uuid.uuid4().hex[:8]}")
    sis.load(rows_of(simulate(5, 1)[0]))
    bare = url.set(password=None).render_as_string(hide_password=False)
    sql_map = sql_mapping(
        tmp_path, bare, f"SELECT * FROM {sis.table}", password_env="SIS_TEST_PASSWORD"
    )
    config = two_feeds(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", sql_map)
    monkeypatch.delenv("SIS_TEST_PASSWORD", raising=False)
    missing = invoke(config, "--feed", "fromsql", "run")
    assert missing.exit_code == 1
    assert missing.stderr == (
        f"Error: {sql_map}: sql.password_env names SIS_TEST_PASSWORD, which is not set\n"
    )
    # The throwaway server trusts loopback: any password passes, but one must be given.
    monkeypatch.setenv("SIS_TEST_PASSWORD", url.password or "any")
    data = run_feed(config, "fromsql")
    assert data["counts"]["new"] == 5


def test_a_failing_query_fails_the_run_and_changes_nothing(
    db_url: str, sis: SisDatabase, tmp_path: Path
) -> None:
    sis.load(rows_of(simulate(5, 1)[0]))
    good = sql_mapping(tmp_path, sis.url, f"SELECT * FROM {sis.table}")
    config = two_feeds(tmp_path, db_url, good)
    run_feed(config, "fromsql")
    before = dump_store(db_url)
    sql_mapping(tmp_path, sis.url, "SELECT * FROM no_such_table")
    result = invoke(config, "--feed", "fromsql", "run")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: sql:{good}: the query failed (")
    assert "Traceback" not in result.output
    assert dump_store(db_url) == before


def test_the_peoplesoft_example_maps_its_sample_view(tmp_path: Path) -> None:
    folder = tmp_path / "peoplesoft"
    shutil.copytree(EXAMPLES / "peoplesoft", folder)
    with sqlite3.connect(folder / "sample.db") as db:
        db.executescript((folder / "sample.sql").read_text(encoding="utf-8"))
    config = tmp_path / "config.toml"
    config.write_text(
        f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n[feeds.ps]\nsource = "sql"\n'
        f'mapping = "{folder / "mapping.toml"}"\ntimezone = "UTC"\n',
        encoding="utf-8",
    )
    data = run_json(config)
    assert data["counts"]["new"] == 3
    sent = read_delta(Path(data["batch"]["file"]))
    assert sent["1000002"].findtext("first_name") == "Bob"
    assert sent["1000002"].findtext("user_group") == "GRAD"
    assert sent["1000002"].findtext("purge_date") == "2029-12-30Z"
    assert sent["1000003"].findtext("contact_info/addresses/address/city") == "Montréal"
    ids = [i.findtext("id_type") for i in sent["1000001"].iter("user_identifier")]
    assert ids == ["BARCODE"]  # the UNIV_ID equal to the primary ID is left out
    email = sent["1000001"].find("contact_info/emails/email")
    assert email is not None and email.get("preferred") == "true"
    assert email.findtext("email_address") == "ana.ruiz@example.edu"


def test_a_sql_feed_is_adopted_by_baseline_without_an_extract(
    sqlite_url: str, tmp_path: Path
) -> None:
    sis = SisDatabase(f"sqlite:///{tmp_path / 'sis.db'}", None)
    sis.load(rows_of(simulate(6, 1)[0]))
    config = two_feeds(tmp_path, sqlite_url, sql_mapping(tmp_path, sis.url, "SELECT * FROM people"))
    result = invoke(config, "--feed", "fromsql", "baseline", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"]["new"] == 6
    assert run_feed(config, "fromsql")["batch"] is None
    refused = invoke(config, "--feed", "fromsql", "baseline", str(config))
    assert refused.exit_code == 2
    assert "reads several sources or a SQL query" in refused.stderr


def test_check_reads_a_sql_feed_without_a_file(sqlite_url: str, tmp_path: Path) -> None:
    sis = SisDatabase(f"sqlite:///{tmp_path / 'sis.db'}", None)
    rows = rows_of(simulate(3, 1)[0])
    rows[1][COLUMNS.index("TERM_END")] = "2031-06-30"  # not the mapping's %m/%d/%Y
    sis.load(rows)
    mapping = sql_mapping(tmp_path, sis.url, "SELECT * FROM people")
    config = two_feeds(tmp_path, sqlite_url, mapping)
    result = invoke(config, "--feed", "fromsql", "check", "--json")
    assert result.exit_code == 4, result.output
    data = json.loads(result.stdout)
    assert data["file"] == f"sql:{mapping}"
    assert data["records"] == 3
    # The dates left empty are missing too (CARLI's mandatory expiry and purge dates).
    assert {(f["code"], f["match_id"], f["line"]) for f in data["findings"]} == {
        ("map-date-invalid", "s000001", 2),
        ("mandatory-missing", "s000001", 2),
    }
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
