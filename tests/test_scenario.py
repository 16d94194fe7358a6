"""The core promise over several generated days: each delta holds exactly what changed."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import generate_extract
import pytest
from helpers import invoke, read_delta, run_json
from lxml import etree

PATRONS = 400
DAYS = 5


def policy_today() -> dt.date:
    return dt.datetime.now(ZoneInfo("America/Chicago")).date()


def test_each_day_sends_exactly_the_generators_changes(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    config = write_config(db_url, departure={"purge_after_days": 30})
    previous: dict[str, etree._Element] = {}
    for day in range(DAYS):
        # Real exports vary: another root element, CRLF line ends, records in any order.
        extract = make_extract(day, PATRONS, root="userRecords", crlf=True, shuffle=True)
        truth = generate_extract.truth(patrons=PATRONS, day=day)
        result = run_json(config, str(extract))

        counts = result["counts"]
        assert counts == {
            "new": len(truth["new"]),
            "changed": len(truth["changed"]),
            "unchanged": truth["unchanged"],
            "departed": len(truth["departed"]),
            "returned": len(truth["returned"]),
            "held_back": 0,
        }
        assert result["extract"]["records"] == truth["present"]
        delta = read_delta(Path(result["batch"]["file"]))
        assert Path(result["batch"]["file"]).is_absolute()
        assert result["batch"]["records"] == len(delta)

        sent_in_full = set(truth["new"]) | set(truth["changed"]) | set(truth["returned"])
        assert set(delta) == sent_in_full | set(truth["departed"])
        current = {pid: xml for pid, xml in generate_extract.records(patrons=PATRONS, day=day)}
        for primary_id in sent_in_full:
            assert _same_record(delta[primary_id], current[primary_id]), primary_id
        expiry = policy_today()
        for primary_id in truth["departed"]:
            record = delta[primary_id]
            assert record.findtext("expiry_date") == f"{expiry.isoformat()}Z"
            purge = expiry + dt.timedelta(days=30)
            assert record.findtext("purge_date") == f"{purge.isoformat()}Z"
            # Swap-all: the expiration record is the complete record last sent.
            last_sent = previous[primary_id]
            assert _same_record(record, last_sent, but=("expiry_date", "purge_date"))
        previous.update({pid: delta[pid] for pid in sent_in_full})

        again = run_json(config, str(extract))
        assert again["batch"] is None
        assert again["already_ingested"] is True


def test_zip_opens_with_unzip(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    unzip = shutil.which("unzip")
    if unzip is None:
        pytest.skip("unzip not installed (./scripts/test installs it)")
    config = write_config(db_url, feed={"records_per_part": 70})
    result = run_json(config, str(make_extract(0, 200)))
    delta = Path(result["batch"]["file"])
    tested = subprocess.run([unzip, "-t", str(delta)], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "No errors detected" in tested.stdout
    listed = subprocess.run([unzip, "-Z1", str(delta)], capture_output=True, text=True, check=True)
    parts = listed.stdout.split()
    assert len(parts) == 3  # 200 records, at most 70 a part
    stem = delta.stem.rsplit("_", 1)[0]  # parts are named without the file's random part
    assert all(p.startswith(stem + "_part") and p.endswith(".xml") for p in parts)
    assert len(read_delta(delta)) == 200


def test_compressed_extracts_give_the_same_result(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    config = write_config(db_url)
    run_json(config, str(make_extract(0, 150, suffix=".xml.gz")))
    day1 = run_json(config, str(make_extract(1, 150, suffix=".zip", members=3)))
    truth = generate_extract.truth(patrons=150, day=1)
    assert day1["counts"]["changed"] == len(truth["changed"])
    assert day1["counts"]["new"] == len(truth["new"])
    assert day1["extract"]["records"] == truth["present"]


def test_sqlite_store_is_private(
    sqlite_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    config = write_config(sqlite_url)
    run_json(config, str(make_extract(0, 20)))
    store = Path(sqlite_url.removeprefix("sqlite:///"))
    assert store.stat().st_mode & 0o777 == 0o600
    for sidecar in store.parent.glob(store.name + "-*"):
        assert sidecar.stat().st_mode & 0o077 == 0, sidecar


def test_status_batches_and_history(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    import json

    config = write_config(db_url)
    for day in range(3):
        run_json(config, str(make_extract(day, 120)))
    changed = generate_extract.truth(patrons=120, day=1)["changed"][0]

    shown = invoke(config, "status", "--json")
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.stdout)
    truth2 = generate_extract.truth(patrons=120, day=2)
    assert status["patrons_present"] == truth2["present"]
    assert status["extracts"] == 3
    assert status["batches"] == 3

    batches = json.loads(invoke(config, "batches", "--json").stdout)
    assert [b["seq"] for b in batches] == [1, 2, 3]
    assert batches[0]["new"] == 120

    result = invoke(config, "history", changed.lower(), "--json")
    assert result.exit_code == 0, result.output
    versions = json.loads(result.stdout)
    assert [v["kind"] for v in versions][:2] == ["new", "changed"]
    assert [v["batch_seq"] for v in versions][:2] == [1, 2]
    assert versions[0]["first_seen"] <= versions[1]["first_seen"]

    text = invoke(config, "history", changed)
    assert text.exit_code == 0
    assert "version 2: changed" in text.stdout

    missing = invoke(config, "history", "NO-SUCH-PATRON")
    assert missing.exit_code == 1
    assert "no patron with match ID 'NO-SUCH-PATRON'" in missing.output


def _same_record(actual: object, expected: object, but: tuple[str, ...] = ()) -> bool:
    """Equal as Alma reads them: same fields, attributes and values; layout aside."""
    return _tree(_element(actual), skip=but) == _tree(_element(expected), skip=but)


def _element(value: object) -> etree._Element:
    if isinstance(value, str):
        return etree.fromstring(value.encode())
    assert isinstance(value, etree._Element)
    return value


def _tree(element: etree._Element, skip: tuple[str, ...] = ()) -> tuple[object, ...]:
    children = tuple(_tree(child) for child in element if child.tag not in skip)
    return (
        element.tag,
        tuple(sorted(element.attrib.items())),
        (element.text or "").strip(),
        children,
    )
