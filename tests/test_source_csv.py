"""CSV sources: a Banner-style export mapped to Alma records, day after day."""

from __future__ import annotations

import csv
import gzip
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from csvworld import MAPPING, count_renders, csv_config, row, rows_of, simulate, write_csv
from helpers import read_delta, run_json

ConfigWriter = Callable[..., Path]


def test_a_multi_day_csv_feed_sends_exactly_the_generators_changes(
    db_url: str, tmp_path: Path, write_config: ConfigWriter
) -> None:
    """Shuffled rows, quoted commas and newlines, cp1252 names, two e-mails, a code table
    and a date format: each day's delta holds exactly what the generator changed."""
    config = csv_config(write_config, db_url)
    days = simulate(60, 5)
    for number, day in enumerate(days):
        quoting = csv.QUOTE_ALL if number == 3 else csv.QUOTE_MINIMAL
        extract = write_csv(
            tmp_path / f"day{number}.csv", rows_of(day, shuffle=number), quoting=quoting
        )
        data = run_json(config, str(extract))
        counts = data["counts"]
        assert (counts["new"], counts["changed"], counts["departed"], counts["held_back"]) == (
            len(day.new),
            len(day.changed),
            len(day.departed),
            0,
        ), number
        assert counts["unchanged"] == len(day.versions) - len(day.new) - len(day.changed)
        assert data["checks"]["errors"] == 0, data["checks"]
        sent = read_delta(Path(data["batch"]["file"]))  # every part against Alma's schema
        assert set(sent) == day.new | day.changed | day.departed, number
    # A mapping that starts as the day before: tier 1 everywhere (nothing re-sent).
    again = write_csv(tmp_path / "again.csv", rows_of(days[-1], shuffle=99))
    data = run_json(config, str(again))
    assert data["batch"] is None
    assert data["counts"]["unchanged"] == len(days[-1].versions)


def test_names_in_cp1252_arrive_as_the_sis_wrote_them(
    sqlite_url: str, tmp_path: Path, write_config: ConfigWriter
) -> None:
    config = csv_config(write_config, sqlite_url)
    extract = write_csv(tmp_path / "day0.csv", rows_of(simulate(30, 1)[0]))
    data = run_json(config, str(extract))
    sent = read_delta(Path(data["batch"]["file"]))
    assert {u.findtext("last_name") for u in sent.values()} == {row(n, 0)[3] for n in range(30)}
    assert any(not name.isascii() for name in (row(n, 0)[3] for n in range(30)))
    two_line = sent["s000000"].findtext("contact_info/addresses/address/line2")
    assert two_line == "Room 0\nNorth wing"
    # A CR LF inside a quoted field (as Windows writes it) is one line end.
    windows = [row(n, 0) for n in range(3)]
    windows[0][9] = "Room 0\r\nNorth wing"
    data = run_json(config, str(write_csv(tmp_path / "day1.csv", windows)))
    assert data["counts"]["changed"] == 0 and data["counts"]["unchanged"] == 3
    emails = sent["s000000"].findall("contact_info/emails/email")
    assert [e.get("preferred") for e in emails][:1] == ["true"]


def test_unchanged_rows_cost_no_mapping_and_an_edited_mapping_sends_a_change_once(
    sqlite_url: str, tmp_path: Path, write_config: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING.read_text(encoding="utf-8"), encoding="utf-8")
    config = csv_config(write_config, sqlite_url, mapping=str(mapping))
    day0 = simulate(20, 1)[0]
    run_json(config, str(write_csv(tmp_path / "day0.csv", rows_of(day0))))
    rendered = count_renders(monkeypatch)
    data = run_json(config, str(write_csv(tmp_path / "day1.csv", rows_of(day0, shuffle=5))))
    assert data["counts"]["unchanged"] == 20
    assert rendered == []  # tier 1: the raw row and the mapping's fingerprint were enough
    # An edit that changes the output of every GR student: those are changed, once.
    grads = {r[0].lower() for r in rows_of(day0) if r[4] == "GR"}
    assert grads
    mapping.write_text(
        mapping.read_text(encoding="utf-8").replace('GR = "GRAD"', 'GR = "PHD"'), encoding="utf-8"
    )
    data = run_json(config, str(write_csv(tmp_path / "day2.csv", rows_of(day0, shuffle=6))))
    assert data["counts"]["changed"] == len(grads)
    assert set(read_delta(Path(data["batch"]["file"]))) == grads
    rendered.clear()
    data = run_json(config, str(write_csv(tmp_path / "day3.csv", rows_of(day0, shuffle=7))))
    assert data["batch"] is None
    assert rendered == []


def test_the_banner_example_runs_as_shipped(tmp_path: Path, write_config: ConfigWriter) -> None:
    config = csv_config(write_config, f"sqlite:///{tmp_path / 'state.db'}")
    data = run_json(config, str(MAPPING.parent / "students.csv"))
    assert data["counts"]["new"] == 4
    sent = read_delta(Path(data["batch"]["file"]))
    assert sent["mnunez2"].findtext("first_name") == "Mari"
    assert sent["akhan4"].findtext("user_group") == "UGRD"  # the table's "*" default


@pytest.mark.parametrize(
    ("suffix", "delimiter"), [(".csv.gz", ","), (".zip", ","), (".txt", "|"), (".tsv", "\t")]
)
def test_compressed_and_other_delimiters(
    suffix: str, delimiter: str, tmp_path: Path, write_config: ConfigWriter
) -> None:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        MAPPING.read_text(encoding="utf-8").replace(
            'delimiter = ","', f"delimiter = {json.dumps(delimiter)}"
        ),
        encoding="utf-8",
    )
    config = csv_config(write_config, f"sqlite:///{tmp_path / 'state.db'}", mapping=str(mapping))
    plain = write_csv(tmp_path / "plain.csv", rows_of(simulate(7, 1)[0]), delimiter=delimiter)
    extract = tmp_path / f"day0{suffix}"
    if suffix.endswith(".gz"):
        extract.write_bytes(gzip.compress(plain.read_bytes()))
    elif suffix == ".zip":
        with zipfile.ZipFile(extract, "w") as archive:
            archive.write(plain, "students.csv")
    else:
        extract.write_bytes(plain.read_bytes())
    data = run_json(config, str(extract))
    assert data["counts"]["new"] == 7
