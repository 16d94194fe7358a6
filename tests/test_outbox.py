"""Delta files: parts, names, atomic publication, and orphans of crashed runs."""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import pytest

from deltasync.delta import outbox
from deltasync.errors import OutboxError

WHEN = dt.datetime(2027, 1, 4, 6, 30, 5, tzinfo=dt.UTC)


def records(n: int) -> list[bytes]:
    return [f"<user><primary_id>P{i}</primary_id></user>".encode() for i in range(n)]


def test_file_name() -> None:
    chicago = WHEN.astimezone(dt.timezone(dt.timedelta(hours=-6)))
    assert (
        outbox.file_name("patrons", 42, chicago, "0badcafe")
        == "patrons_000042_20270104T063005Z_0badcafe.zip"
    )
    # Unique even for the same feed, sequence number and second (a restored store).
    names = {outbox.file_name("patrons", 42, chicago) for _ in range(50)}
    assert len(names) == 50
    assert all(outbox.is_delta_name(n, "patrons") for n in names)
    assert outbox.is_delta_name("patrons_000042_20270104T063005Z.zip", "patrons")  # older name
    assert not outbox.is_delta_name("patrons_staff_000042_20270104T063005Z.zip", "patrons")


def test_parts_and_atomic_publication(tmp_path: Path) -> None:
    name = outbox.file_name("patrons", 1, WHEN)
    delta = outbox.write(
        tmp_path, name, records(25), total=25, records_per_part=10, created_at=WHEN
    )
    assert not delta.path.exists() and delta.temporary.exists()
    assert delta.temporary.name.startswith(".")
    outbox.publish(delta)
    assert delta.path.exists() and not delta.temporary.exists()
    with zipfile.ZipFile(delta.path) as archive:
        names = archive.namelist()
        # The parts are named without the file's random part: the bytes depend on records
        # and time only.
        stem = delta.path.stem.rsplit("_", 1)[0]
        assert stem == "patrons_000001_20270104T063005Z"
        assert names == [f"{stem}_part{i:02d}.xml" for i in (1, 2, 3)]
        sizes = [archive.read(n).count(b"<user>") for n in names]
    assert sizes == [10, 10, 5]
    assert (delta.parts, delta.records) == (3, 25)


def test_same_records_and_time_give_the_same_bytes(tmp_path: Path) -> None:
    a = outbox.write(
        tmp_path / "a", "x.zip", records(5), total=5, records_per_part=2, created_at=WHEN
    )
    b = outbox.write(
        tmp_path / "b", "x.zip", records(5), total=5, records_per_part=2, created_at=WHEN
    )
    assert a.temporary.read_bytes() == b.temporary.read_bytes()
    assert a.sha256 == b.sha256


def test_more_than_fifty_parts_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutboxError, match="more than 50 parts of 2"):
        outbox.write(
            tmp_path, "x.zip", records(101), total=101, records_per_part=2, created_at=WHEN
        )
    assert list(tmp_path.iterdir()) == []


def test_sweep_sets_aside_unknown_files_and_removes_temporaries(tmp_path: Path) -> None:
    known = "patrons_000001_20270104T063005Z.zip"
    orphan = "patrons_000002_20270105T063005Z.zip"
    other_feed = "staff_000002_20270105T063005Z.zip"
    for name in (
        known,
        orphan,
        other_feed,
        ".patrons_000003_20270105T063005Z.zip.tmp",  # an older version's temporary
        ".patrons_000004_20270106T063005Z_0badcafe.zip.0123456789abcdef.tmp",
        "notes.txt",
    ):
        (tmp_path / name).write_text(name)
    moved = outbox.sweep(tmp_path, "patrons", {known})
    assert moved == [tmp_path / ".orphaned" / orphan]
    assert (tmp_path / ".orphaned" / orphan).read_text() == orphan
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
        [known, other_feed, "notes.txt"]
    )
