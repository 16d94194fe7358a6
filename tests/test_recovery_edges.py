"""Edge cases of audit and recovery found by an independent review, each once a real bug."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from helpers import invoke, read_delta, record, run_json, users, write
from lxml import etree

from deltasync import config as config_module
from deltasync.audit.fields import changes
from deltasync.store import open_store
from deltasync.store.engine import alembic_config, create_store_engine


@pytest.fixture
def pruned(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> Path:
    """The config of a feed after two runs, with every superseded record pruned."""
    config = write_config(db_url, feed={"retention_days": 0})
    run_json(config, str(make_extract(0, 60)))
    run_json(config, str(make_extract(1, 60)))
    assert invoke(config, "prune", "--older-than", "0").exit_code == 0
    return config


def test_ignore_change_after_prune_does_not_crash(
    pruned: Path, db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    """A changed `ignore` re-hashes the snapshot; pruned versions have no payload to hash."""
    config = pruned
    write_config(db_url, feed={"retention_days": 0, "ignore": ["status_date", "birth_date"]})
    result = invoke(config, "run", "--json", str(make_extract(2, 60)))
    assert result.exit_code == 0, repr(result.exception)


def test_prune_without_window_keeps_everything_when_retention_days_is_0(
    sqlite_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    """retention_days = 0 keeps everything: `prune` without --older-than must not use 0 days."""
    config = write_config(sqlite_url, feed={"retention_days": 0})
    run_json(config, str(make_extract(0, 60)))
    run_json(config, str(make_extract(1, 60)))
    result = invoke(config, "prune", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cutoff"] is None
    history = json.loads(invoke(config, "history", "S0000001", "--json").stdout)
    assert all(v["record"] is not None for v in history)


def test_baseline_fixed_record_reaches_alma(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Alma holds the SIS's unfixed record from its full loads: a repaired one goes out once."""
    config = write_config(sqlite_url)
    a = record("A").replace('preferred="true"', 'preferred="false"')
    assert 'preferred="false"' in a
    extract = write(tmp_path, "d0.xml", users(a, record("B")))
    assert invoke(config, "baseline", str(extract)).exit_code == 0
    out = run_json(config, str(write(tmp_path, "d1.xml", users(a, record("B"), record("C")))))
    assert out["batch"] is not None
    sent = read_delta(Path(out["batch"]["file"]))
    assert set(sent) == {"A", "C"}  # A for its repair, C as new; B stays untouched
    assert sent["A"].find("contact_info/emails/email").get("preferred") == "true"


def test_field_diff_sees_changes_in_repeated_children() -> None:
    """Repeated children of a field, and repeated parts of a list entry, keep every value."""
    old = etree.fromstring(
        "<user><rs_libraries><rs_library><code>MAIN</code></rs_library>"
        "<rs_library><code>LAW</code></rs_library></rs_libraries>"
        "<contact_info><addresses><address><line1>1 A St</line1><address_types>"
        "<address_type>home</address_type><address_type>work</address_type>"
        "</address_types></address></addresses></contact_info></user>"
    )
    new = etree.fromstring(
        etree.tostring(old).decode().replace("MAIN", "MED").replace(">home<", ">school<")
    )
    found = [str(c) for c in changes(old, new)]
    assert found == [
        "rs_libraries/rs_library/code: MAIN; LAW → MED; LAW",
        "address.address_type: home; work → school; work",
    ]


def test_changes_field_whole_list_includes_changed_entries(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """--field takes a whole list (address) as well as one part (line1)."""
    config = write_config(sqlite_url)
    a0 = record("A")
    a1 = a0.replace("<line1>", "<line1>9 ", 1)
    assert a1 != a0
    run_json(config, str(write(tmp_path, "d0.xml", users(a0))))
    run_json(config, str(write(tmp_path, "d1.xml", users(a1))), "--force")
    everything = invoke(config, "changes", "--since", "2000-01-01", "--json")
    assert any(r["field"] == "address.line1" for r in json.loads(everything.stdout))
    for wanted in ("address", "line1", "address.line1"):
        only = invoke(config, "changes", "--since", "2000-01-01", "--field", wanted, "--json")
        assert [r["field"] for r in json.loads(only.stdout)] == ["address.line1"], wanted
    empty = invoke(
        config, "changes", "--since", "2001-01-01", "--until", "2001-01-02", "--format", "csv"
    )
    assert empty.stdout == "at,match_id,kind,field,old,new\n"


def test_downgrade_0003_after_prune(pruned: Path, db_url: str) -> None:
    """A downgrade below 0003 would need every payload: refused clearly once pruned."""
    engine = create_store_engine(db_url)
    alembic = alembic_config()
    try:
        with pytest.raises(RuntimeError, match="cannot downgrade below 0003: retention pruned"):
            with engine.begin() as conn:
                alembic.attributes["connection"] = conn
                command.downgrade(alembic, "0002")
    finally:
        engine.dispose()


def test_baseline_of_an_already_ingested_extract(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """A feed whose only run held everything back has no patrons, but has that extract."""
    config = write_config(sqlite_url)
    dup = write(tmp_path, "dup.xml", users(record("A"), record("A")))
    run_json(config, str(dup), exit_code=4)
    result = invoke(config, "baseline", str(dup))
    assert result.exit_code == 3 and "already ingested" in result.output


def test_rebuild_of_pre_0003_single_part_batch(
    sqlite_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    """Batches from before 0003 have no stored split; one part means any split >= records."""
    config = write_config(sqlite_url, feed={"records_per_part": 1000})
    out = run_json(config, str(make_extract(0, 60)))
    Path(out["batch"]["file"]).unlink()
    cfg = config_module.load(config)
    with open_store(cfg.state_url) as store, store.begin() as conn:
        conn.exec_driver_sql("UPDATE batch SET records_per_part = NULL")  # as 0003 leaves them
    write_config(sqlite_url, feed={"records_per_part": 50})
    result = invoke(config, "batch", "rebuild", "1")
    assert result.exit_code == 0, result.output
    assert "the same as when it was built" in result.stdout


def test_resend_survives_confirmation_of_an_older_batch(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """The batch that carried A is confirmed after staff ask to resend A: A still goes out."""
    remote = tmp_path / "remote"
    remote.mkdir()
    config = write_config(
        sqlite_url, feed={"transport": "dir", "remote_dir": str(remote), "confirm": "pickup"}
    )
    extract = write(tmp_path, "d.xml", users(record("A"), record("B")))
    run_json(config, str(extract))
    for f in remote.glob("*.zip"):
        f.rename(f.with_name(f.name + ".handled"))  # Alma loaded it overnight
    assert invoke(config, "resend", "A").exit_code == 0  # staff edited A in Alma, then resend
    out = run_json(config, str(extract))
    assert out["batch"] is not None and set(read_delta(Path(out["batch"]["file"]))) == {"A"}
