"""status as a monitoring probe (exit 4), status --all for many feeds, and the metrics file."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import generate_extract
from helpers import invoke, record, users, write
from prometheus_client.parser import text_string_to_metric_families


def two_feeds(tmp_path: Path, url: str, *, a: str = "", b: str = "", top: str = "") -> Path:
    """Feeds ``a`` and ``b`` in one store, each delivering into its own folder Alma reads."""
    for name in ("a", "b"):
        (tmp_path / f"alma-{name}").mkdir(exist_ok=True)
    text = f"""{top}
[state]
url = "{url}"

[defaults]
timezone = "America/Chicago"
transport = "dir"
remote_dir = "alma-{{feed}}"
outbox = "outbox/{{feed}}"

[feeds.a]
{a}

[feeds.b]
{b}
"""
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def extract(tmp_path: Path, name: str, day: int, patrons: int = 20) -> Path:
    path = tmp_path / "incoming" / f"{name}-day{day}.xml"
    path.parent.mkdir(exist_ok=True)
    generate_extract.write_extract(path, patrons=patrons, day=day)
    return path


def status_json(config: Path, *args: str) -> tuple[int, object]:
    result = invoke(config, *args, "status", "--json")
    return result.exit_code, json.loads(result.stdout)


def test_status_all_shows_every_feed_and_exits_4_when_one_needs_attention(
    db_url: str, tmp_path: Path
) -> None:
    config = two_feeds(tmp_path, db_url)
    assert invoke(config, "--feed", "a", "run", str(extract(tmp_path, "a", 0))).exit_code == 0
    broken = write(tmp_path, "broken.xml", "<users><user>")
    assert invoke(config, "--feed", "b", "run", str(broken)).exit_code == 1

    result = invoke(config, "status", "--all")
    assert result.exit_code == 4, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "FEED", "LAST", "RUN", "EXTRACT", "IN", "FLIGHT", "FAILED", "HELD", "REJECTED", "NEXT"
    ]  # fmt: skip
    a_row, b_row = lines[1].split(), lines[2].split()
    assert a_row[0] == "a" and a_row[3:5] == ["run", "ok"] and a_row[6:8] == ["1", "(0m)"]
    assert a_row[8:12] == ["0", "0", "0", "none"]
    assert b_row[0] == "b" and b_row[3:6] == ["run", "error", "none"]
    assert " ".join(b_row[10:]) == (
        "fix what the last run's error names, then run again: deltasync --feed b run"
    )
    assert lines[3] == "2 feed(s), 1 need(s) attention"
    [attention] = result.stderr.splitlines()
    assert attention.startswith("ATTENTION: feed b: the last run (")
    assert attention.endswith(
        f") failed: {broken}: line 1, column 14: Premature end of data in tag user line 1 (the "
        "file ends too early: truncated?)"
    )

    as_json = invoke(config, "status", "--all", "--json")
    assert as_json.exit_code == 4
    rows = json.loads(as_json.stdout)
    assert [r["feed"] for r in rows] == ["a", "b"]
    assert rows[0]["last_run"]["outcome"] == "ok" and rows[0]["in_flight"] == 1
    assert rows[0]["newest_extract"]["name"].endswith("a-day0.xml")
    assert rows[0]["needs_attention"] is False and rows[0]["attention"] == []
    assert rows[1]["last_run"]["exit_code"] == 1 and rows[1]["newest_extract"] is None
    assert rows[1]["needs_attention"] is True and len(rows[1]["attention"]) == 1

    # One feed's status is the same probe.
    assert invoke(config, "--feed", "a", "status").exit_code == 0
    single = invoke(config, "--feed", "b", "status")
    assert single.exit_code == 4
    assert "  next action: fix what the last run's error names" in single.stdout
    assert single.stderr == attention + "\n"


def test_status_without_feed_on_several_feeds_points_to_all(
    sqlite_url: str, tmp_path: Path
) -> None:
    config = two_feeds(tmp_path, sqlite_url)
    result = invoke(config, "status")
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        "Error: several feeds are configured (a, b); choose one with --feed, or see them all "
        "with: deltasync status --all"
    )
    both = invoke(config, "--feed", "a", "status", "--all")
    assert both.exit_code == 2 and "Error: --all shows every feed; leave out --feed" in both.output


def test_a_batch_not_picked_up_in_time_makes_status_exit_4(db_url: str, tmp_path: Path) -> None:
    # Overdue is judged against the clock, so status sees it although the run exited 0.
    config = two_feeds(tmp_path, db_url, a='pickup_timeout = "0.0002h"')
    assert invoke(config, "--feed", "a", "run", str(extract(tmp_path, "a", 0))).exit_code == 0
    time.sleep(1)
    result = invoke(config, "--feed", "a", "status")
    assert result.exit_code == 4
    [line] = result.stderr.splitlines()
    assert line.startswith("ATTENTION: feed a: batch 1 not picked up by Alma since ")
    assert line.endswith("(pickup_timeout 0:00:00.720000): is the SIS job scheduled?")
    assert "  next action: check that Alma's SIS job is scheduled and reads remote_dir" in (
        result.stdout
    )


def test_an_undelivered_batch_is_named_once(db_url: str, tmp_path: Path) -> None:
    config = two_feeds(tmp_path, db_url)
    (tmp_path / "alma-a").rmdir()  # the share is not mounted
    run = invoke(config, "--feed", "a", "run", str(extract(tmp_path, "a", 0)))
    assert run.exit_code == 4
    code, data = status_json(config, "--feed", "a")
    assert code == 4
    assert isinstance(data, dict)
    assert data["needs_attention"] is True
    # The run's own words about batch 1 give way to the ledger's current state: one reason.
    assert data["attention"] == [
        f"batch 1 not delivered (1 failed attempt(s)): {tmp_path / 'alma-a'}: the delivery "
        "folder does not exist (is the share mounted?); deltasync does not create it"
    ]
    assert data["next_action"] == (
        "check the delivery with: deltasync --feed a doctor (the batch goes out with the next run)"
    )
    assert data["last_run"]["outcome"] == "attention"
    # Once the share is back, the next run delivers and the feed is fine again.
    (tmp_path / "alma-a").mkdir()
    assert invoke(config, "--feed", "a", "run", str(extract(tmp_path, "a", 0))).exit_code == 0
    assert status_json(config, "--feed", "a")[0] == 0


def test_a_failed_batch_needs_attention_until_a_later_one_is_confirmed(
    db_url: str, tmp_path: Path
) -> None:
    config = two_feeds(tmp_path, db_url, a='confirm = "manual"')
    assert invoke(config, "--feed", "a", "run", str(extract(tmp_path, "a", 0))).exit_code == 0
    assert invoke(config, "--feed", "a", "fail", "1", "--reason", "Alma lost it").exit_code == 0
    code, data = status_json(config, "--feed", "a")
    assert code == 4 and isinstance(data, dict)
    assert data["attention"] == [
        "batch 1 failed: failed by staff: Alma lost it; no batch was confirmed since (its "
        "patrons go out again with the next one)"
    ]
    assert data["next_action"] == (
        "see why with: deltasync --feed a batch show 1; its patrons go out with the next run"
    )
    day1 = str(extract(tmp_path, "a", 1))
    assert invoke(config, "--feed", "a", "run", "--force", day1).exit_code == 0
    assert status_json(config, "--feed", "a")[0] == 4  # batch 2 is not confirmed yet
    assert invoke(config, "--feed", "a", "confirm", "2").exit_code == 0
    code, data = status_json(config, "--feed", "a")
    assert code == 0 and isinstance(data, dict) and data["attention"] == []


def test_refused_and_held_back_runs_and_rejected_patrons(db_url: str, tmp_path: Path) -> None:
    config = two_feeds(tmp_path, db_url, a="[feeds.a.departure]\nmax_departures = 1")
    assert invoke(config, "--feed", "a", "run", str(extract(tmp_path, "a", 0))).exit_code == 0
    few = write(tmp_path, "few.xml", users(record("S0000001")))
    assert invoke(config, "--feed", "a", "run", str(few)).exit_code == 3
    code, data = status_json(config, "--feed", "a")
    assert code == 4 and isinstance(data, dict)
    [reason] = data["attention"]
    assert reason.startswith("the last run (") and ") was refused: " in reason
    assert "patrons would depart" in reason
    assert data["next_action"] == (
        "check the extract; if it is right, run again with: deltasync --feed a run --force"
    )

    # Feed b: a record held back by the checks, and a patron Alma rejected.
    held = record("NOLAST").replace("<last_name>Doe</last_name>", "")
    day0 = write(tmp_path, "b0.xml", users(record("B1"), record("B2"), held))
    assert invoke(config, "--feed", "b", "run", str(day0)).exit_code == 4
    code, data = status_json(config, "--feed", "b")
    assert code == 4 and isinstance(data, dict)
    [reason] = data["attention"]
    assert reason.endswith(
        "1 record(s) held back (named in the run's output); fix them in the SIS and they go "
        "out with the first extract that passes"
    )
    day1 = write(tmp_path, "b1.xml", users(record("B1"), record("B2")))
    assert invoke(config, "--feed", "b", "run", str(day1)).exit_code == 0
    ids = write(tmp_path, "rejected.txt", "B2\n")
    assert invoke(config, "--feed", "b", "reject", "1", "--ids", str(ids)).exit_code == 0
    code, data = status_json(config, "--feed", "b")
    # Rejected patrons are counted and get a next action, but are no reason by themselves.
    assert code == 0 and isinstance(data, dict), data
    text = invoke(config, "--feed", "b", "status")
    assert "  patrons whose current record Alma rejected: 1" in text.stdout
    assert (
        "  next action: fix the rejected patrons in the SIS or Alma, then: deltasync --feed b "
        "replay"
    ) in text.stdout.splitlines()
    rows = json.loads(invoke(config, "status", "--all", "--json").stdout)
    assert [(r["feed"], r["rejected"], r["held_back"]) for r in rows] == [("a", 0, 0), ("b", 1, 0)]


def metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the metrics file, as prometheus_client's parser reads it."""
    found = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_each_run_rewrites_the_metrics_file(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "textfile").mkdir()
    prom = tmp_path / "textfile" / "deltasync.prom"
    config = two_feeds(tmp_path, db_url, top='metrics_file = "textfile/deltasync.prom"')
    assert invoke(config, "--feed", "a", "run", str(extract(tmp_path, "a", 0))).exit_code == 0
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    found = metrics(prom)
    a = (("feed", "a"),)
    assert found[("deltasync_last_run_outcome", (("feed", "a"), ("outcome", "ok")))] == 1
    assert found[("deltasync_last_run_outcome", (("feed", "a"), ("outcome", "error")))] == 0
    assert found[("deltasync_last_run_exit_code", a)] == 0
    assert found[("deltasync_last_run_patrons", (("feed", "a"), ("kind", "new")))] == 20
    assert found[("deltasync_last_run_patrons", (("feed", "a"), ("kind", "sent")))] == 20
    assert found[("deltasync_batches_in_flight", a)] == 1
    assert 0 <= found[("deltasync_oldest_unconfirmed_batch_age_seconds", a)] < 60
    assert found[("deltasync_needs_attention", a)] == 0
    assert found[("deltasync_held_back_patrons", a)] == 0
    assert found[("deltasync_rejected_patrons", a)] == 0
    # Feed b has not run: its gauges are there, its last-run ones are not.
    assert found[("deltasync_batches_in_flight", (("feed", "b"),))] == 0
    assert ("deltasync_last_run_exit_code", (("feed", "b"),)) not in found

    # A run that fails is written too: it is what monitoring must see.
    broken = write(tmp_path, "broken.xml", "<users><user>")
    assert invoke(config, "--feed", "b", "run", str(broken)).exit_code == 1
    found = metrics(prom)
    assert found[("deltasync_last_run_outcome", (("feed", "b"), ("outcome", "error")))] == 1
    assert found[("deltasync_last_run_exit_code", (("feed", "b"),))] == 1
    assert found[("deltasync_needs_attention", (("feed", "b"),))] == 1
    assert found[("deltasync_batches_in_flight", a)] == 1
    assert [p.name for p in prom.parent.iterdir()] == ["deltasync.prom"]  # no temporary left

    # A dry run changes nothing, so it does not write; status --all does (ages stay current).
    prom.unlink()
    day1 = str(extract(tmp_path, "a", 1))
    assert invoke(config, "--feed", "a", "diff", "--force", day1).exit_code == 0
    assert not prom.exists()
    assert invoke(config, "status", "--all").exit_code == 4
    assert ("deltasync_needs_attention", (("feed", "b"),)) in metrics(prom)


def test_a_metrics_file_that_cannot_be_written_only_warns(sqlite_url: str, tmp_path: Path) -> None:
    config = two_feeds(tmp_path, sqlite_url, top='metrics_file = "missing/deltasync.prom"')
    result = invoke(config, "--feed", "a", "run", str(extract(tmp_path, "a", 0)))
    assert result.exit_code == 0
    missing = tmp_path / "missing"
    assert result.stderr == (
        f"Warning: metrics not updated: {missing / 'deltasync.prom'}: cannot write "
        f"metrics_file: the folder {missing} does not exist\n"
    )
