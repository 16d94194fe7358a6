"""CSV sources: a Banner-style export mapped to Alma records, day after day."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from csvworld import MAPPING, row, rows_of, simulate, write_csv
from helpers import read_delta, run_json

ConfigWriter = Callable[..., Path]


def csv_config(write_config: ConfigWriter, url: str, **feed: object) -> Path:
    return write_config(
        url,
        feed={
            "source": "csv",
            "mapping": str(MAPPING),
            "timezone": "UTC",
            "departure": {"max_departures": "100%", "max_changes": "100%"},
            **feed,
        },
    )


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
    emails = sent["s000000"].findall("contact_info/emails/email")
    assert [e.get("preferred") for e in emails][:1] == ["true"]
