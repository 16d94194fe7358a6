"""The delivery ledger: upload, pickup, confirmation, take-back and catch-up, against a
simulated Alma reading the remote folder."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import generate_extract
import pytest
from helpers import invoke, read_delta
from world import API_KEY, World

from deltasync.store import batches, feeds
from deltasync.store.tables import BatchStatus, patron_t


@pytest.fixture
def world_factory(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., World]]:
    monkeypatch.setenv("ALMA_TEST_KEY", API_KEY)
    made: list[World] = []

    def make(**options: object) -> World:
        world = World(tmp_path / f"w{len(made)}", db_url, **options)  # type: ignore[arg-type]
        made.append(world)
        return world

    yield make
    for world in made:
        world.close()


def statuses(world: World) -> dict[int, str]:
    with world.store.begin() as conn:
        row = feeds.find_feed(conn, "patrons")
        assert row is not None
        return {b.seq: b.status for b in batches.listed(conn, row.id)}


def test_pickup_confirms_and_the_next_delta_holds_only_new_changes(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory()
    first = world.run(0)
    assert first.batch is not None and first.ledger_events == ["batch 1 uploaded"]
    assert (world.remote / first.batch.file.name).exists()
    world.alma_runs(0)
    assert world.mismatches(0) == []

    second = world.run(1)
    assert statuses(world)[1] == BatchStatus.CONFIRMED
    truth = generate_extract.truth(patrons=world.patrons, day=1)
    expected = set(truth["new"]) | set(truth["changed"]) | set(truth["departed"])
    assert second.batch is not None and second.carried_over == 0
    assert set(read_delta(second.batch.file)) == expected
    world.alma_runs(1)
    assert world.mismatches(1) == []
    assert world.already_taken() == []


def test_a_batch_alma_has_not_read_is_taken_back_and_folded_in(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory()
    world.run(0)
    world.run(1)  # Alma did not run in between
    assert statuses(world) == {1: BatchStatus.SUPERSEDED, 2: BatchStatus.UPLOADED}
    names = sorted(p.name for p in world.remote.iterdir())
    assert names[0].startswith(".patrons_000001_") and names[0].endswith(".withdrawn")
    assert names[1].startswith("patrons_000002_") and names[1].endswith(".zip")
    world.alma_runs(1)
    assert world.mismatches(1) == []
    assert world.already_taken() == []
    # The audit trail shows both batches that carried a day-0 record.
    from deltasync import audit

    day1 = generate_extract.truth(patrons=world.patrons, day=1)
    first_patron = next(
        pid
        for pid in generate_extract.truth(patrons=world.patrons, day=0)["new"]
        if pid not in day1["changed"] and pid not in day1["departed"]
    )
    world.run(1, hours=2)  # reconcile: batch 2 confirmed
    versions = audit.history(world.store, world.feed, first_patron)
    assert versions[0].carried_by == [(1, BatchStatus.SUPERSEDED), (2, BatchStatus.CONFIRMED)]


def test_a_file_that_vanished_fails_and_its_patrons_go_again(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory()
    first = world.run(0)
    assert first.batch is not None
    (world.remote / first.batch.file.name).unlink()  # the SFTP server expired it
    second = world.run(1)
    assert statuses(world)[1] == BatchStatus.FAILED
    assert any("vanished from remote_dir" in reason for reason in second.attention)
    assert second.batch is not None
    assert second.batch.records >= world.patrons  # everybody: nothing was ever confirmed
    world.alma_runs(1)
    assert world.mismatches(1) == []


def test_failed_and_aborted_jobs_are_caught_up(world_factory: Callable[..., World]) -> None:
    world = world_factory(confirm="alma-api")
    world.run(0)
    world.alma_runs(0, outcome="aborted")  # renamed .handled, nothing loaded
    second = world.run(1)
    assert statuses(world)[1] == BatchStatus.FAILED
    assert any("ABORTED_BY_SYSTEM" in reason for reason in second.attention)
    world.alma_runs(1, outcome="failed")  # nothing picked up
    world.alma_runs(1, hours=8)
    world.run(2)
    assert statuses(world)[2] == BatchStatus.CONFIRMED
    world.alma_runs(2)
    assert world.mismatches(2) == []


def test_alma_rejections_are_not_resent_until_the_record_changes(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(confirm="alma-api")
    truth = generate_extract.truth(patrons=world.patrons, day=0)
    internal = truth["new"][0]
    world.alma.add_internal_user(internal)  # staff made this one by hand: Alma refuses it
    world.run(0)
    world.alma_runs(0)
    world.run(1)
    with world.store.begin() as conn:
        row = feeds.find_feed(conn, "patrons")
        assert row is not None
        reason = (
            conn.execute(patron_t.select().where(patron_t.c.match_key == internal.lower()))
            .one()
            .rejected_reason
        )
    assert reason == "User is not external"
    second = world.run(2)
    assert second.batch is None or internal not in read_delta(second.batch.file)


def test_upload_failure_keeps_the_batch_and_the_next_run_delivers_it(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    world = world_factory()
    world.remote.rmdir()
    world.remote.write_text("not a folder")  # the mount is broken
    first = world.run(0)
    assert statuses(world) == {1: BatchStatus.BUILT}
    assert any("not delivered" in reason for reason in first.attention)
    world.remote.unlink()
    world.remote.mkdir()
    again = world.run(0, hours=1)  # the same extract: no new changes, but batch 1 goes out
    assert again.already_ingested_at is not None
    assert statuses(world) == {1: BatchStatus.UPLOADED}
    world.alma_runs(0)
    assert world.mismatches(0) == []


def test_cli_exit_4_status_and_manual_decisions(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    world = world_factory(confirm="manual")
    config = tmp_path / "manual.toml"
    config.write_text(
        f'[state]\nurl = "{world.config.state_url}"\n[feeds.patrons]\n'
        f'timezone = "America/Chicago"\nignore = ["status_date"]\ntransport = "dir"\n'
        f'remote_dir = "{world.remote}"\nconfirm = "manual"\npickup_timeout = "1m"\n'
    )
    first = invoke(config, "run", str(world.extract(0)))
    assert first.exit_code == 0, first.output
    world.alma_runs(0)
    # Picked up, but in manual mode only staff confirm.
    waiting = invoke(config, "run", str(world.extract(0)))
    assert waiting.exit_code == 0, waiting.output
    status = json.loads(invoke(config, "status", "--json").stdout)
    assert [b["status"] for b in status["pending_batches"]] == [BatchStatus.PICKED_UP]
    assert status["awaiting_confirmation"] == world.patrons

    rejected = tmp_path / "rejected.txt"
    truth = generate_extract.truth(patrons=world.patrons, day=0)
    rejected.write_text(f"{truth['new'][3]}\nNOBODY\n")
    marked = invoke(config, "reject", "1", "--ids", str(rejected))
    assert marked.exit_code == 0, marked.output
    assert (
        "1 patrons marked rejected" in marked.stdout and "NOBODY: not in batch 1" in marked.stdout
    )
    assert invoke(config, "confirm", "1").exit_code == 0
    status = json.loads(invoke(config, "status", "--json").stdout)
    assert status["awaiting_confirmation"] == 1
    assert status["batches_by_status"] == {"confirmed": 1}
    assert [(b["seq"], b["status"]) for b in status["all_batches"]] == [(1, "confirmed")]

    replayed = invoke(config, "replay", "--json")
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.stdout)["batch"]["records"] == 1  # the rejected one, on request
    assert invoke(config, "fail", "2", "--reason", "job aborted").exit_code == 0
    status = json.loads(invoke(config, "status", "--json").stdout)
    assert [b["seq"] for b in status["failed_batches"]] == [2]
    assert invoke(config, "confirm", "9").exit_code == 1

    # Batch 3 carries the failed batch's patrons; the server loses it: run exits 4.
    assert invoke(config, "replay").exit_code == 0
    for lost in world.remote.glob("patrons_000003_*.zip"):
        lost.unlink()
    late = invoke(config, "run", str(world.extract(1)))
    assert late.exit_code == 4, late.output
    assert "ATTENTION: batch 3 failed: vanished from remote_dir" in late.stdout


def test_a_batch_not_picked_up_in_time_needs_attention(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory()
    world.run(0)
    on_time = world.run(0, hours=25)
    assert on_time.attention == []
    late = world.run(0, hours=27)  # default pickup_timeout: 26 hours
    assert [r for r in late.attention if "not picked up by Alma since" in r]
    world.alma_runs(0, hours=28)
    assert world.run(0, hours=29).attention == []


def test_replay_since_resends_everything_a_batch_carried(
    world_factory: Callable[..., World],
) -> None:
    """After an Alma restore, `replay --since N` sends batch N's patrons again, current values."""
    from deltasync import job

    world = world_factory()
    world.run(0)
    world.alma_runs(0)
    world.run(1)
    world.alma_runs(1)
    assert world.run(1, hours=2).batch is None  # everything confirmed: nothing pending
    restored = {key: user for key, user in world.alma.users.items()}
    world.alma.users.clear()  # Alma restored from a backup older than both batches
    replayed = job.replay(world.store, world.config, world.feed, since=1, now=world.now(1, 3))
    assert replayed.batch is not None
    assert replayed.batch.records == len(restored)
    world.alma_runs(1, hours=8)
    assert world.mismatches(1) == []


def test_a_picked_up_batch_without_a_result_needs_attention(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(confirm="manual")
    world.run(0)
    world.alma_runs(0)
    assert world.run(0, hours=7).attention == []  # picked up; staff have a day to confirm
    late = world.run(0, hours=40)
    assert [r for r in late.attention if "picked up" in r and "no result yet" in r]


def test_a_rejection_recorded_after_confirmation_is_not_counted_as_held(
    world_factory: Callable[..., World], tmp_path: Path
) -> None:
    """Pickup mode confirms on the rename; staff later learn Alma rejected a patron."""
    from deltasync import job, ledger

    world = world_factory()
    world.run(0)
    world.alma_runs(0)
    world.run(0, hours=7)
    assert statuses(world)[1] == BatchStatus.CONFIRMED
    rejected = generate_extract.truth(patrons=world.patrons, day=0)["new"][5]
    ids = tmp_path / "rejected.txt"
    ids.write_text(rejected + "\n")
    assert ledger.reject(world.store, world.feed, 1, ids, world.now(0, 8)) == (1, [])
    assert world.run(0, hours=9).batch is None  # rejected: not re-sent unchanged
    replayed = job.replay(world.store, world.config, world.feed, now=world.now(0, 10))
    assert replayed.batch is not None
    assert set(read_delta(replayed.batch.file)) == {rejected}


def test_a_file_alma_rejects_whole_fails_its_batch(world_factory: Callable[..., World]) -> None:
    """'Completed with errors' with a file-level error loaded nobody from that file."""
    world = world_factory(confirm="alma-api")
    world.run(0)
    world.alma.max_parts_per_zip = 0  # this run refuses every zip as a whole
    world.alma_runs(0)
    second = world.run(1)
    assert statuses(world)[1] == BatchStatus.FAILED
    assert any("file rejected" in reason for reason in second.attention)
    world.alma.max_parts_per_zip = 50
    world.alma_runs(1)
    assert world.mismatches(1) == []


def test_a_changed_ignore_list_does_not_resend_confirmed_patrons(
    world_factory: Callable[..., World],
) -> None:
    from dataclasses import replace

    world = world_factory()
    world.run(0)
    world.alma_runs(0)
    world.run(0, hours=7)  # batch 1 confirmed
    world.feed = replace(world.feed, ignore=("status_date", "user_statistics", "user_notes"))
    result = world.run(1)
    assert result.rehashed > 0
    truth = generate_extract.truth(patrons=world.patrons, day=1)
    assert result.batch is not None
    assert result.carried_over == 0
    assert result.batch.records <= len(truth["new"]) + len(truth["changed"]) + len(
        truth["departed"]
    )
