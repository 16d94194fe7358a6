"""Recovery through the CLI: batch rebuild, baseline adoption, resend, retention, backup."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import generate_extract
import pytest
from helpers import invoke, read_delta, record, run_json, users, write
from sqlalchemy import create_engine, text

from deltasync import config as config_module
from deltasync import job
from deltasync.store import open_store


def test_batch_rebuild_gives_the_same_bytes(
    db_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    tmp_path: Path,
) -> None:
    config = write_config(db_url, feed={"records_per_part": 40})
    run_json(config, str(make_extract(0, 120)))
    out = run_json(config, str(make_extract(1, 120)))
    original = Path(out["batch"]["file"])
    digest = hashlib.sha256(original.read_bytes()).hexdigest()
    refused = invoke(config, "batch", "rebuild", "2")
    assert refused.exit_code == 1 and "exists; move it away first" in refused.output
    original.unlink()  # the outbox was wiped
    write_config(db_url, feed={"records_per_part": 7})  # and the config changed since
    rebuilt = invoke(config, "batch", "rebuild", "2")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert hashlib.sha256(original.read_bytes()).hexdigest() == digest
    elsewhere = invoke(config, "batch", "rebuild", "1", "--out", str(tmp_path / "recovered"))
    assert elsewhere.exit_code == 0, elsewhere.output
    [copy] = (tmp_path / "recovered").iterdir()
    batches = json.loads(invoke(config, "batches", "--json").stdout)
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == batches[0]["sha256"]
    assert len(read_delta(copy)) == 120


def test_rebuild_after_retention_says_why_it_cannot(
    sqlite_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    config = write_config(sqlite_url)
    first = run_json(config, str(make_extract(0, 60)))
    run_json(config, str(make_extract(1, 60)))
    assert invoke(config, "prune", "--older-than", "0").exit_code == 0
    assert not Path(first["batch"]["file"]).exists()  # retention deleted the old file too
    result = invoke(config, "batch", "rebuild", "1")
    assert result.exit_code == 1
    assert "was pruned by retention" in result.output
    assert not list(Path(first["batch"]["file"]).parent.glob(".*"))  # no half-written file left


def test_baseline_adopts_a_feed_and_the_next_run_sends_only_that_days_changes(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    config = write_config(db_url)
    day0, day1 = make_extract(0, 300), make_extract(1, 300)
    adopted = invoke(config, "baseline", str(day0))
    assert adopted.exit_code == 0, adopted.output
    assert "adopted 300 patrons" in adopted.stdout and "nothing was sent" in adopted.stdout
    status = json.loads(invoke(config, "status", "--json").stdout)
    assert status["batches"] == 0 and status["awaiting_confirmation"] == 0
    assert not any(Path(status["outbox"]).glob("*.zip"))
    out = run_json(config, str(day1))
    truth = generate_extract.truth(patrons=300, day=1)
    sent = read_delta(Path(out["batch"]["file"]))
    expected = set(truth["new"]) | set(truth["changed"]) | set(truth["returned"])
    expected |= set(truth["departed"])
    assert set(sent) == expected
    history = json.loads(invoke(config, "history", truth["changed"][0], "--json").stdout)
    assert history[0]["baseline"] is True and history[0]["carried_by"] == []
    again = invoke(config, "baseline", str(day1))
    assert again.exit_code == 3 and "already has a snapshot" in again.output


def test_resend_puts_chosen_patrons_into_the_next_delta(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url)
    extract = write(tmp_path, "d.xml", users(record("A"), record("B"), record("C")))
    run_json(config, str(extract))
    ids = write(tmp_path, "ids.txt", "c\n\n")
    result = invoke(config, "resend", "A", "nobody", "--ids", str(ids))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "2 patron(s) will go out with the next run",
        "  nobody: no such patron, ignored",
    ]
    out = run_json(config, str(extract))  # the same extract: only the resend goes out
    assert out["already_ingested"] is True
    assert set(read_delta(Path(out["batch"]["file"]))) == {"A", "C"}
    assert invoke(config, "resend").exit_code == 2


def test_prune_removes_old_payloads_keeps_the_trail_and_forgets_purged_patrons(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(
        db_url,
        feed={"retention_days": 0},  # runs keep everything: the prune below does the work
        departure={"expiry": "today-30", "purge_after_days": 1, "max_departures": "100%"},
    )
    a0, a1 = record("A"), record("A", name="Roe")
    run_json(config, str(write(tmp_path, "d0.xml", users(a0, record("B")))))
    run_json(config, str(write(tmp_path, "d1.xml", users(a1, record("B")))))
    run_json(config, str(write(tmp_path, "d2.xml", users(a1))))  # B leaves, purge date passed
    before = json.loads(invoke(config, "history", "A", "--json").stdout)
    result = invoke(config, "prune", "--older-than", "0", "--json")
    assert result.exit_code == 0, result.output
    pruned = json.loads(result.stdout)
    # A's first record, and B's last present one (superseded by its expiration record).
    assert (pruned["payloads"], pruned["patrons"]) == (2, 1)
    engine = create_engine(config_module.load(config).state_url)
    with engine.connect() as conn:
        kept = conn.execute(
            text(
                "SELECT count(*) FROM patron_version v JOIN patron p ON p.id = v.patron_id "
                "WHERE v.payload IS NOT NULL AND v.id <> p.current_version_id"
            )
        ).scalar_one()
        patrons = conn.execute(text("SELECT match_id FROM patron")).scalars().all()
    engine.dispose()
    assert kept == 0 and patrons == ["A"]
    after = json.loads(invoke(config, "history", "A", "--json").stdout)
    assert [(v["first_seen"], v["last_seen"], v["digest"]) for v in after] == [
        (v["first_seen"], v["last_seen"], v["digest"]) for v in before
    ]
    assert after[0]["record"] is None and after[1]["record"] is not None
    assert after[1]["changes"] is None  # its predecessor is gone: the fields cannot be compared
    table = invoke(config, "history", "A").stdout
    assert "(record pruned by retention" in table
    assert invoke(config, "history", "B").exit_code == 1


def test_run_prunes_by_retention_days(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    cfg = config_module.load(write_config(db_url, feed={"retention_days": 3}))
    feed = cfg.feed(None)
    start = dt.datetime(2027, 1, 4, 11, tzinfo=dt.UTC)
    with open_store(cfg.state_url) as store:
        results = [
            job.run(store, feed, make_extract(day, 100), now=start + dt.timedelta(days=day))
            for day in range(6)
        ]
    assert results[0].pruned is not None and results[0].pruned.payloads == 0
    # Versions superseded on day 1 were last seen on day 0: out of a 3-day window by day 4.
    assert sum(r.pruned.payloads for r in results if r.pruned) > 0
    assert results[3].pruned is not None and results[3].pruned.payloads == 0
    assert results[4].pruned is not None and results[4].pruned.payloads > 0


def test_backup_is_a_consistent_private_copy_while_a_run_writes(
    sqlite_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    tmp_path: Path,
) -> None:
    config = write_config(sqlite_url)
    run_json(config, str(make_extract(0, 100)))
    database = Path(config_module.load(config).state_url.removeprefix("sqlite:///"))
    writer = sqlite3.connect(database)
    writer.execute("BEGIN IMMEDIATE")  # a run in the middle of its transaction
    writer.execute("UPDATE patron SET match_id = 'uncommitted'")
    target = tmp_path / "backups" / "copy.db"
    target.parent.mkdir()
    done: list[int] = []
    thread = threading.Thread(
        target=lambda: done.append(invoke(config, "backup", str(target)).exit_code)
    )
    thread.start()
    thread.join(timeout=60)
    writer.rollback()
    writer.close()
    assert done == [0]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    copy = sqlite3.connect(target)
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert copy.execute(
        "SELECT count(*) FROM patron WHERE match_id = 'uncommitted'"
    ).fetchone() == (0,)
    assert copy.execute("SELECT count(*) FROM patron").fetchone() == (100,)
    copy.close()
    again = invoke(config, "backup", str(target))
    assert again.exit_code == 1 and "never overwrites" in again.output


def test_backup_of_postgresql_points_to_pg_dump(
    pg_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(pg_url)
    result = invoke(config, "backup", str(tmp_path / "x.db"))
    assert result.exit_code == 1 and "pg_dump" in result.output


@pytest.mark.parametrize("days", ["-1", "x"])
def test_prune_refuses_a_bad_window(
    days: str, sqlite_url: str, write_config: Callable[..., Path]
) -> None:
    result = invoke(write_config(sqlite_url), "prune", "--older-than", days)
    assert result.exit_code == 2
