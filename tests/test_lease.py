"""A run that lost its lock (its PostgreSQL connection died) neither commits nor uploads.

The fault is real: the test ends the server session holding the advisory lock with
pg_terminate_backend, as a server restart does, while the run is held at a known point in a
process of its own (paused.py); a second run then takes the feed over.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

from helpers import dump_store, invoke, run_json
from procs import Command, Paused, wait_until
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from deltasync.store import safe_url

ADVISORY_HOLDERS = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _query(url: str, sql: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return list(conn.execute(text(sql)).scalars())
    finally:
        engine.dispose()


def _lock_holders(url: str) -> list[object]:
    return _query(url, ADVISORY_HOLDERS)


def _terminate(url: str, pids: list[object]) -> None:
    for pid in pids:
        assert _query(url, f"SELECT pg_terminate_backend({int(str(pid))})") == [True]


def _sessions_of_others(url: str) -> list[object]:
    """Every session on the test's database but the one asking (the runs' connections)."""
    return _query(
        url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()",
    )


def _batches(url: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            rows = conn.execute(text("SELECT seq, file_name, status FROM batch ORDER BY seq"))
            return [tuple(r) for r in rows]
    finally:
        engine.dispose()


def _lease_taken(url: str, token: int) -> bool:
    try:
        return _query(url, "SELECT token FROM run_lease") == [token]
    except ProgrammingError:  # a store without leases (before they existed): the lock it is
        time.sleep(1)
        return True


def _taken_over(second: Command) -> str:
    return f"another run (pid {second.pid} on {socket.gethostname()}) took the feed over"


def test_a_run_that_lost_its_lock_does_not_upload_beside_the_one_that_took_over(
    pg_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    tmp_path: Path,
) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    config = write_config(pg_url, feed={"transport": "dir", "remote_dir": str(remote)})
    run_json(config, str(make_extract(0, 60)))  # batch 1 waits unread in remote_dir
    first = Paused(tmp_path / "first", "upload", config, "run", str(make_extract(1, 60)))
    second: Command | None = None
    try:
        first.wait_ready()  # batch 2 committed, batch 1 taken back: about to upload batch 2
        holders = _lock_holders(pg_url)
        assert len(holders) == 1
        _terminate(pg_url, holders)  # the connection holding the run's lock is gone
        second = Command(config, "run", "--json", str(make_extract(2, 60)))
        took_over = second.finish()
        assert took_over.code == 0, took_over.err
        newest = Path(json.loads(took_over.out)["batch"]["file"]).name
        first.go()
        lost = first.finish()
    finally:
        first.kill()
        if second is not None:
            second.kill()
    batches = _batches(pg_url)
    assert [(seq, status) for seq, _, status in batches] == [
        (1, "superseded"),
        (2, "superseded"),
        (3, "uploaded"),
    ]
    batch2, batch3 = str(batches[1][1]), str(batches[2][1])
    assert batch3 == newest
    assert (lost.code, lost.out) == (1, "")
    assert lost.err == (
        f"Error: this run of feed 'patrons' lost its lock: {_taken_over(second)}. It stopped "
        f"before uploading {batch2} to {remote}; the other run carries on\n"
    )
    assert batch2 not in {p.name for p in remote.iterdir()}
    # Alma finds one file: never two unread files that share patrons.
    assert sorted(p.name for p in remote.iterdir() if p.suffix == ".zip") == [newest]


def test_a_run_that_lost_its_lock_does_not_commit_after_another_took_over(
    pg_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    tmp_path: Path,
) -> None:
    config = write_config(pg_url)
    run_json(config, str(make_extract(0, 60)))
    first = Paused(tmp_path / "first", "published", config, "run", str(make_extract(1, 60)))
    second: Command | None = None
    try:
        first.wait_ready()  # inside its transaction, its delta file in the outbox
        [old_holder] = _lock_holders(pg_url)
        _terminate(pg_url, [old_holder])
        second = Command(config, "run", "--json", str(make_extract(2, 60)))
        wait_until(
            lambda: _lock_holders(pg_url) not in ([], [old_holder]), what="the second run's lock"
        )
        # The second run took the lock and then its lease, and now waits for rows the first
        # run's transaction holds: the first must give way, not commit.
        wait_until(lambda: _lease_taken(pg_url, 3), what="the second run's lease")
        first.go()
        lost = first.finish()
        took_over = second.finish()
    finally:
        first.kill()
        if second is not None:
            second.kill()
    assert took_over.code == 0, took_over.err
    assert (lost.code, lost.out) == (1, "")
    assert lost.err == (
        f"Error: this run of feed 'patrons' lost its lock: {_taken_over(second)}. It stopped "
        "before committing and rolled its changes back; the other run carries on\n"
    )
    batches = _batches(pg_url)
    assert [seq for seq, _, _ in batches] == [1, 2]
    newest = Path(json.loads(took_over.out)["batch"]["file"])
    assert batches[1][1] == newest.name
    # The first run's file went with its transaction; the second run's is the only new one.
    outbox = newest.parent
    assert sorted(p.name for p in outbox.iterdir() if p.is_file()) == [
        batches[0][1],
        newest.name,
    ]
    extracts = _query(pg_url, "SELECT name FROM extract ORDER BY id")
    assert [Path(str(name)).name for name in extracts] == [
        "patrons-day000.xml",
        "patrons-day002.xml",
    ]


def test_a_run_whose_lock_connection_died_stops_before_committing(
    pg_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """Noticed even when no other run has come yet: nothing excludes one any more."""
    config = write_config(pg_url)
    run_json(config, str(make_extract(0, 60)))
    before = dump_store(pg_url)
    first = Paused(tmp_path / "first", "published", config, "run", str(make_extract(1, 60)))
    try:
        first.wait_ready()
        _terminate(pg_url, _lock_holders(pg_url))
        first.go()
        lost = first.finish()
    finally:
        first.kill()
    assert (lost.code, lost.out) == (1, "")
    assert lost.err == (
        "Error: this run of feed 'patrons' lost its lock: the connection to PostgreSQL that "
        "held it was lost. It stopped before committing and rolled its changes back; run "
        "again\n"
    )
    assert dump_store(pg_url) == before
    again = run_json(config, str(make_extract(1, 60)))
    assert again["batch"]["seq"] == 2


def test_a_server_restart_mid_run_is_one_clear_message(
    pg_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """Every connection of the run ends, as when the server restarts: the error says so,
    without SQLAlchemy's text, and releasing the dead lock raises no traceback over it."""
    config = write_config(pg_url)
    run_json(config, str(make_extract(0, 60)))
    before = dump_store(pg_url)
    first = Paused(tmp_path / "first", "scanned", config, "run", str(make_extract(1, 60)))
    try:
        first.wait_ready()
        sessions = _sessions_of_others(pg_url)
        assert len(sessions) >= 2  # the lock's connection and the transaction's
        _terminate(pg_url, sessions)
        first.go()
        lost = first.finish()
    finally:
        first.kill()
    assert (lost.code, lost.out) == (1, "")
    assert lost.err == (
        f"Error: state store {safe_url(pg_url)}: lost the connection to the database server "
        "(was it restarted or stopped?); nothing that was not yet committed was kept: run the "
        "command again\n"
    )
    assert dump_store(pg_url) == before
    # The store answers again; status exits 4, the probe's answer: the last run failed.
    status = invoke(config, "status")
    assert status.exit_code == 4
    assert "lost the connection to the database server" in status.stderr


def test_a_run_whose_lock_file_was_removed_stops_before_committing(
    sqlite_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """On SQLite the lock is a file: removed, a second run could lock a new one."""
    config = write_config(sqlite_url)
    run_json(config, str(make_extract(0, 40)))
    before = dump_store(sqlite_url)
    lock_file = tmp_path / "state" / "deltasync.db.patrons.lock"
    first = Paused(tmp_path / "first", "published", config, "run", str(make_extract(1, 40)))
    try:
        first.wait_ready()
        lock_file.unlink()
        first.go()
        lost = first.finish()
    finally:
        first.kill()
    assert (lost.code, lost.out) == (1, "")
    assert lost.err == (
        f"Error: this run of feed 'patrons' lost its lock: its lock file {lock_file} was "
        "removed. It stopped before committing and rolled its changes back; run again\n"
    )
    assert dump_store(sqlite_url) == before
