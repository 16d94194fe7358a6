"""What a user sees when the store cannot be used: one clear line, never a traceback or the
database driver's text, and nothing touched that is not deltasync's."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import invoke, run_json
from sqlalchemy import create_engine, text

from deltasync.store import safe_url

FOLDER_MESSAGE = "must be writable (SQLite keeps its journal beside the database)"


def test_a_store_written_by_a_newer_deltasync_is_named_as_such(
    db_url: str, write_config: Callable[..., Path]
) -> None:
    config = write_config(db_url)
    assert invoke(config, "status").exit_code == 0
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    for args in (("status",), ("batches",)):
        result = invoke(config, *args)
        assert result.exit_code == 1
        assert result.output == (
            f"Error: cannot open state store {safe_url(db_url)}: this store was written by a "
            "newer deltasync (revision 9999); upgrade deltasync\n"
        )


@contextlib.contextmanager
def _unwritable(folder: Path) -> Iterator[None]:
    """No new file can be made in ``folder``, even by root (who ignores permissions)."""
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"cannot make a folder immutable here: {made.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)


def test_an_existing_store_in_a_folder_that_cannot_be_written(
    sqlite_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    tmp_path: Path,
) -> None:
    config = write_config(sqlite_url)
    run_json(config, str(make_extract(0, 20)))
    day1 = make_extract(1, 20)
    folder = tmp_path / "state"
    assert sorted(p.name for p in folder.iterdir()) == ["deltasync.db", "deltasync.db.patrons.lock"]
    with _unwritable(folder):
        for args in (("status",), ("run", str(day1))):
            result = invoke(config, *args)
            assert result.exit_code == 1, result.output
            assert result.output == (
                f"Error: cannot open state store {sqlite_url}: the folder {folder} "
                f"{FOLDER_MESSAGE}\n"
            )
    assert run_json(config, str(day1))["batch"]["seq"] == 2  # writable again: all is well


@pytest.mark.parametrize("through_symlink", [True, False])
def test_a_state_file_that_is_not_a_database_is_left_alone(
    through_symlink: bool, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting notes, not a database\n", encoding="utf-8")
    notes.chmod(0o644)
    state = tmp_path / "state.db"
    if through_symlink:
        state.symlink_to(notes)
    config = write_config(f"sqlite:///{state if through_symlink else notes}")
    named = notes  # the file the link names: that is what deltasync would open
    result = invoke(config, "status")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {named} is not a deltasync state store (not a SQLite database); check state.url\n"
    )
    assert stat.S_IMODE(notes.stat().st_mode) == 0o644
    assert notes.read_text(encoding="utf-8") == "meeting notes, not a database\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["config.toml", "notes.txt", *(["state.db"] if through_symlink else [])]
    )


def test_another_programs_sqlite_database_is_not_taken_over(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    other = tmp_path / "inventory.db"
    with contextlib.closing(sqlite3.connect(other)) as db, db:
        db.execute("CREATE TABLE item (name TEXT)")
    other.chmod(0o644)
    config = write_config(f"sqlite:///{other}")
    result = invoke(config, "status")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {other} is a SQLite database but not a deltasync state store (it has tables "
        "of its own); check state.url\n"
    )
    with contextlib.closing(sqlite3.connect(other)) as db:
        tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("item",)]
    assert stat.S_IMODE(other.stat().st_mode) == 0o644


# Stops a backup just before it puts the finished copy in place, as a kill would find it.
STOP_BEFORE_PUBLISHING = """
import os, sys, time
def stop(*args, **kwargs):
    print("publishing", flush=True)
    time.sleep(600)
os.link = os.replace = os.rename = stop
from deltasync.cli import cli
cli.main(args=sys.argv[1:], prog_name="deltasync")
"""


def test_a_backup_killed_midway_does_not_block_the_next_one(
    sqlite_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    tmp_path: Path,
) -> None:
    config = write_config(sqlite_url)
    run_json(config, str(make_extract(0, 40)))
    backups = tmp_path / "backups"
    backups.mkdir()
    target = backups / "copy.db"
    killed = subprocess.Popen(
        [sys.executable, "-c", STOP_BEFORE_PUBLISHING, "--config", str(config)]
        + ["backup", str(target)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert killed.stdout is not None and killed.stdout.readline() == "publishing\n"
    finally:
        killed.kill()
        killed.communicate()
    left = [p.name for p in backups.iterdir()]
    assert len(left) == 1 and left[0].startswith(".copy.db.")  # its temporary file
    result = invoke(config, "backup", str(target))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"backed up {tmp_path / 'state' / 'deltasync.db'} to {target}")
    assert [p.name for p in backups.iterdir()] == ["copy.db"]  # the dead one's file is gone
    with contextlib.closing(sqlite3.connect(target)) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("SELECT count(*) FROM patron").fetchone() == (40,)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_backup_leaves_the_temporary_file_of_one_still_at_work(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(sqlite_url)
    assert invoke(config, "status").exit_code == 0
    backups = tmp_path / "backups"
    backups.mkdir()
    working = backups / ".copy.db.0123456789abcdef.tmp"
    fd = os.open(working, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a backup holds it while it writes
        assert invoke(config, "backup", str(backups / "copy.db")).exit_code == 0
        assert working.exists()
    finally:
        os.close(fd)
