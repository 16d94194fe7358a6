"""The run log: every run, replay and baseline is logged with how it ended, failures too."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from helpers import invoke, record, users, write

from deltasync.store import open_store, runs


def logged(url: str) -> list[runs.RunEntry]:
    with open_store(url) as store, store.read() as conn:
        return runs.runs(conn, "patrons")


def test_each_run_is_logged_with_its_outcome_and_exit_code(
    db_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    tmp_path: Path,
) -> None:
    config = write_config(db_url, departure={"max_departures": "1"})
    assert invoke(config, "run", str(make_extract(0, 40))).exit_code == 0
    # Day 1 with a record that fails its checks: done, but it needs attention.
    bad = write(
        tmp_path,
        "bad.xml",
        users(record("S0000001"), record("NOLAST").replace("<last_name>Doe</last_name>", "")),
    )
    assert invoke(config, "run", str(bad)).exit_code == 3  # 39 departures: refused
    assert invoke(config, "run", "--force", str(bad)).exit_code == 4
    broken = write(tmp_path, "broken.xml", "<users><user>")
    assert invoke(config, "run", str(broken)).exit_code == 1
    assert invoke(config, "diff", str(make_extract(1, 40))).exit_code in (0, 3, 4)

    entries = logged(db_url)
    assert [(e.command, e.outcome.value, e.outcome.exit_code) for e in entries] == [
        ("run", "error", 1),
        ("run", "attention", 4),
        ("run", "refused", 3),
        ("run", "ok", 0),
    ]  # newest first; the dry run (diff) is not logged
    error, attention, refused, first = entries
    assert first.counts["new"] == 40 and first.counts["sent"] == 40 and first.batch_seq == 1
    assert refused.error is not None and "would depart" in refused.error
    assert attention.attention and attention.attention[0].startswith("1 record(s) held back")
    assert error.error is not None and "broken.xml" in error.error
    assert all(e.finished_at >= e.started_at for e in entries)
    with open_store(db_url) as store, store.read() as conn:
        assert attention.id is not None
        assert runs.held_back(conn, attention.id) == [("NOLAST", "mandatory-missing")]


def test_the_run_log_is_pruned_with_the_retention_window(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    config = write_config(db_url)
    assert invoke(config, "run", str(make_extract(0, 20))).exit_code == 0
    [entry] = logged(db_url)
    with open_store(db_url) as store, store.begin() as conn:
        later = entry.started_at + dt.timedelta(days=30)
        assert runs.prune(conn, "patrons", entry.started_at) == 0
        assert runs.prune(conn, "patrons", later) == 1
    assert logged(db_url) == []
