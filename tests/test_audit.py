"""Audit through the CLI: history with field diffs, show at a moment, changes, batch show."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import ADDRESS, invoke, record, run_json, users, write

A0 = record("A")
A1 = A0.replace("<user_group>UGRD", "<user_group>GRAD").replace(
    "A@example.edu", "a.new@example.edu"
)
WORK = ADDRESS.replace('preferred="true"', 'preferred="false"').replace("1 Main St", "9 Lab Rd")
A2 = A1.replace("</addresses>", WORK + "</addresses>")


@pytest.fixture
def three_days(
    db_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> tuple[Path, list[dict[str, object]]]:
    """A changes on day 1 (group, email) and day 2 (an address added); B leaves on day 2.
    Alma picks up the files of days 0 and 1 (renames them .handled); day 2's still waits."""
    (tmp_path / "remote").mkdir()  # the folder Alma reads exists; deltasync never creates it
    config = write_config(
        db_url,
        feed={"transport": "dir", "remote_dir": "remote"},
        departure={"max_departures": "100%", "max_changes": "100%"},
    )
    outputs = []
    for day, text in enumerate([users(A0, record("B")), users(A1, record("B")), users(A2)]):
        outputs.append(run_json(config, str(write(tmp_path, f"day{day}.xml", text))))
        if day < 2:
            for sent in (tmp_path / "remote").glob("*.zip"):
                sent.rename(sent.with_name(sent.name + ".handled"))
    return config, outputs


def test_history_lists_versions_with_field_diffs_in_three_formats(
    three_days: tuple[Path, list[dict[str, object]]],
) -> None:
    config, _ = three_days
    table = invoke(config, "history", "a")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert (
        lines[0].startswith("version 1: new, seen ") and "sent in batch 1 (confirmed)" in lines[0]
    )
    assert "  user_group: UGRD → GRAD" in lines
    assert "  email.email_address: A@example.edu → a.new@example.edu" in lines
    assert "  address added: 9 Lab Rd, Urbana, IL, 61801, home" in lines
    versions = json.loads(invoke(config, "history", "A", "--format", "json").stdout)
    assert [v["kind"] for v in versions] == ["new", "changed", "changed"]
    assert versions[0]["changes"] == []
    assert {"field": "user_group", "old": "UGRD", "new": "GRAD"} in versions[1]["changes"]
    assert [v["carried_by"] for v in versions] == [
        [[1, "confirmed"]],
        [[2, "confirmed"]],
        [[3, "uploaded"]],
    ]
    rows = list(
        csv.DictReader(io.StringIO(invoke(config, "history", "A", "--format", "csv").stdout))
    )
    assert rows[0]["version"] == "1" and rows[0]["field"] == ""
    assert {(r["version"], r["field"], r["old"], r["new"]) for r in rows} >= {
        ("2", "user_group", "UGRD", "GRAD"),
        ("3", "address", "", "9 Lab Rd, Urbana, IL, 61801, home"),
    }


def test_show_gives_the_record_as_it_stood_in_each_view(
    three_days: tuple[Path, list[dict[str, object]]],
) -> None:
    config, _ = three_days
    versions = json.loads(invoke(config, "history", "A", "--json").stdout)
    between = dt.datetime.fromisoformat(versions[1]["first_seen"]) + dt.timedelta(microseconds=1)
    then = invoke(config, "show", "A", "--as-of", between.isoformat(), "--format", "json")
    assert then.exit_code == 0, then.output
    shown = json.loads(then.stdout)
    assert shown["user"]["user_group"] == "GRAD" and shown["kind"] == "changed"
    assert len(shown["user"]["contact_info"]["addresses"]["address"]) == 1
    now = invoke(config, "show", "A")
    assert now.stdout.startswith("<user>\n  <record_type>") and "9 Lab Rd" in now.stdout
    # Day 2's file waits on the server: it was sent, but Alma has confirmed only day 1's.
    sent = json.loads(invoke(config, "show", "A", "--view", "sent", "--format", "json").stdout)
    assert sent["batch"] == 3 and len(sent["user"]["contact_info"]["addresses"]["address"]) == 2
    confirmed = json.loads(
        invoke(config, "show", "A", "--view", "confirmed", "--format", "json").stdout
    )
    assert confirmed["batch"] == 2 and confirmed["user"]["user_group"] == "GRAD"
    assert len(confirmed["user"]["contact_info"]["addresses"]["address"]) == 1
    early = invoke(config, "show", "A", "--view", "confirmed", "--as-of", versions[0]["first_seen"])
    assert early.exit_code == 1 and "no confirmed record" in early.output
    before = invoke(config, "show", "A", "--as-of", "2001-01-01")
    assert before.exit_code == 1 and "no extract record at 2001-01-01T23:59:59" in before.output
    gone = invoke(config, "show", "B")
    assert gone.exit_code == 1 and "was not in the extract" in gone.output
    expired = json.loads(invoke(config, "show", "B", "--view", "sent", "--format", "json").stdout)
    assert expired["kind"] == "departed"
    bad = invoke(config, "show", "A", "--as-of", "yesterday")
    assert bad.exit_code == 2 and "is not a date" in bad.output


def test_changes_across_patrons_filter_by_field_kind_and_period(
    three_days: tuple[Path, list[dict[str, object]]],
) -> None:
    config, _ = three_days
    today = dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=-6))).date()
    since = (today - dt.timedelta(days=1)).isoformat()
    rows = json.loads(invoke(config, "changes", "--since", since, "--json").stdout)
    assert {(r["match_id"], r["kind"], r["field"]) for r in rows} >= {
        ("A", "new", None),  # JSON keeps null where CSV writes an empty cell
        ("B", "new", None),
        ("A", "changed", "user_group"),
        ("A", "changed", "address"),
        ("B", "departed", "expiry_date"),
    }
    groups = invoke(config, "changes", "--since", since, "--field", "user_group", "--format", "csv")
    assert list(csv.DictReader(io.StringIO(groups.stdout))) == [
        {
            "at": next(r["at"] for r in rows if r["field"] == "user_group"),
            "match_id": "A",
            "kind": "changed",
            "field": "user_group",
            "old": "UGRD",
            "new": "GRAD",
        }
    ]
    emails = json.loads(
        invoke(config, "changes", "--since", since, "--field", "email_address", "--json").stdout
    )
    assert [r["new"] for r in emails] == ["a.new@example.edu"]
    departed = json.loads(
        invoke(config, "changes", "--since", since, "--kind", "departed", "--json").stdout
    )
    assert {r["match_id"] for r in departed} == {"B"}
    text = invoke(config, "changes", "--since", since, "--kind", "changed")
    assert "A  changed  user_group: UGRD → GRAD" in text.stdout
    old = invoke(config, "changes", "--since", "2001-01-01", "--until", "2001-12-31")
    assert old.stdout == "no changes in that period\n"


def test_batch_show_lists_patrons_and_ledger_history(
    three_days: tuple[Path, list[dict[str, object]]],
) -> None:
    config, _ = three_days
    detail = json.loads(invoke(config, "batch", "show", "3", "--json").stdout)
    assert detail["batch"]["seq"] == 3 and detail["batch"]["status"] == "uploaded"
    assert detail["batch"]["new"] == 0 and detail["batch"]["departed"] == 1
    assert [(m["match_id"], m["kind"], m["outcome"]) for m in detail["members"]] == [
        ("A", "changed", "sent"),
        ("B", "departed", "sent"),
    ]
    assert [e[1] for e in detail["events"]] == ["built", "uploaded"]
    text = invoke(config, "batch", "show", "3")
    assert text.stdout.splitlines()[0].startswith("batch 3: patrons_000003_")
    assert "    B  departed" in text.stdout
    missing = invoke(config, "batch", "show", "99")
    assert missing.exit_code == 1 and "has no batch 99" in missing.output


def test_a_file_taken_back_unread_does_not_count_as_sent(
    three_days: tuple[Path, list[dict[str, object]]],
) -> None:
    config, _ = three_days
    folder = config.parent
    a3 = A2.replace("<last_name>Doe", "<last_name>Roe")
    out = run_json(config, str(write(folder, "day3.xml", users(a3))))
    assert out["batch"]["seq"] == 4  # batch 3 still waited unread: taken back, superseded
    versions = json.loads(invoke(config, "history", "A", "--json").stdout)
    assert [v["carried_by"] for v in versions[2:]] == [[[3, "superseded"]], [[4, "uploaded"]]]
    batches = json.loads(invoke(config, "batches", "--json").stdout)
    as_of = batches[2]["uploaded_at"]  # the moment batch 3 reached the folder
    assert as_of is not None and as_of < batches[3]["uploaded_at"]
    then = json.loads(
        invoke(config, "show", "A", "--view", "sent", "--as-of", as_of, "--format", "json").stdout
    )
    assert then["batch"] == 2  # what Alma could have read at that moment
    now = json.loads(invoke(config, "show", "A", "--view", "sent", "--format", "json").stdout)
    assert now["batch"] == 4 and now["user"]["last_name"] == "Roe"
