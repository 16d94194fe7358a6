"""Tests of scripts/bench.py: what it measures, and how it judges issue 10's targets."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402
import bench_report  # noqa: E402


def test_measure_reports_the_childs_own_peak_memory(tmp_path: Path) -> None:
    # A child forked from a large process inherits its peak RSS on Linux: the bench's own
    # memory (generator state, truth lists) must not count against deltasync's.
    ballast = bytearray(300_000_000)
    ballast[::4096] = b"x" * len(ballast[::4096])
    small, output = bench.measure(
        "small", [sys.executable, "-c", "print('hi')"], log=tmp_path / "log"
    )
    grow = "b = bytearray(150_000_000); b[::4096] = b'x' * len(b[::4096])"
    large, _ = bench.measure("large", [sys.executable, "-c", grow], log=tmp_path / "log")
    assert len(ballast) and output == "hi\n"
    assert small.peak_rss_mb < 60
    assert 150 <= large.peak_rss_mb < 250
    assert 0 < small.seconds < large.seconds and small.cpu_seconds > 0


def test_measure_names_the_step_that_failed(tmp_path: Path) -> None:
    log = tmp_path / "log"
    bench.measure("first", [sys.executable, "-c", "import sys; print('old news', file=sys.stderr)"],
                  log=log)  # fmt: skip
    fail = "import sys; print('disk full', file=sys.stderr); sys.exit(3)"
    with pytest.raises(bench.BenchError) as caught:
        bench.measure("sqlite.day1", [sys.executable, "-c", fail], log=log)
    assert str(caught.value) == f"sqlite.day1 exited 3 (log {log}): disk full"


def test_csv_flattening_has_one_row_per_patron_and_every_leaf(tmp_path: Path) -> None:
    files = bench.prepare_files(tmp_path, 120, 0.05, csv_wanted=True)
    with files.csv["day1"].open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    truth = files.truth(1)
    assert len(rows) == truth["present"] == len({row["primary_id"] for row in rows})
    assert list(rows[0])[0] == "primary_id"
    row = next(r for r in rows if r["user_notes/user_note/note_text"])
    assert row["user_identifiers/user_identifier/id_type"] == "UNIV_ID; BARCODE"
    assert row["user_group@desc"] in {"Undergraduate", "Graduate", "Faculty", "Staff"}
    assert row["status_date"].endswith("Z")
    # Cached: a second call reuses the files instead of writing them again.
    stamp = files.xml["day0"].stat().st_mtime_ns
    assert bench.prepare_files(tmp_path, 120, 0.05, csv_wanted=True) == files
    assert files.xml["day0"].stat().st_mtime_ns == stamp
    assert not list(files.folder.glob(".partial-*"))


def test_bench_runs_every_step_on_the_same_files(tmp_path: Path) -> None:
    backends = "sqlite,postgresql" if os.environ.get("DELTASYNC_TEST_PG_URL") else "sqlite"
    command = [
        sys.executable, str(ROOT / "scripts" / "bench.py"), "--patrons", "200", "--repeat", "1",
        "--backends", backends, "--skip-csv-diff", "--json", "--out", str(tmp_path),
    ]  # fmt: skip
    if "postgresql" in backends:
        command += ["--postgres-url", os.environ["DELTASYNC_TEST_PG_URL"]]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    size = result["sizes"]["200"]
    names = [f"iterparse.{day}" for day in bench.DAYS]
    for backend in backends.split(","):
        names += [f"{backend}.{day}" for day in (*bench.DAYS, "status")]
        names += [f"{backend}.csv.{day}" for day in ("day0", "day1")]
    assert sorted(size["steps"]) == sorted(names)
    steps = size["steps"]
    assert steps["iterparse.day1"]["result"] == {"records": size["truth_day1"]["present"]}
    assert steps["sqlite.day0"]["result"]["sent"] == 200
    assert steps["sqlite.day1"]["result"]["sent"] > 0
    reformat = steps["sqlite.reformat"]["result"]
    assert reformat["sent"] == 0 and reformat["counts"]["unchanged"] == reformat["records"]
    assert all(not step["problems"] for step in steps.values())
    assert all(step["peak_rss_mb"] > 5 and step["seconds"] > 0 for step in steps.values())
    assert result["csv_diff_skipped"] == "--skip-csv-diff"
    assert result["machine"]["cpus"] == os.cpu_count()
    correct = [t for t in result["targets"] if t["kind"] == "correct"]
    # Five XML days and two days of the CSV feed (issue 11) per backend.
    assert len(correct) == 7 * len(backends.split(",")) and all(t["pass"] for t in correct)
    # Date-stamped days: day 1's records dated anew send nothing; day 2's send its changes.
    assert steps["sqlite.stamped1"]["result"]["sent"] == 0
    stamped2 = steps["sqlite.stamped2"]["result"]["counts"]
    assert stamped2["changed"] > 0 and stamped2["unchanged"] > 0
    assert steps["sqlite.csv.day0"]["result"]["sent"] == 200
    assert steps["sqlite.csv.day1"]["result"]["counts"] == steps["sqlite.day1"]["result"]["counts"]
    assert "200 sqlite day 1: iterparse time / run time" in done.stderr
    saved = list(tmp_path.glob("bench-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text()) == result
    shown = subprocess.run(
        [*command[:2], "--show", str(saved[0])], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0 and shown.stdout.strip() == bench_report.table(result)


def _step(seconds: float, rss: float = 100.0, problems: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"seconds": seconds, "peak_rss_mb": rss, "problems": list(problems)}


def _size(scale: float, *, day1: float, rss: float = 100.0) -> dict[str, Any]:
    steps = {f"iterparse.{day}": _step(2.0 * scale) for day in bench.DAYS}
    for backend, slower in (("sqlite", 1.0), ("postgresql", 1.4)):
        steps[f"{backend}.day0"] = _step(7.0 * scale * slower, rss)
        steps[f"{backend}.day1"] = _step(day1 * scale * slower, rss)
        steps[f"{backend}.reformat"] = _step(20.0 * scale * slower, rss)
        steps[f"{backend}.status"] = _step(0.6)
    return {"steps": steps}


def test_targets_of_issue_10() -> None:
    sizes = {"100000": _size(1, day1=0.9), "1000000": _size(10.5, day1=0.9, rss=310)}
    sizes["1000000"]["steps"]["sqlite.reformat"]["problems"] = ["sent 5 records, expected none"]
    before = {100_000: {"sqlite": 10.0}}
    got = {t.name: (t.value, t.limit, t.passed) for t in bench_report.judge(sizes, before)}
    assert got["100,000 sqlite day 1: iterparse time / run time"] == (2.222, 2.0, True)
    assert got["1,000,000 sqlite day 1: iterparse time / run time"] == (2.222, 3.0, False)
    assert got["100,000 postgresql day 1 / sqlite day 1"] == (1.4, 1.5, True)
    assert got["100,000 sqlite day 0 / iterparse"] == (3.5, 4.0, True)
    assert got["100,000 postgresql day 0 / iterparse"] == (4.9, 4.0, False)
    # Before: 10x the iterparse time; allowed 10 % on top of that; no baseline, no verdict.
    assert got["100,000 sqlite reformat day / iterparse, vs before"] == (10.0, 11.0, True)
    assert got["100,000 postgresql reformat day / iterparse, vs before"] == (14.0, None, None)
    assert got["1,000,000 sqlite day 0: peak RSS"] == (310, 300.0, False)
    assert "100,000 sqlite day 0: peak RSS" not in got  # the memory ceiling is set for 1M
    assert got["1,000,000 / 100,000 sqlite day 1: time"] == (10.5, 11.0, True)
    assert got["1,000,000 / 100,000 sqlite day 1: peak RSS"] == (3.1, 11.0, True)
    assert got["1,000,000 sqlite reformat day: correct (nothing sent)"] == (1.0, 0.0, False)
    assert got["1,000,000 sqlite day 1: correct (counts as generated)"] == (0.0, 0.0, True)


def test_reformat_day_that_sends_anything_is_wrong() -> None:
    truth = bench.generate_extract.truth(patrons=50, day=1)
    output = {
        "extract": {"records": truth["present"]},
        "counts": {"new": 0, "changed": 2, "unchanged": truth["present"] - 2, "departed": 0,
                   "returned": 0, "held_back": 0},
        "batch": {"seq": 3, "records": 2},
    }  # fmt: skip
    result, problems = bench.check_run("reformat", output, truth)
    assert result["sent"] == 2
    assert problems == [
        "changed: 2, expected 0",
        f"unchanged: {truth['present'] - 2}, expected {truth['present']}",
        "sent 2 records (batch 3), expected none",
    ]
