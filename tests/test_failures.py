"""A run is all or nothing: failures leave store and outbox as they were; guards refuse."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import generate_extract
import pytest
from helpers import dump_store, invoke, listing, read_delta, run_json

from deltasync import config as config_module
from deltasync import job
from deltasync.errors import ExtractError
from deltasync.store import open_store

NOW_DAY0 = dt.datetime(2027, 1, 4, 6, 0, tzinfo=dt.UTC)
NOW_DAY1 = dt.datetime(2027, 1, 5, 6, 0, tzinfo=dt.UTC)


class Injected(Exception):
    pass


def _fail_at(step: str) -> job.Checkpoint:
    def checkpoint(name: str) -> None:
        if name == step:
            raise Injected(step)

    return checkpoint


@pytest.mark.parametrize("step", job.STEPS)
def test_failure_at_any_step_changes_nothing_and_next_run_matches(
    step: str,
    db_url: str,
    tmp_path: Path,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
) -> None:
    cfg = config_module.load(write_config(db_url))
    feed = cfg.feed(None)
    day0, day1 = make_extract(0, 200), make_extract(1, 200)
    with open_store(cfg.state_url) as store:
        job.run(store, feed, day0, now=NOW_DAY0)
        before = dump_store(cfg.state_url), listing(feed.outbox)

        with pytest.raises(Injected):
            job.run(store, feed, day1, now=NOW_DAY1, checkpoint=_fail_at(step))
        assert (dump_store(cfg.state_url), listing(feed.outbox)) == before

        result = job.run(store, feed, day1, now=NOW_DAY1)
    assert result.batch is not None
    truth = generate_extract.truth(patrons=200, day=1)
    assert result.counts.changed == len(truth["changed"])
    assert result.counts.departed == len(truth["departed"])
    # The same bytes an uninterrupted run writes: the file depends on records and time only.
    reference = _uninterrupted(tmp_path / "reference", day0, day1)
    assert result.batch.file.read_bytes() == reference.read_bytes()


def _uninterrupted(folder: Path, day0: Path, day1: Path) -> Path:
    folder.mkdir()
    cfg = config_module.parse(
        {
            "state": {"url": "sqlite:///ref.db"},
            "feeds": {"patrons": {"timezone": "America/Chicago", "ignore": ["status_date"]}},
        },
        folder / "config.toml",
        {},
    )
    with open_store(cfg.state_url) as store:
        job.run(store, cfg.feed(None), day0, now=NOW_DAY0)
        result = job.run(store, cfg.feed(None), day1, now=NOW_DAY1)
    assert result.batch is not None
    return result.batch.file


def test_bad_record_late_in_the_file_changes_nothing(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    config = write_config(db_url)
    run_json(config, str(make_extract(0, 100)))
    before = dump_store(db_url)
    text = make_extract(1, 100).read_text(encoding="utf-8")
    cut = text.rindex("<user>")
    broken = make_extract(1, 100).with_name("broken.xml")
    broken.write_text(
        text[:cut] + "<user><primary_id>X</primary_id><oops></user>\n</users>\n", encoding="utf-8"
    )
    result = invoke(config, "run", str(broken))
    assert result.exit_code == 1
    assert f"{broken}: line " in result.output
    assert "Traceback" not in result.output
    assert dump_store(db_url) == before


def test_unreadable_zip_is_a_clear_error(
    sqlite_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(sqlite_url)
    bad = tmp_path / "patrons.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    result = invoke(config, "run", str(bad))
    assert result.exit_code == 1
    assert f"Error: {bad}: not a readable zip file" in result.output


def test_truncated_extract_trips_the_guard_and_changes_nothing(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    config = write_config(db_url)
    run_json(config, str(make_extract(0, 300)))
    before = dump_store(db_url), listing(config.parent / "outbox")
    # A truncated SIS export: the file ends cleanly but a third of the campus is missing.
    truncated = make_extract(1, 200).with_name("truncated.xml")
    make_extract(1, 200).rename(truncated)

    result = invoke(config, "run", str(truncated))
    assert result.exit_code == 3, result.output
    assert "refused:" in result.output
    assert "would depart" in result.output and "max_departures = 5%" in result.output
    assert (dump_store(db_url), listing(config.parent / "outbox")) == before

    forced = run_json(config, str(truncated), "--force")
    assert forced["counts"]["departed"] >= 100


def test_mass_change_trips_the_change_guard(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    config = write_config(db_url)
    run_json(config, str(make_extract(0, 100)))
    before = dump_store(db_url)
    # Counting the fields Alma's SIS load ignores, status_date (new every day) makes every
    # patron "changed" (by default it is no change at all: see test_expiry.py).
    write_config(db_url, feed={"ignore": [], "count_sis_fields": True})
    result = invoke(config, "run", str(make_extract(1, 100)))
    assert result.exit_code == 3
    assert "would change" in result.output and "max_changes = 50%" in result.output
    assert dump_store(db_url) == before


def test_guard_limits_as_counts(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    truth = generate_extract.truth(patrons=300, day=1)
    departed = len(truth["departed"])
    assert departed >= 1
    config = write_config(db_url, departure={"max_departures": departed - 1})
    run_json(config, str(make_extract(0, 300)))
    assert invoke(config, "run", str(make_extract(1, 300))).exit_code == 3
    write_config(db_url, departure={"max_departures": departed})
    assert run_json(config, str(make_extract(1, 300)))["counts"]["departed"] == departed


def test_killed_run_leaves_a_consistent_store(
    tmp_path: Path, make_extract: Callable[..., Path]
) -> None:
    """SIGKILL a real CLI run at several moments; the next run always ends the same."""
    patrons = 6000
    day0, day1 = make_extract(0, patrons), make_extract(1, patrons)
    truth = generate_extract.truth(patrons=patrons, day=1)
    expected = set(truth["new"]) | set(truth["changed"]) | set(truth["departed"])

    def prepare(name: str) -> tuple[Path, list[str]]:
        folder = tmp_path / name
        folder.mkdir()
        config = folder / "config.toml"
        config.write_text(
            '[state]\nurl = "sqlite:///state.db"\n[feeds.patrons]\n'
            'timezone = "America/Chicago"\nignore = ["status_date"]\n'
        )
        run_json(config, str(day0))
        return config, [sys.executable, "-m", "deltasync", "--config", str(config), "run"]

    _config, timing = prepare("timing")
    started = time.monotonic()
    subprocess.run([*timing, str(day1)], check=True, capture_output=True)
    duration = time.monotonic() - started

    for fraction in (0.15, 0.5, 0.85):
        config, command = prepare(f"kill-{fraction}")
        url = f"sqlite:///{config.parent / 'state.db'}"
        outbox = config.parent / "outbox" / "patrons"
        before_files = set(os.listdir(outbox))
        before = dump_store(url)
        process = subprocess.Popen(
            [*command, str(day1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(duration * fraction)
        process.send_signal(signal.SIGKILL)
        process.wait()
        after = dump_store(url)
        if after != before:  # killed after the commit: then the run is complete
            assert any(str(day1) in str(row) for row in after["extract"])

        rerun = subprocess.run([*command, "--json", str(day1)], capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        result = json.loads(rerun.stdout)
        new_files = set(os.listdir(outbox)) - before_files - {".orphaned"}
        assert len(new_files) == 1, new_files  # one delta for day 1, whichever run wrote it
        assert set(read_delta(outbox / new_files.pop())) == expected
        if not result["already_ingested"]:
            assert result["counts"]["changed"] == len(truth["changed"])


def test_extract_errors_name_file_and_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<users>\n  <user>\n    <primary_id>A&B</primary_id>\n  </user>\n</users>\n")
    from deltasync.source.fullparse import read_records

    with pytest.raises(ExtractError, match=rf"^{bad}: line 3, column \d+: "):
        list(read_records(bad))
