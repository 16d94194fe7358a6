"""The state store: migrations match the models, DDL is transactional, the file is private."""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from helpers import invoke, record, run_json, users, write
from sqlalchemy import Connection, inspect, text

from deltasync.store import create_store_engine, open_store
from deltasync.store.batches import Pending, PendingRows
from deltasync.store.engine import HEAD_REVISION, alembic_config
from deltasync.store.tables import ANALYZE_AFTER, chunks


def test_migrations_match_the_models(db_url: str) -> None:
    with open_store(db_url) as store:
        config = alembic_config()
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.check(config)  # raises if autogenerate would write a new migration
        tables = set(inspect(store.engine).get_table_names())
    assert {"feed", "extract", "batch", "patron", "patron_version", "staged_record"} <= tables


def test_the_head_revision_constant_is_alembics_head() -> None:
    # Opening a store compares against HEAD_REVISION so that start-up never imports alembic;
    # a new migration must move it.
    from alembic.script import ScriptDirectory

    assert HEAD_REVISION == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_a_command_on_an_up_to_date_store_never_imports_alembic(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'state.db'}"
    open_store(url).close()
    probe = (
        "import sys; from deltasync.store import open_store; "
        f"open_store({url!r}).close(); print('alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_module_imports_the_orm() -> None:
    # The tables are Core tables: sqlalchemy.orm, imported only to declare them, cost every
    # start of the command about 85 ms.
    import subprocess
    import sys

    probe = (
        "import importlib, pkgutil, sys, deltasync\n"
        "for m in pkgutil.walk_packages(deltasync.__path__, 'deltasync.'):\n"
        "    if m.name != 'deltasync.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('sqlalchemy.orm')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_open_is_idempotent(db_url: str) -> None:
    open_store(db_url).close()
    with open_store(db_url) as store, store.begin() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()


def test_sqlite_ddl_rolls_back(sqlite_url: str) -> None:
    engine = create_store_engine(sqlite_url)
    try:
        with pytest.raises(RuntimeError), engine.begin() as conn:
            conn.execute(text("CREATE TABLE half_built (x INTEGER)"))
            raise RuntimeError("migration failed midway")
        assert "half_built" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_sqlite_file_is_created_private_even_with_a_loose_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        path = tmp_path / "deep" / "state.db"
        open_store(f"sqlite:///{path}").close()
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600


def test_unreachable_postgres_is_a_clear_error() -> None:
    from deltasync.errors import StoreError

    with pytest.raises(StoreError, match=r"cannot open state store postgresql\+psycopg://x@"):
        open_store("postgresql+psycopg://x@127.0.0.1:1/nothing?connect_timeout=2")


def test_upgrade_to_the_ledger_keeps_earlier_batches_confirmed(db_url: str) -> None:
    """A store from before the delivery ledger must not re-send every patron."""
    from deltasync.store.engine import create_store_engine

    engine = create_store_engine(db_url)
    config = alembic_config()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
            conn.execute(
                text(
                    "INSERT INTO feed (id, name, match_id, hash_recipe, created_at) "
                    "VALUES (1, 'p', 'primary_id', 'v1', CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO batch (id, feed_id, seq, file_name, sha256, size, status, "
                    "created_at, records, parts, new, changed, returned, departed) "
                    "VALUES (1, 1, 1, 'p.zip', "
                    "'x', 1, 'built', CURRENT_TIMESTAMP, 1, 1, 1, 0, 0, 0)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO patron (id, feed_id, match_key, match_id, digest, state, "
                    "current_version_id) VALUES (1, 1, 'a', 'A', :d, 'present', 1)"
                ),
                {"d": b"d" * 16},
            )
            conn.execute(
                text(
                    "INSERT INTO patron_version (id, patron_id, kind, digest, payload, first_seen, "
                    "last_seen, batch_id) VALUES (1, 1, 'new', :d, :p, CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP, 1)"
                ),
                {"d": b"d" * 16, "p": b"<user/>"},
            )
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            assert conn.execute(text("SELECT status FROM batch")).scalar_one() == "confirmed"
            row = conn.execute(text("SELECT confirmed_digest, confirmed_seq FROM patron")).one()
            assert (bytes(row[0]), row[1]) == (b"d" * 16, 1)
            member = conn.execute(text("SELECT batch_id, patron_id, outcome FROM batch_patron"))
            assert member.all() == [(1, 1, "sent")]
    finally:
        engine.dispose()


def test_upgrade_to_audit_columns_with_real_data(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    """0002 → 0003 on a store that holds runs: extracts referenced by versions, batches by
    events. (Batch mode would copy and drop referenced tables, which foreign keys forbid.)"""
    config = write_config(db_url)
    run_json(config, str(make_extract(0, 60)))
    run_json(config, str(make_extract(1, 60)))
    engine = create_store_engine(db_url)
    alembic = alembic_config()
    try:
        with engine.begin() as conn:
            alembic.attributes["connection"] = conn
            command.downgrade(alembic, "0002")
            assert "baseline" not in {c["name"] for c in inspect(conn).get_columns("extract")}
    finally:
        engine.dispose()
    out = run_json(config, str(make_extract(2, 60)))  # opening the store upgrades it again
    assert out["batch"]["seq"] == 3
    history = json.loads(invoke(config, "history", "S0000001", "--json").stdout)
    assert history[0]["kind"] == "new" and history[0]["baseline"] is False


def test_records_are_stored_compressed_and_a_downgrade_gives_them_back_plain(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    """0010: records are written zlib-compressed; records stored before (plain XML) still
    read; downgrading below 0010 leaves plain XML for older code."""
    config = write_config(db_url)
    run_json(config, str(make_extract(0, 20)))
    shown = json.loads(invoke(config, "history", "S0000001", "--json").stdout)[0]["record"]
    engine = create_store_engine(db_url)
    try:
        with engine.begin() as conn:
            stored = _payload_of(conn, "s0000001")
            assert not stored.startswith(b"<")
            assert zlib.decompress(stored).decode("utf-8") == shown
            assert len(stored) < len(shown.encode("utf-8")) / 2
            # A record written before 0010 is plain XML: it reads back as it is.
            conn.execute(
                text(
                    "UPDATE patron_version SET payload = :plain WHERE patron_id = "
                    "(SELECT id FROM patron WHERE match_key = 's0000002')"
                ),
                {"plain": zlib.decompress(_payload_of(conn, "s0000002"))},
            )
    finally:
        engine.dispose()
    second = json.loads(invoke(config, "history", "S0000002", "--json").stdout)[0]["record"]
    assert second.startswith("<user>") and "S0000002" in second
    engine = create_store_engine(db_url)
    alembic = alembic_config()
    try:
        with engine.begin() as conn:
            alembic.attributes["connection"] = conn
            command.downgrade(alembic, "0009")
            assert _payload_of(conn, "s0000001").decode("utf-8") == shown
            assert _payload_of(conn, "s0000002").decode("utf-8") == second
    finally:
        engine.dispose()


def _payload_of(conn: Connection, match_key: str) -> bytes:
    return bytes(
        conn.execute(
            text(
                "SELECT v.payload FROM patron_version v JOIN patron p ON p.id = v.patron_id "
                "WHERE p.match_key = :key"
            ),
            {"key": match_key},
        ).scalar_one()
    )


def test_upgrade_to_0009_copies_each_current_kind(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    """0009 fills ``patron.current_kind`` from the current version, departures included."""
    config = write_config(db_url, departure={"max_departures": "100%"})
    run_json(config, str(make_extract(0, 30)))
    run_json(config, str(make_extract(1, 24)))
    same = text(
        "SELECT count(*) FROM patron p JOIN patron_version v ON v.id = p.current_version_id "
        "WHERE p.current_kind = v.kind"
    )
    engine = create_store_engine(db_url)
    alembic = alembic_config()
    try:
        with engine.begin() as conn:
            kinds = {k for (k,) in conn.execute(text("SELECT DISTINCT current_kind FROM patron"))}
            assert "departed" in kinds and "new" in kinds
            alembic.attributes["connection"] = conn
            command.downgrade(alembic, "0008")
            command.upgrade(alembic, "0009")
            assert conn.execute(same).scalar_one() == 30
    finally:
        engine.dispose()


def test_pending_rows_read_as_the_list_they_replace() -> None:
    # Patrons to send are kept in arrays, not an object each; the build reads them as a list.
    rows = PendingRows()
    wanted = [Pending(100 + n, 500 + n, bytes([n]) * 16) for n in range(7)]
    for row in wanted:
        rows.append(row.patron_id, row.version_id, row.digest)
    assert len(rows) == 7
    assert list(rows) == wanted
    assert rows[0] == wanted[0] and rows[-1] == wanted[-1]
    assert rows[2:5] == wanted[2:5] and rows[5:100] == wanted[5:]
    assert [list(part) for part in chunks(rows, 3)] == [wanted[0:3], wanted[3:6], wanted[6:]]
    with pytest.raises(IndexError):
        rows[7]
    with pytest.raises(ValueError, match="digest of 8 bytes"):
        rows.append(1, 2, b"12345678")


def _large_first_extract(tmp_path: Path) -> Path:
    """A first extract large enough that PostgreSQL's statistics are refreshed after it."""
    extract = users(*(record(f"P{n:05}", barcode=f"b{n}") for n in range(ANALYZE_AFTER)))
    return write(tmp_path, "d0.xml", extract)


def test_postgres_plans_with_the_statistics_of_a_large_batch_confirmed(
    pg_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Confirming a first batch rewrites every patron: the planner's statistics are refreshed
    at once (at the run's apply they said that no patron was confirmed), so the next run does
    not plan its search for what to send for a store where everyone is unconfirmed."""
    config = write_config(pg_url)
    result = run_json(config, str(_large_first_extract(tmp_path)))
    assert result["counts"]["new"] == ANALYZE_AFTER
    engine = create_store_engine(pg_url)
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM batch")).scalar_one()
        unconfirmed = conn.execute(
            text(
                "SELECT null_frac FROM pg_stats"
                " WHERE tablename = 'patron' AND attname = 'confirmed_digest'"
            )
        ).scalar_one()
    engine.dispose()
    assert (status, unconfirmed) == ("confirmed", 0)


def test_a_refresh_of_statistics_gives_up_the_lock_another_transaction_holds(
    pg_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Another feed's run of a shared store holds ANALYZE's lock on the patron table for as
    long as its transaction lasts: a first run of 5,000 patrons waits a moment for it at
    each of its refreshes, then goes on without them (before: until the other committed)."""
    import subprocess

    config = write_config(pg_url)
    path = _large_first_extract(tmp_path)
    open_store(pg_url).close()
    engine = create_store_engine(pg_url)
    try:
        with engine.connect() as other:
            other.exec_driver_sql("ANALYZE patron")  # its lock lasts until this transaction ends
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "deltasync",
                    "--config",
                    str(config),
                    "run",
                    "--json",
                    str(path),
                ],
                capture_output=True,
                text=True,
                timeout=120,  # without the give-up the run waits for this block to end: never
            )
            other.rollback()
    finally:
        engine.dispose()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["new"] == ANALYZE_AFTER
