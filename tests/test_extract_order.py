"""An extract older than the last one, or with the content of an earlier one, is refused: it
would roll patrons back to old values (and take back the batch that carried the new ones)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from helpers import dump_store, invoke, listing, record, run_json, users, write
from sqlalchemy import create_engine, text

DAY = 86_400
T0 = 1_750_000_000  # 2025-06-15T15:06:40Z: the SIS wrote day 0's file then


def extract(folder: Path, name: str, *records: str, day: int) -> Path:
    """An extract whose modification time is day ``day`` after T0."""
    path = write(folder, name, users(*records))
    os.utime(path, (T0 + day * DAY, T0 + day * DAY))
    return path


def stamp(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def ingested(url: str, name: Path) -> str:
    """When the store says it ingested the extract ``name``, as messages write it."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            at = conn.execute(
                text("SELECT ingested_at FROM extract WHERE name = :n"), {"n": str(name)}
            ).scalar_one()
    finally:
        engine.dispose()
    if isinstance(at, str):  # SQLite hands back text
        at = dt.datetime.fromisoformat(at)
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return str(at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"))


def state(url: str, config: Path) -> object:
    return dump_store(url), listing(config.parent / "outbox")


def test_an_extract_older_than_the_last_one_is_refused(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url)
    day0 = extract(tmp_path, "day0.xml", record("A"), record("B"), day=0)
    day1 = extract(tmp_path, "day1.xml", record("A", name="Roe"), record("B"), day=1)
    day2 = extract(tmp_path, "day2.xml", record("A", name="Poe"), record("B"), day=2)
    run_json(config, str(day0))
    run_json(config, str(day2))  # day 1 was skipped (the server was down that night)
    before = state(db_url, config)

    late = invoke(config, "run", str(day1))
    assert late.exit_code == 3, late.output
    assert late.output == (
        f"Error: refused: {day1}: modified {stamp(T0 + DAY)}, before the extract ingested last "
        f"({day2}, modified {stamp(T0 + 2 * DAY)}, ingested {ingested(db_url, day2)}): "
        "running it would roll patrons back to older values. If it is the file you meant, "
        "run again with --force\n"
    )
    assert state(db_url, config) == before
    dry = invoke(config, "diff", str(day1))  # a dry run says the run would refuse
    assert dry.exit_code == 3 and dry.output == late.output
    assert invoke(config, "diff", "--force", str(day1)).exit_code == 0
    assert state(db_url, config) == before

    forced = run_json(config, str(day1), "--force")
    assert forced["counts"]["changed"] == 1
    # Day 1 is now the extract ingested last; the next night's extract is newer again.
    day3 = extract(tmp_path, "day3.xml", record("A", name="Poe"), record("B"), record("C"), day=3)
    later = run_json(config, str(day3))
    assert later["counts"]["changed"] == 1 and later["counts"]["new"] == 1


def test_the_content_of_an_earlier_extract_is_refused(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url)
    day0 = extract(tmp_path, "day0.xml", record("A"), record("B"), day=0)
    day1 = extract(tmp_path, "day1.xml", record("A", name="Roe"), record("B"), day=1)
    run_json(config, str(day0))
    run_json(config, str(day1))
    before = state(db_url, config)
    # Day 0 again, copied with Windows line ends and in another order: new bytes, new time.
    copy = tmp_path / "day0-copy.xml"
    copy.write_bytes(users(record("B"), record("A")).replace("\n", "\r\n").encode())
    os.utime(copy, (T0 + 2 * DAY, T0 + 2 * DAY))

    result = invoke(config, "run", str(copy))
    assert result.exit_code == 3, result.output
    assert result.output == (
        f"Error: refused: {copy}: holds the same records as {day0} (ingested "
        f"{ingested(db_url, day0)}), an extract older than the one ingested last ({day1}, "
        f"ingested {ingested(db_url, day1)}): running it would roll patrons back to older "
        "values. If the SIS really is back at that state, run again with --force\n"
    )
    assert state(db_url, config) == before
    dry = invoke(config, "diff", "--json", str(copy))
    assert dry.exit_code == 3 and dry.output == result.output
    assert state(db_url, config) == before

    forced = run_json(config, str(copy), "--force")
    assert forced["counts"]["changed"] == 1 and forced["already_ingested"] is False


def test_the_same_file_as_an_earlier_extract_is_refused(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """A copy of an old file keeps its bytes (same SHA-256) but gets a new time."""
    config = write_config(db_url)
    day0 = extract(tmp_path, "day0.xml", record("A"), record("B"), day=0)
    day1 = extract(tmp_path, "day1.xml", record("A", name="Roe"), record("B"), day=1)
    run_json(config, str(day0))
    run_json(config, str(day1))
    before = state(db_url, config)
    copy = tmp_path / "again.xml"
    shutil.copyfile(day0, copy)

    result = invoke(config, "run", str(copy))
    assert result.exit_code == 3, result.output
    assert result.output == (
        f"Error: refused: {copy}: the same file as {day0} (ingested {ingested(db_url, day0)}), an "
        f"extract older than the one ingested last ({day1}, ingested "
        f"{ingested(db_url, day1)}): running it would roll patrons back to older values. "
        "deltasync ingests a file once; to go back to that state, export it from the SIS "
        "again and run that with --force\n"
    )
    assert state(db_url, config) == before
    # With --force it is skipped as it always was: the store knows each file once.
    skipped = run_json(config, str(copy), "--force")
    assert skipped["already_ingested"] is True and skipped["batch"] is None


def test_the_content_of_the_last_extract_is_no_change(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url)
    day0 = extract(tmp_path, "day0.xml", record("A"), record("B"), day=0)
    day1 = extract(tmp_path, "day1.xml", record("A", name="Roe"), record("B"), day=1)
    run_json(config, str(day0))
    run_json(config, str(day1))
    same = extract(tmp_path, "day1-again.xml", record("A", name="Roe"), record("B"), day=2)
    same.write_bytes(same.read_bytes().replace(b"\n", b"\r\n"))
    result = run_json(config, str(same))
    assert result["counts"]["unchanged"] == 2 and result["batch"] is None
    again = run_json(config, str(day1))  # the very file: already ingested, as before
    assert again["already_ingested"] is True
    status = json.loads(invoke(config, "status", "--json").stdout)
    assert status["last_extract"]["name"] == str(same)
