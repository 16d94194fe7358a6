"""Sixty days of random faults: whatever goes wrong, Alma ends up holding the latest extract.

Faults drawn per day from the seed: an upload that fails, a crash at a random step of a run,
a crash right after an upload (before the ledger records it), a file deleted from the server,
a second run before Alma runs, Alma not running for days, failed and aborted jobs, and
patrons Alma rejects (users staff made INTERNAL by hand). At the end staff fix what Alma
rejected and replay; then Alma's users must equal the last extract, departed patrons expired,
with no "already taken in this feed" rejection on the way.

Odd seeds stamp every record with the day's status_date (ignored by the feed): every record's
bytes differ from the day before's, and an unchanged one is read in full the first day its
date moves and by its undated digest after. Even seeds stamp the day each patron's version
started: unchanged records repeat byte for byte and are read by their raw digests. So a crash
is injected into runs that read records in full, by raw and by undated digest.

Pickup mode cannot see inside Alma's job: a run that renames a file without loading it, or a
rejected user, looks like success. Those two faults are left out of pickup mode (README).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from world import API_KEY, World

from deltasync import job
from deltasync import ledger as ledger_module
from deltasync.delivery import RemoteFile
from deltasync.delivery.folder import FolderTransport
from deltasync.errors import DeliveryError
from deltasync.job import STEPS

DAYS = 60
SEEDS = 50
CHUNK = 10
MODES = ["pickup", "alma-api", "manual"]
RATES = {"change_rate": 0.08, "depart_rate": 0.03, "new_rate": 0.03, "return_rate": 0.25}


class Crash(BaseException):
    """The process dies here (BaseException: nothing in deltasync may swallow it)."""


class FaultyTransport:
    """The folder transport, with the next upload failing or crashing after it landed."""

    def __init__(self, inner: FolderTransport) -> None:
        self.inner = inner
        self.fail_next = False
        self.crash_after_next = False

    def describe(self) -> str:
        return self.inner.describe()

    def list(self) -> list[RemoteFile]:
        return self.inner.list()

    def upload(self, local: Path, name: str) -> RemoteFile:
        if self.fail_next:
            self.fail_next = False
            raise DeliveryError(
                f"{self.describe()}: upload of {name} failed: timed out", transient=True
            )
        uploaded = self.inner.upload(local, name)
        if self.crash_after_next:
            self.crash_after_next = False
            raise Crash("killed after the upload, before the ledger knew")
        return uploaded

    def rename(self, old: str, new: str) -> None:
        self.inner.rename(old, new)

    def remove(self, name: str) -> None:
        self.inner.remove(name)

    def close(self) -> None:
        self.inner.close()


def play(world: World, seed: int, mode: str) -> dict[str, int]:
    """Run the whole scenario; returns how often each fault happened."""
    rng = random.Random(f"{seed}:{mode}")
    transport = FaultyTransport(FolderTransport(world.remote))
    tally: dict[str, int] = {}
    outage = 0
    internal: set[str] = set()

    def count(fault: str) -> None:
        tally[fault] = tally.get(fault, 0) + 1

    def deltasync(day: int, hours: float, checkpoint: Any = None) -> None:
        try:
            result = world.run(day, hours, transport=transport, checkpoint=checkpoint)
        except Crash:
            count("crashed run")
            return
        assert result.dry_run is False

    for day in range(DAYS):
        if rng.random() < 0.1:
            transport.fail_next = True
            count("upload failure")
        if rng.random() < 0.05:
            transport.crash_after_next = True
        crash_step = rng.choice(STEPS) if rng.random() < 0.06 else None
        deltasync(day, 0, _crash_at(crash_step) if crash_step else None)
        if transport.crash_after_next:
            transport.crash_after_next = False  # nothing was uploaded today
        if rng.random() < 0.1:
            deltasync(day, 2)  # a second run before Alma runs (same extract)
            count("two runs between Alma runs")
        if rng.random() < 0.05:
            waiting = [p for p in world.remote.glob("*.zip")]
            if waiting:
                rng.choice(waiting).unlink()
                count("file deleted from the server")
        if mode != "pickup" and rng.random() < 0.04:
            present = [u for u in world.alma.users.values() if u.account_type == "EXTERNAL"]
            if present:
                user = rng.choice(present)
                user.account_type = "INTERNAL"  # staff took it over by hand: Alma rejects it
                internal.add(user.key)
                count("patron rejected by Alma")
        if outage == 0 and rng.random() < 0.07:
            outage = rng.randint(1, 3)
            count("Alma not running for days")
        if outage:
            outage -= 1
            continue
        outcomes = ["success"] * 12 + ["failed"] + (["aborted"] if mode != "pickup" else [])
        outcome = rng.choice(outcomes)
        if outcome != "success":
            count(f"{outcome} job")
        instance = world.alma_runs(day, outcome=outcome)
        if mode == "manual":
            _staff_read_the_job_report(world, instance)

    # The end: staff turn the hand-made users back over to the SIS and replay.
    for key in internal:
        world.alma.users[key].account_type = "EXTERNAL"
    last = DAYS - 1
    for round_ in range(4):
        if round_ == 0 and internal:
            job.replay(
                world.store,
                world.config,
                world.feed,
                now=world.now(last, 5),
                transport=transport,
                jobs=world.jobs,
            )
        world.run(last, 6 + round_, transport=transport)
        instance = world.alma_runs(last, hours=7 + round_)
        if mode == "manual":
            _staff_read_the_job_report(world, instance)
    return tally


def _crash_at(step: str) -> Any:
    def checkpoint(name: str) -> None:
        if name == step:
            raise Crash(step)

    return checkpoint


def _staff_read_the_job_report(world: World, instance: Any) -> None:
    """What staff do in manual mode after each Alma run: confirm, fail or reject."""
    if instance is None or instance.status == "FAILED":
        return  # nothing was picked up
    for name in instance.files:
        seq = int(name.split("_")[1])
        now = world.now(world.day, 7)
        if instance.status == "ABORTED_BY_SYSTEM":
            ledger_module.fail(world.store, world.feed, seq, "job aborted", now)
            continue
        rejected = {e["user_id"] for e in instance.events if e.get("file") == name}
        if rejected:
            ids = world.root / f"rejected-{seq}.txt"
            ids.write_text("\n".join(sorted(rejected)) + "\n")
            ledger_module.reject(world.store, world.feed, seq, ids, now)
        ledger_module.confirm(world.store, world.feed, seq, now)


@pytest.fixture(scope="module")
def extracts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated extracts, shared by the three confirm modes (the same seeds, the same days)."""
    return tmp_path_factory.mktemp("extracts")


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALMA_TEST_KEY", API_KEY)


def _play_and_check(world: World, seed: int, mode: str) -> dict[str, int]:
    try:
        tally = play(world, seed, mode)
        problems = world.mismatches(DAYS - 1)
        assert problems == [], f"seed {seed}: {problems[:5]} after {tally}"
        assert world.already_taken() == [], f"seed {seed}: {world.already_taken()[:3]}"
    finally:
        world.close()
    return tally


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(SEEDS // CHUNK))
@pytest.mark.parametrize("mode", MODES)
def test_sixty_days_of_faults_fifty_seeds_on_sqlite(
    mode: str, chunk: int, tmp_path: Path, extracts: Path, api_key: None
) -> None:
    """Seeds in chunks of ten, so parallel workers share the sweep evenly."""
    totals: dict[str, int] = {}
    for seed in range(chunk * CHUNK + 1, (chunk + 1) * CHUNK + 1):
        world = World(
            tmp_path / f"seed{seed}",
            f"sqlite:///{tmp_path / f's{seed}.db'}",
            confirm=mode,
            patrons=40,
            seed=seed,
            rates=RATES,
            extracts=extracts,
            status_date="daily" if seed % 2 else "version",
        )
        for fault, n in _play_and_check(world, seed, mode).items():
            totals[fault] = totals.get(fault, 0) + n
    print(f"\n{mode}, seeds {chunk * CHUNK + 1}-{(chunk + 1) * CHUNK}, {DAYS} days: {totals}")
    for fault in (
        "upload failure",
        "crashed run",
        "file deleted from the server",
        "two runs between Alma runs",
        "Alma not running for days",
        "failed job",
    ):
        assert totals.get(fault, 0) > 0, fault
    if mode != "pickup":
        assert totals.get("aborted job", 0) > 0 and totals.get("patron rejected by Alma", 0) > 0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("mode", MODES)
def test_sixty_days_of_faults_on_postgresql(
    mode: str, seed: int, pg_url: str, tmp_path: Path, api_key: None
) -> None:
    world = World(tmp_path, pg_url, confirm=mode, patrons=40, seed=seed, rates=RATES)
    assert sum(_play_and_check(world, seed, mode).values()) > 0
