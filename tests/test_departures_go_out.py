"""Departures and returns go out whatever the recipe ignores, and a corrupt stored record
still expires its patron (it once raised an lxml traceback)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from helpers import invoke, read_delta, record, run_json, users, write
from sqlalchemy import create_engine, text

ROLLING = {"ignore": ["status_date", "expiry_date", "purge_date"]}
"""A SIS that rolls every patron's expiry forward each day: the dates are not changes."""


def sql(url: str, statement: str, **params: object) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    finally:
        engine.dispose()


def kinds_sent(config: Path, match_id: str) -> list[tuple[str, list[int]]]:
    history = json.loads(invoke(config, "history", match_id, "--json").stdout)
    return [(v["kind"], [seq for seq, _state in v["carried_by"]]) for v in history]


# -- departures and returns go out whatever the recipe ignores ------------------------------


def test_departure_goes_out_when_the_recipe_ignores_the_dates(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url, feed=ROLLING, departure={"max_departures": "100%"})
    run_json(config, str(write(tmp_path, "d0.xml", users(record("A"), record("B")))))
    left = run_json(config, str(write(tmp_path, "d1.xml", users(record("A")))))
    assert left["counts"]["departed"] == 1
    assert left["batch"] is not None, "the expiration record was never sent"
    [expired] = read_delta(Path(left["batch"]["file"])).values()
    assert expired.findtext("primary_id") == "B"
    assert expired.findtext("expiry_date") != "2032-06-30Z"
    assert kinds_sent(config, "B") == [("new", [1]), ("departed", [2])]
    # B comes back with the very record it had: Alma holds the expired one, so it goes out.
    day2 = users(record("A"), record("B"), record("C"))
    back = run_json(config, str(write(tmp_path, "d2.xml", day2)))
    assert back["counts"]["returned"] == 1 and back["batch"] is not None
    returned = read_delta(Path(back["batch"]["file"]))
    assert set(returned) == {"B", "C"}
    assert returned["B"].findtext("expiry_date") == "2032-06-30Z"
    assert kinds_sent(config, "B") == [("new", [1]), ("departed", [2]), ("returned", [3])]
    # Sent once: the next day with the same records sends nothing.
    quiet = run_json(config, str(write(tmp_path, "d3.xml", day2.replace("\n", "\r\n"))))
    assert quiet["batch"] is None and quiet["counts"]["unchanged"] == 3


def test_a_return_after_a_departure_that_needed_no_record_goes_out(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Alma holds OLD's record, whose expiry has passed; it returns with a new expiry."""
    config = write_config(db_url, feed=ROLLING, departure={"max_departures": "100%"})
    expired = record("OLD").replace("2032-06-30Z", "2020-06-30Z")
    run_json(config, str(write(tmp_path, "d0.xml", users(record("A"), expired))))
    left = run_json(config, str(write(tmp_path, "d1.xml", users(record("A")))))
    assert left["counts"]["departed"] == 1 and left["batch"] is None
    day2 = users(record("A"), record("OLD"), record("C"))
    back = run_json(config, str(write(tmp_path, "d2.xml", day2)))
    assert back["counts"]["returned"] == 1
    assert back["batch"] is not None
    assert set(read_delta(Path(back["batch"]["file"]))) == {"OLD", "C"}


# -- a damaged stored record ----------------------------------------------------------------


def test_a_corrupt_stored_record_still_expires_its_patron(
    db_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(db_url, departure={"max_departures": "100%"})
    run_json(config, str(write(tmp_path, "d0.xml", users(record("A"), record("B"), record("C")))))
    changed = users(record("A"), record("B", name="Roe"), record("C"))
    run_json(config, str(write(tmp_path, "d1.xml", changed)))
    for match_key in ("b", "c"):  # a disk fault, or a hand edit gone wrong
        sql(
            db_url,
            "UPDATE patron_version SET payload = :bad WHERE id = "
            "(SELECT current_version_id FROM patron WHERE match_key = :key)",
            bad=b"<user><primary_id>X</primary_id><last_na",
            key=match_key,
        )
    out = run_json(config, str(write(tmp_path, "d2.xml", users(record("A")))), exit_code=4)
    assert out["counts"]["departed"] == 2
    delta = read_delta(Path(out["batch"]["file"]))
    assert set(delta) == {"B"}
    # Built from B's readable version before the damaged one.
    assert delta["B"].findtext("last_name") == "Doe"
    assert delta["B"].findtext("expiry_date") != "2032-06-30Z"
    assert out["attention"] == [
        "B: the stored record is unreadable; the expiration record was built from an "
        "earlier version, which Alma gets in full (swap-all)",
        "C: the stored record is unreadable and no earlier version is: no expiration "
        "record was sent; expire the patron in Alma by hand",
    ]
