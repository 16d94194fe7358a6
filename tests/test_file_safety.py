"""Delta files hold personal data and are what Alma loads: private modes, no symlink tricks,
no overwriting, no unmounted share taken for the delivery folder, every upload checked against
the ledger, unknown files of ours taken back, old files deleted by retention, and a read-only
outbox reported clearly. Everything through the CLI, on real files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import dump_store, invoke, read_delta, record, run_json, users, write

ConfigWriter = Callable[..., Path]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def batches(config: Path) -> list[dict[str, object]]:
    result = invoke(config, "batches", "--json")
    assert result.exit_code == 0, result.output
    data: list[dict[str, object]] = json.loads(result.stdout)
    return data


def dir_feed(remote: Path, **extra: object) -> dict[str, object]:
    return {"transport": "dir", "remote_dir": str(remote), "confirm": "pickup", **extra}


def extract(tmp_path: Path, name: str, *ids: str) -> Path:
    return write(tmp_path, name, users(*(record(i) for i in ids)))


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """Make ``folder`` read-only for this process; yields the error text writes then get."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield os.strerror(13)  # Permission denied
        finally:
            folder.chmod(0o700)
        return
    # Root ignores modes: a read-only bind mount is what a read-only share looks like.
    bound = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount as root here: {bound.stderr!r}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True
        )
        yield os.strerror(30)  # Read-only file system
    finally:
        subprocess.run(["umount", str(folder)], check=True, capture_output=True)


# -- 1. the dir transport never creates remote_dir -------------------------------------------


def test_a_missing_delivery_folder_is_a_delivery_failure_and_is_never_created(
    db_url: str, write_config: ConfigWriter, tmp_path: Path
) -> None:
    share = tmp_path / "mnt" / "alma"  # the share is not mounted: its folder is not there
    config = write_config(db_url, feed=dir_feed(share))
    day0 = extract(tmp_path, "d0.xml", "A", "B")
    first = invoke(config, "run", str(day0))
    assert first.exit_code == 4, first.output
    assert (
        f"  ATTENTION: batch 1 not delivered: {share}: the delivery folder does not exist "
        "(is the share mounted?); deltasync does not create it\n"
    ) in first.stdout
    assert "Traceback" not in first.output
    assert not share.exists() and not share.parent.exists()
    assert [(b["seq"], b["status"]) for b in batches(config)] == [(1, "built")]

    share.mkdir(parents=True)  # mounted again: the next run delivers the kept batch
    again = invoke(config, "run", str(day0))
    assert again.exit_code == 0, again.output
    assert "  ledger: batch 1 uploaded\n" in again.stdout
    [delivered] = share.iterdir()
    assert set(read_delta(delivered)) == {"A", "B"}


# -- 2. private modes, whatever the umask --------------------------------------------------


def test_delta_files_and_folders_are_private_even_with_umask_000(
    sqlite_url: str, write_config: ConfigWriter, tmp_path: Path, umask_000: None
) -> None:
    remote = tmp_path / "alma-inbox"
    remote.mkdir()
    config = write_config(sqlite_url, feed=dir_feed(remote))
    out = run_json(config, str(extract(tmp_path, "d0.xml", "A")))
    delta = Path(out["batch"]["file"])
    outbox = tmp_path / "outbox" / "patrons"
    assert delta.parent == outbox
    assert (mode(tmp_path / "outbox"), mode(outbox), mode(delta)) == (0o700, 0o700, 0o600)
    assert mode(remote / delta.name) == 0o600

    rebuilt = invoke(config, "batch", "rebuild", "1", "--out", str(tmp_path / "recovered" / "x"))
    assert rebuilt.exit_code == 0, rebuilt.output
    copy = tmp_path / "recovered" / "x" / delta.name
    assert (mode(tmp_path / "recovered"), mode(copy.parent), mode(copy)) == (0o700, 0o700, 0o600)

    # A file a crashed older version left world-writable is set aside privately.
    orphan = outbox / "patrons_000002_20270105T060000Z.zip"
    orphan.write_bytes(b"left by a crash")
    orphan.chmod(0o666)
    second = invoke(config, "run", str(extract(tmp_path, "d1.xml", "A", "B")))
    assert second.exit_code == 0, second.output
    aside = outbox / ".orphaned" / orphan.name
    assert f"  set aside {aside}: a crashed run left it" in second.stdout
    assert (mode(aside.parent), mode(aside)) == (0o700, 0o600)
    assert {mode(p) for p in outbox.glob("*.zip")} == {0o600}
    assert {mode(p) for p in remote.glob("*.zip")} == {0o600}


# -- 3. symlinks at the temporary names ---------------------------------------------------


def test_a_symlink_at_the_upload_temporary_name_is_never_written_through(
    db_url: str, write_config: ConfigWriter, tmp_path: Path
) -> None:
    remote = tmp_path / "alma-inbox"
    remote.write_text("not mounted yet")  # the first delivery fails, the batch stays built
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    config = write_config(db_url, feed=dir_feed(remote))
    day0 = extract(tmp_path, "d0.xml", "A")
    out = run_json(config, str(day0), exit_code=4)
    name = Path(out["batch"]["file"]).name
    remote.unlink()
    remote.mkdir()
    planted = remote / f".{name}.part"  # the name every earlier version uploaded under
    planted.symlink_to(victim)

    again = invoke(config, "run", str(day0))
    assert again.exit_code == 0, again.output
    assert victim.read_text() == "precious"
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert sha(remote / name) == batches(config)[0]["sha256"]


@pytest.mark.parametrize("where", ["outbox", "--out"])
def test_a_symlink_at_the_rebuild_temporary_name_is_never_written_through(
    where: str, db_url: str, write_config: ConfigWriter, tmp_path: Path
) -> None:
    config = write_config(db_url)
    out = run_json(config, str(extract(tmp_path, "d0.xml", "A", "B")))
    delta = Path(out["batch"]["file"])
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    if where == "outbox":
        folder, args = delta.parent, []
        delta.unlink()  # the outbox copy was lost
    else:
        folder = tmp_path / "recovered"
        folder.mkdir()
        args = ["--out", str(folder)]
    planted = folder / f".{delta.name}.tmp"  # the name every earlier version wrote under
    planted.symlink_to(victim)

    rebuilt = invoke(config, "batch", "rebuild", "1", *args)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert victim.read_text() == "precious"
    assert planted.is_symlink()
    result = folder / delta.name
    assert not result.is_symlink() and sha(result) == batches(config)[0]["sha256"]


# -- 4. every upload is checked against the ledger's SHA-256 -------------------------------


def test_a_damaged_outbox_file_is_rebuilt_before_it_is_uploaded(
    db_url: str, write_config: ConfigWriter, tmp_path: Path
) -> None:
    remote = tmp_path / "alma-inbox"
    remote.write_text("not mounted yet")
    config = write_config(db_url, feed=dir_feed(remote))
    day0 = write(tmp_path, "d0.xml", users(*(record(f"P{n:04d}") for n in range(300))))
    out = run_json(config, str(day0), exit_code=4)
    delta = Path(out["batch"]["file"])
    built = batches(config)[0]["sha256"]
    assert isinstance(built, str)
    good = delta.read_bytes()
    delta.write_bytes(good[: len(good) // 2])  # truncated in the outbox
    remote.unlink()
    remote.mkdir()

    again = invoke(config, "run", str(day0))
    assert again.exit_code == 0, again.output
    truncated = hashlib.sha256(good[: len(good) // 2]).hexdigest()
    assert (
        f"  ledger: batch 1: the delta file differs from the one built (SHA-256 "
        f"{truncated[:12]}… instead of {built[:12]}…): rebuilt it from the store before the "
        "upload\n"
    ) in again.stdout
    assert sha(remote / delta.name) == built
    assert len(read_delta(remote / delta.name)) == 300


def test_an_outbox_file_that_cannot_be_rebuilt_fails_its_batch_and_is_never_sent(
    sqlite_url: str, write_config: ConfigWriter, tmp_path: Path
) -> None:
    remote = tmp_path / "alma-inbox"
    remote.write_text("not mounted yet")
    config = write_config(sqlite_url, feed=dir_feed(remote))
    day0 = extract(tmp_path, "d0.xml", "A", "B")
    out = run_json(config, str(day0), exit_code=4)
    delta = Path(out["batch"]["file"])
    delta.write_bytes(b"PK\x03\x04 damaged")
    # The store can no longer produce the bytes the ledger recorded.
    database = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE batch SET sha256 = ?", ("0" * 64,))
    conn.close()
    remote.unlink()
    remote.mkdir()

    failed = invoke(config, "run", str(day0))
    assert failed.exit_code == 4, failed.output
    assert f"  ATTENTION: batch 1 failed: {delta}: the delta file differs from the one built" in (
        failed.stdout
    )
    assert "and it cannot be rebuilt: batch 1: the re-created file differs" in failed.stdout
    assert list(remote.iterdir()) == []
    assert [(b["seq"], b["status"]) for b in batches(config)] == [(1, "failed")]
    # Its patrons are pending again: the next run sends them in a new batch.
    retry = run_json(config, str(day0))
    assert retry["ledger"] == ["batch 2 uploaded"]
    [sent] = remote.glob("*.zip")
    assert set(read_delta(sent)) == {"A", "B"}


# -- 5. files of ours the ledger does not know, and names that never collide -----------------


def test_a_file_the_restored_store_does_not_know_is_taken_back_before_an_upload(
    sqlite_url: str, write_config: ConfigWriter, tmp_path: Path
) -> None:
    remote = tmp_path / "alma-inbox"
    remote.mkdir()
    config = write_config(sqlite_url, feed=dir_feed(remote))
    run_json(config, str(extract(tmp_path, "d0.xml", "A")))
    for sent in remote.glob("*.zip"):
        sent.rename(sent.with_name(sent.name + ".handled"))  # Alma loaded batch 1
    backup = tmp_path / "backup.db"
    assert invoke(config, "backup", str(backup)).exit_code == 0
    day1 = extract(tmp_path, "d1.xml", "A", "B")
    lost = Path(run_json(config, str(day1))["batch"]["file"]).name  # batch 2, still unread
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, database)  # the store is restored: it never heard of batch 2

    again = invoke(config, "run", "--json", str(day1))
    assert again.exit_code == 4, again.output
    result = json.loads(again.stdout)
    new = Path(result["batch"]["file"]).name
    assert result["batch"]["seq"] == 2 and new != lost
    assert result["ledger"] == [
        "batch 1 picked up by Alma",
        f"took back unknown file {lost}",
        "batch 2 uploaded",
    ]
    assert result["attention"] == [
        f"took back {lost} from remote_dir as .{lost}.withdrawn: the ledger does not know it "
        "(was the store restored from a backup?), and Alma must not read it beside batch 2"
    ]
    assert sorted(p.name for p in remote.glob("*.zip")) == [new]
    assert (remote / f".{lost}.withdrawn").exists()
    assert set(read_delta(remote / new)) == {"B"}
    detail = invoke(config, "batch", "show", "2")  # the ledger history keeps the event
    assert detail.exit_code == 0, detail.output
    assert f"took back {lost} from remote_dir" in detail.stdout


def test_a_restored_store_never_reuses_a_file_name_alma_already_handled(
    sqlite_url: str, write_config: ConfigWriter, tmp_path: Path
) -> None:
    """Same sequence number, same second: the old .handled file must not confirm the new batch."""
    import datetime as dt

    from deltasync import config as config_module
    from deltasync import job
    from deltasync.store import open_store

    remote = tmp_path / "alma-inbox"
    remote.mkdir()
    config = write_config(sqlite_url, feed=dir_feed(remote))
    cfg = config_module.load(config)
    feed = cfg.feed(None)
    when = dt.datetime(2027, 1, 4, 11, tzinfo=dt.UTC)
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    with open_store(cfg.state_url) as store:
        first = job.run(store, feed, extract(tmp_path, "a.xml", "A"), now=when)
    assert first.batch is not None
    handled = remote / first.batch.file.name
    handled.rename(handled.with_name(handled.name + ".handled"))  # Alma read A
    for path in database.parent.glob(database.name + "*"):
        path.unlink()  # the store is restored to before that run
    with open_store(cfg.state_url) as store:
        second = job.run(store, feed, extract(tmp_path, "b.xml", "B"), now=when)
        later = job.run(store, feed, extract(tmp_path, "b.xml", "B"), now=when + dt.timedelta(1))
    assert later.ledger_events == []  # batch 1 of the restored store is still waiting
    assert [(b["seq"], b["status"]) for b in batches(config)] == [(1, "uploaded")]
    assert second.batch is not None and second.batch.file.name != first.batch.file.name


# -- 6. retention covers the files ----------------------------------------------------------


def test_prune_deletes_old_delta_files_and_withdrawn_files_but_not_handled_ones(
    db_url: str, write_config: ConfigWriter, tmp_path: Path
) -> None:
    remote = tmp_path / "alma-inbox"
    remote.mkdir()
    config = write_config(db_url, feed=dir_feed(remote))
    outbox = tmp_path / "outbox" / "patrons"
    names = []
    for day, ids in enumerate([("A",), ("A", "B"), ("A", "B", "C")]):
        out = run_json(config, str(extract(tmp_path, f"d{day}.xml", *ids)))
        names.append(Path(out["batch"]["file"]).name)
        # Within the 365-day window nothing goes; the keys are there.
        assert out["pruned"] == {
            "payloads": 0,
            "patrons": 0,
            "outbox_files": 0,
            "remote_files": 0,
            "runs": 0,
        }
        if day == 1:  # Alma did not run after day 0: batch 1 was taken back; now it reads 2
            (remote / names[1]).rename(remote / f"{names[1]}.handled")
    assert [b["status"] for b in batches(config)] == ["superseded", "confirmed", "uploaded"]
    assert sorted(p.name for p in remote.iterdir()) == sorted(
        [f".{names[0]}.withdrawn", f"{names[1]}.handled", names[2]]
    )

    result = invoke(config, "prune", "--older-than", "0", "--json")
    assert result.exit_code == 0, result.output
    pruned = json.loads(result.stdout)
    assert (pruned["outbox_files"], pruned["remote_files"], pruned["problems"]) == (2, 1, [])
    assert sorted(p.name for p in outbox.iterdir()) == [names[2]]  # the open batch stays
    # Alma's .handled file is its evidence of what it read: never deleted by deltasync.
    assert sorted(p.name for p in remote.iterdir()) == sorted([f"{names[1]}.handled", names[2]])
    text = invoke(config, "prune", "--older-than", "0")
    assert text.exit_code == 0, text.output
    assert re.fullmatch(
        r"pruned \d+ superseded record\(s\) last seen before \S+ \S+; forgot 0 purged "
        r"patron\(s\); deleted 0 old delta file\(s\) from the outbox and 0 withdrawn file\(s\) "
        r"from remote_dir\n",
        text.stdout,
    )


def test_run_deletes_delta_files_once_their_batch_is_resolved_longer_than_the_window(
    sqlite_url: str, write_config: ConfigWriter, tmp_path: Path
) -> None:
    import datetime as dt

    from deltasync import config as config_module
    from deltasync import job
    from deltasync.store import open_store

    remote = tmp_path / "alma-inbox"
    remote.mkdir()
    cfg = config_module.load(write_config(sqlite_url, feed=dir_feed(remote, retention_days=3)))
    feed = cfg.feed(None)
    start = dt.datetime(2027, 1, 4, 11, tzinfo=dt.UTC)
    outbox = tmp_path / "outbox" / "patrons"
    kept: list[list[str]] = []
    counts = []
    with open_store(cfg.state_url) as store:
        for day in range(7):
            ids = [f"P{n}" for n in range(day + 1)]  # one new patron a day
            now = start + dt.timedelta(days=day)
            result = job.run(store, feed, extract(tmp_path, f"d{day}.xml", *ids), now=now)
            assert result.pruned is not None
            counts.append(result.pruned.outbox_files)
            for sent in remote.glob("*.zip"):  # Alma reads every file the same day
                sent.rename(sent.with_name(sent.name + ".handled"))
            kept.append(sorted(p.name.split("_")[1] for p in outbox.iterdir()))
    # Batch N is confirmed on day N (the next run); its file goes once that is over 3 days ago.
    assert counts == [0, 0, 0, 0, 0, 1, 1]
    assert kept[4] == ["000001", "000002", "000003", "000004", "000005"]
    assert kept[-1] == ["000003", "000004", "000005", "000006", "000007"]
    assert len(list(remote.glob("*.zip.handled"))) == 7  # Alma's evidence stays


# -- 7. a read-only outbox ------------------------------------------------------------------


def test_a_read_only_outbox_is_a_clear_error_and_changes_nothing(
    db_url: str, write_config: ConfigWriter, tmp_path: Path
) -> None:
    config = write_config(db_url)
    run_json(config, str(extract(tmp_path, "d0.xml", "A")))
    outbox = tmp_path / "outbox" / "patrons"
    before = dump_store(db_url)
    with read_only(outbox) as reason:
        result = invoke(config, "run", str(extract(tmp_path, "d1.xml", "A", "B")))
    assert result.exit_code == 1, result.output
    assert re.fullmatch(
        rf"Error: {re.escape(str(outbox))}: cannot write delta file "
        rf"patrons_000002_\d{{8}}T\d{{6}}Z_[0-9a-f]{{8}}\.zip: {reason}\n",
        result.output,
    ), result.output
    assert dump_store(db_url) == before
    assert [p.name.split("_")[1] for p in outbox.iterdir()] == ["000001"]


def test_a_read_only_outbox_with_a_crashed_runs_leftover_is_a_clear_error(
    sqlite_url: str, write_config: ConfigWriter, tmp_path: Path
) -> None:
    config = write_config(sqlite_url)
    run_json(config, str(extract(tmp_path, "d0.xml", "A")))
    outbox = tmp_path / "outbox" / "patrons"
    leftover = outbox / ".patrons_000002_20270105T060000Z.zip.tmp"
    leftover.write_bytes(b"half a file")
    before = dump_store(sqlite_url)
    with read_only(outbox) as reason:
        result = invoke(config, "run", str(extract(tmp_path, "d1.xml", "A", "B")))
    assert result.exit_code == 1, result.output
    assert result.output == (
        f"Error: {leftover}: cannot set aside what a crashed run left in the outbox: {reason}\n"
    )
    assert dump_store(sqlite_url) == before
