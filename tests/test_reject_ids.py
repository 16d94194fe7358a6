"""Staff's `reject` and files of match IDs: only a batch Alma read can have rejected anyone,
and a file that is not plain text is a clear error naming the line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from helpers import dump_store, invoke, listing, read_delta, record, run_json, users, write


def test_reject_of_a_batch_alma_never_read_is_refused(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    config = write_config(
        db_url, feed={"transport": "dir", "remote_dir": str(remote), "confirm": "manual"}
    )
    run_json(config, str(write(tmp_path, "d0.xml", users(record("A"), record("B")))))
    # Alma did not run overnight: batch 1 is taken back unread, batch 2 carries A again.
    run_json(config, str(write(tmp_path, "d1.xml", users(record("A"), record("B", name="Roe")))))
    ids = write(tmp_path, "rejected.txt", "A\n")
    before = dump_store(db_url)
    result = invoke(config, "reject", "1", "--ids", str(ids))
    assert result.exit_code == 1, result.output
    assert result.output == (
        "Error: batch 1 is superseded: Alma never read it, so it rejected no one; record "
        "rejections against the batch Alma loaded\n"
    )
    assert dump_store(db_url) == before
    # Batch 2 vanishes unread: A, never delivered, must be in the next delta.
    for file in remote.glob("*.zip"):
        file.unlink()
    day2 = write(tmp_path, "d2.xml", users(record("A"), record("B", name="Poe")))
    out = run_json(config, str(day2), exit_code=4)
    assert set(read_delta(Path(out["batch"]["file"]))) == {"A", "B"}
    failed = invoke(config, "reject", "2", "--ids", str(ids))  # vanished: failed, not loaded
    assert failed.exit_code == 1 and failed.output.startswith("Error: batch 2 is failed: ")
    marked = invoke(config, "reject", "3", "--ids", str(ids))
    assert marked.exit_code == 0 and marked.output == "batch 3: 1 patrons marked rejected\n"


def test_a_nul_in_a_file_of_ids_is_a_clear_error(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url)
    run_json(config, str(write(tmp_path, "d0.xml", users(record("A")))))
    before = dump_store(db_url), listing(tmp_path / "outbox")
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"A\nB\x00C\n")
    for command in (["reject", "1"], ["resend"]):
        result = invoke(config, *command, "--ids", str(ids))
        assert result.exit_code == 1, result.output
        assert result.output == (
            f"Error: {ids}: line 2: a NUL or control character; a file of match IDs is "
            "plain text, one ID per line\n"
        )
    ids.write_bytes(b"A\n\xff\xfeB\n")
    result = invoke(config, "resend", "--ids", str(ids))
    assert result.exit_code == 1
    assert result.output == f"Error: {ids}: line 2: not UTF-8\n"
    assert (dump_store(db_url), listing(tmp_path / "outbox")) == before
