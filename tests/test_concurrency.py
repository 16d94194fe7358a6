"""Commands side by side on one store, as real processes: feeds of a campus or consortium run
at once, and `diff` beside the nightly `run`. One process is held at a known point inside its
transaction (paused.py) while the other runs; both must succeed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from alembic import command
from helpers import read_delta, run_json
from procs import Command, Paused, wait_until

from deltasync import config as config_module
from deltasync.store import create_store_engine
from deltasync.store.engine import alembic_config


def _two_feeds(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[state]\nurl = "{url}"\n\n'
        '[feeds.alpha]\ntimezone = "America/Chicago"\n\n'
        '[feeds.beta]\ntimezone = "America/Chicago"\n',
        encoding="utf-8",
    )
    return config


def test_two_feeds_of_one_store_run_at_the_same_time(
    db_url: str, make_extract: Callable[..., Path], tmp_path: Path
) -> None:
    config = _two_feeds(tmp_path, db_url)
    extract = make_extract(0, 120)
    alpha = Paused(tmp_path / "alpha", "published", config, "--feed", "alpha", "run", str(extract))
    beta: Command | None = None
    try:
        alpha.wait_ready()  # inside its transaction: on SQLite it holds the write lock
        beta = Command(config, "--feed", "beta", "run", "--json", str(extract))
        # Before BEGIN IMMEDIATE, beta failed here within a second: "database is locked".
        try:
            wait_until(lambda: not beta.running(), timeout=3)
        except AssertionError:
            pass  # still waiting for alpha's transaction, as it should
        alpha.go()
        first, second = alpha.finish(), beta.finish()
    finally:
        alpha.kill()
        if beta is not None:
            beta.kill()
    assert (first.code, first.err) == (0, "")
    assert (second.code, second.err) == (0, ""), second.err
    assert json.loads(second.out)["counts"]["new"] == 120
    loaded = config_module.load(config)
    for name in ("alpha", "beta"):
        [delta] = sorted(loaded.feed(name).outbox.glob("*.zip"))
        assert len(read_delta(delta)) == 120


def test_diff_beside_a_run_neither_waits_nor_fails(
    db_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    tmp_path: Path,
) -> None:
    config = write_config(db_url)
    run_json(config, str(make_extract(0, 120)))
    day1 = make_extract(1, 120)
    run = Paused(tmp_path / "run", "published", config, "run", "--json", str(day1))
    try:
        run.wait_ready()  # the nightly run, inside its transaction
        # The diff reads the store as it was before the run, without waiting for it.
        diff = Command(config, "diff", "--json", str(day1)).finish(timeout=60)
        assert run.running()
        run.go()
        done = run.finish()
    finally:
        run.kill()
    assert (diff.code, diff.err) == (0, "")
    assert (done.code, done.err) == (0, "")
    shown, ran = json.loads(diff.out), json.loads(done.out)
    assert shown["dry_run"] is True and shown["batch"] is None
    assert shown["counts"] == ran["counts"] and ran["counts"]["changed"] > 0
    assert ran["batch"]["seq"] == 2


def test_a_run_beside_a_diff_neither_waits_nor_fails(
    db_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    tmp_path: Path,
) -> None:
    config = write_config(db_url)
    run_json(config, str(make_extract(0, 120)))
    day1 = make_extract(1, 120)
    diff = Paused(tmp_path / "diff", "staged", config, "diff", "--json", str(day1))
    try:
        diff.wait_ready()  # the diff has staged its records, inside its transaction
        done = Command(config, "run", "--json", str(day1)).finish(timeout=60)
        assert diff.running()
        diff.go()
        shown = diff.finish()
    finally:
        diff.kill()
    assert (done.code, done.err) == (0, "")
    assert (shown.code, shown.err) == (0, "")
    ran = json.loads(done.out)
    assert ran["batch"]["seq"] == 2
    assert json.loads(shown.out)["counts"] == ran["counts"]


def test_two_commands_upgrading_an_old_postgresql_store_at_once(
    pg_url: str,
    write_config: Callable[..., Path],
    make_extract: Callable[..., Path],
    tmp_path: Path,
) -> None:
    """After an upgrade of deltasync, two feeds' cron jobs open the old store together: the
    second waits for the first's migration instead of failing on the tables it creates."""
    config = write_config(pg_url)
    run_json(config, str(make_extract(0, 20)))
    engine = create_store_engine(pg_url)
    alembic = alembic_config()
    try:
        with engine.begin() as conn:
            alembic.attributes["connection"] = conn
            command.downgrade(alembic, "0002")
    finally:
        engine.dispose()
    first = Paused(tmp_path / "first", "upgrade", config, "status")
    try:
        first.wait_ready()  # migrated, not yet committed
        second = Command(config, "status")
        try:
            wait_until(lambda: not second.running(), timeout=3)
        except AssertionError:
            pass  # waiting for the first, as it should
        first.go()
        opened, waited = first.finish(), second.finish()
    finally:
        first.kill()
    assert (opened.code, opened.err) == (0, "")
    assert (waited.code, waited.err) == (0, "")
    assert "  patrons: 20 present, 0 departed;" in waited.out
