"""What counts as a change (issue 12): SIS-ignored fields, dates that move, expiry guards,
computed dates, and departures as libraries run them."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import dump_store, invoke, listing, read_delta, record, run_json, users, write
from sqlalchemy import create_engine, text

from deltasync import job
from deltasync.config import parse
from deltasync.errors import GuardRefused
from deltasync.store import Store, open_store

IDS = [f"S{n:02d}" for n in range(10)]
START = dt.datetime(2027, 1, 4, 11, 0, tzinfo=dt.UTC)  # 05:00 in Chicago


def campus(*records: str) -> str:
    return users(*records)


def everyone(change: Callable[[str], str] = lambda r: r) -> str:
    return campus(*(change(record(pid)) for pid in IDS))


# -- what counts as a change ------------------------------------------------------------------


def test_fields_alma_sis_load_ignores_are_not_changes(
    db_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(db_url, feed={"ignore": []})
    run_json(config, str(write(tmp_path, "d0.xml", campus(record("A"), record("B")))))
    stamped = (
        record("A")
        .replace("<status>", "<status_date>2027-01-05Z</status_date><status>")
        .replace(
            "</user_identifiers>",
            "</user_identifiers><user_roles><user_role><status>ACTIVE</status>"
            "<scope>MAIN</scope><role_type>200</role_type></user_role></user_roles>",
        )
        .replace('<address preferred="true">', '<address preferred="true" segment_type="External">')
    )
    out = run_json(config, str(write(tmp_path, "d1.xml", campus(stamped, record("B")))))
    assert out["counts"]["changed"] == 0 and out["counts"]["unchanged"] == 2
    assert out["batch"] is None
    # A real change goes out with the ignored fields as the SIS wrote them.
    renamed = stamped.replace("<last_name>Doe<", "<last_name>Roe<")
    out = run_json(config, str(write(tmp_path, "d2.xml", campus(renamed, record("B")))))
    assert out["counts"]["changed"] == 1
    sent = read_delta(Path(out["batch"]["file"]))["A"]
    assert sent.findtext("status_date") == "2027-01-05Z"
    assert sent.find("user_roles/user_role") is not None
    assert sent.find("contact_info/addresses/address").get("segment_type") == "External"


def test_a_store_upgraded_to_the_new_recipe_re_sends_nobody(
    db_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    with_roles = [
        record(pid).replace(
            "</user_identifiers>",
            "</user_identifiers><user_roles><user_role><status>ACTIVE</status>"
            "<scope>MAIN</scope><role_type>200</role_type></user_role></user_roles>",
        )
        for pid in IDS
    ]
    # Day 0 digested as the recipe before version 2 did (the SIS-ignored fields counted),
    # and recorded under that recipe's own fingerprint, as an older deltasync left it.
    config = write_config(db_url, feed={"count_sis_fields": True})
    run_json(config, str(write(tmp_path, "d0.xml", campus(*with_roles))))
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE feed SET hash_recipe = 'v1;xxh3_128;ignore=status_date'"))
    engine.dispose()
    config = write_config(db_url)
    out = run_json(config, str(write(tmp_path, "d1.xml", campus(*with_roles) + "\n")))
    assert out["counts"]["unchanged"] == len(IDS) and out["counts"]["changed"] == 0
    assert out["batch"] is None
    result = invoke(config, "run", str(write(tmp_path, "d2.xml", campus(*with_roles) + "\n\n")))
    assert result.exit_code == 0 and "hash recipe changed" not in result.output


# -- dates that move --------------------------------------------------------------------------


def later_term(r: str) -> str:
    return r.replace("2032-06-30Z", "2032-12-31Z").replace("2033-06-30Z", "2033-12-31Z")


def test_a_term_rollover_passes_the_guards_and_is_sent(
    db_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(db_url)  # max_changes 50 %: every patron moves
    run_json(config, str(write(tmp_path, "d0.xml", everyone())))
    out = run_json(config, str(write(tmp_path, "d1.xml", everyone(later_term))))
    assert out["counts"]["changed"] == len(IDS)
    assert out["policy"]["expiry_moves"] == len(IDS) and out["policy"]["expiry_cuts"] == 0
    sent = read_delta(Path(out["batch"]["file"]))
    assert {u.findtext("expiry_date") for u in sent.values()} == {"2032-12-31Z"}


def test_a_later_date_alone_waits_for_renewal_an_earlier_one_goes_at_once(
    db_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(
        db_url, feed={"expiry": {"renew_within_days": 30}}, departure={"max_expiry_cuts": "20%"}
    )
    run_json(config, str(write(tmp_path, "d0.xml", everyone())))
    out = run_json(config, str(write(tmp_path, "d1.xml", everyone(later_term))))
    assert out["counts"]["changed"] == 0 and out["counts"]["unchanged"] == len(IDS)
    assert out["batch"] is None
    cut = campus(
        *(later_term(record(pid)) for pid in IDS[1:]),
        record(IDS[0]).replace("2032-06-30Z", "2031-06-30Z"),
    )
    out = run_json(config, str(write(tmp_path, "d2.xml", cut)))
    assert out["counts"]["changed"] == 1 and out["policy"]["expiry_cuts"] == 1
    assert set(read_delta(Path(out["batch"]["file"]))) == {IDS[0]}


def test_a_sis_that_cuts_every_expiry_to_today_is_refused(
    db_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(db_url, departure={"max_changes": "100%"})
    run_json(config, str(write(tmp_path, "d0.xml", everyone())))
    before, outbox = dump_store(db_url), listing(tmp_path / "outbox")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    day1 = write(tmp_path, "d1.xml", everyone(lambda r: r.replace("2032-06-30", today)))
    result = invoke(config, "run", str(day1))
    assert result.exit_code == 3, result.output
    assert result.stderr == (
        f"Error: refused: {day1}: 10 of 10 patrons would have their expiry or purge date moved "
        "earlier "
        "(100.0%), over max_expiry_cuts = 5% for feed 'patrons'. Check the extract; if it is "
        "right, run again with --force\n"
    )
    assert dump_store(db_url) == before and listing(tmp_path / "outbox") == outbox


# -- over several days: the job's steps with a clock ------------------------------------------


class Feed:
    """One feed run by the job on a clock, writing to an outbox only."""

    def __init__(self, root: Path, url: str, feed: dict[str, Any]) -> None:
        self.root = root
        data = {
            "state": {"url": url},
            "feeds": {"patrons": {"timezone": "America/Chicago", **feed}},
        }
        self.config = parse(data, root / "config.toml", {})
        self.feed = self.config.feed(None)
        self.store: Store = open_store(self.config.state_url)

    def night(self, day: int, *records: str) -> job.RunResult:
        # Another file every night, even with the same records (the same file is skipped).
        path = write(self.root, f"day{day:03d}.xml", campus(*records) + "\n" * day)
        moment = START + dt.timedelta(days=day)
        os.utime(path, (moment.timestamp() - 600, moment.timestamp() - 600))
        return job.run(self.store, self.feed, path, now=moment)

    def sent(self, result: job.RunResult) -> dict[str, Any]:
        return {} if result.batch is None else read_delta(result.batch.file)


@pytest.fixture
def feed_on_a_clock(db_url: str, tmp_path: Path) -> Iterator[Callable[..., Feed]]:
    made: list[Feed] = []

    def make(**settings: Any) -> Feed:
        made.append(Feed(tmp_path, db_url, settings))
        return made[-1]

    yield make
    for feed in made:
        feed.store.close()


def student(pid: str, group: str = "UGRD") -> str:
    return record(pid).replace("<user_group>UGRD<", f"<user_group>{group}<")


def test_grace_days_keep_groups_and_the_departure_note(
    feed_on_a_clock: Callable[..., Feed],
) -> None:
    feed = feed_on_a_clock(
        departure={
            "grace_days": 3,
            "keep_groups": ["RETIREE"],
            "note": "No longer in the SIS feed as of {date}",
            "max_departures": "100%",
        }
    )

    def night(day: int, *pids: str) -> tuple[job.RunResult, set[str]]:
        # Z changes every night, so no two extracts have the same content.
        records = [student(pid, "RETIREE" if pid == "R" else "UGRD") for pid in pids]
        result = feed.night(day, *records, record("Z", name=f"Day{day}"))
        return result, set(feed.sent(result)) - {"Z"}

    night(0, "A", "B", "C", "R")
    # Day 1: A is away (summer), and R, a retiree now loaded elsewhere, is gone for good.
    day1, sent = night(1, "B", "C")
    assert (day1.counts.departed, day1.counts.absent, sent) == (0, 2, set())
    day2, sent = night(2, "B")  # C is away too
    assert (day2.counts.departed, day2.counts.absent, sent) == (0, 3, set())
    # Day 3: A is back within its grace, unchanged: quietly, nothing sent.
    day3, sent = night(3, "A", "B")
    assert (day3.counts.returned, day3.counts.absent, sent) == (0, 2, set())
    # Day 4: C has been away 3 days (last seen in day 1's extract): it departs, noted.
    day4, sent = night(4, "A", "B")
    assert (day4.counts.departed, day4.counts.absent, sent) == (1, 1, {"C"})
    notes = feed.sent(day4)["C"].findall("user_notes/user_note")
    assert [n.findtext("note_text") for n in notes] == [
        "No longer in the SIS feed as of 2027-01-08Z"
    ]
    assert notes[0].findtext("note_type") == "CIRCULATION"
    assert notes[0].findtext("user_viewable") == "false"
    assert feed.sent(day4)["C"].findtext("expiry_date") == "2027-01-08Z"
    # A is away again from day 5: its grace runs from day 4's extract.
    for day in (5, 6):
        result, sent = night(day, "B")
        assert (result.counts.departed, sent) == (0, set())
    day7, sent = night(7, "B")
    assert (day7.counts.departed, sent) == (1, {"A"})
    # The retiree is never expired by absence.
    day30, sent = night(30, "B")
    assert (day30.counts.departed, day30.counts.absent, sent) == (0, 1, set())
    # A returning departed patron is reinstated with its current record, and counted.
    day31, sent = night(31, "A", "B")
    assert (day31.counts.returned, sent) == (1, {"A"})


def test_a_note_alma_schema_rejects_is_a_config_error(
    db_url: str, write_config: Callable[..., Path]
) -> None:
    config = write_config(db_url, departure={"note": "x" * 2001})
    result = invoke(config, "status")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {config}: feeds.patrons.departure.note: must be 1-2000 characters (Alma's limit)\n"
    )


RULES = [
    {"name": "students", "match": {"user_group": ["UGRD", "GRAD"]}, "expiry": "term",
     "terms": ["05-31", "08-31", "12-31"], "grace_days": 14, "purge_after_days": 180},
    {"name": "faculty", "match": {"user_group": "FAC"}, "expiry": "today+400",
     "purge_after_days": 30},
    {"name": "emeriti", "match": {"user_group": "EMER"}, "expiry": "2099-12-31"},
]  # fmt: skip


def test_rules_compute_dates_and_show_names_the_rule(
    feed_on_a_clock: Callable[..., Feed], db_url: str, write_config: Callable[..., Path]
) -> None:
    feed = feed_on_a_clock(expiry={"rules": RULES, "renew_within_days": 30})
    everybody = (student("U"), student("F", "FAC"), student("E", "EMER"), student("X", "STAFF"))
    day0 = feed.night(0, *everybody)
    sent = feed.sent(day0)
    assert sent["U"].findtext("expiry_date") == "2027-06-14Z"  # 05-31 + 14 days
    assert sent["U"].findtext("purge_date") == "2027-12-11Z"
    assert sent["F"].findtext("expiry_date") == "2028-02-08Z"  # 2027-01-04 + 400
    assert sent["F"].findtext("purge_date") == "2028-03-09Z"
    assert sent["E"].findtext("expiry_date") == "2099-12-31Z"
    assert sent["E"].findtext("purge_date") == "2033-06-30Z"  # the extract's
    assert sent["X"].findtext("expiry_date") == "2032-06-30Z"  # no rule: the extract's
    # The next nights the faculty's date rolls on, but only later: nothing is sent.
    for day in (1, 2):
        result = feed.night(day, *everybody)
        assert result.batch is None and result.counts.changed == 0
    config = write_config(db_url, feed={"expiry": {"rules": RULES}})
    at = ("--as-of", "2027-01-10")
    shown = invoke(config, "show", "U", *at, "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["expiry_rule"] == (
        "students: expiry term (05-31, 08-31, 12-31) + 14 days, purge +180 days"
    )
    xml = invoke(config, "show", "E", *at)
    assert xml.stdout.startswith("<!-- expiry rule emeriti: expiry 2099-12-31 -->\n<user>")
    plain = invoke(config, "show", "X", *at, "--format", "json")
    assert json.loads(plain.stdout)["expiry_rule"] is None


def test_a_rolling_rule_inside_the_renewal_window_warns(
    db_url: str, write_config: Callable[..., Path]
) -> None:
    rules = [{"name": "guests", "expiry": "today+7"}]
    config = write_config(db_url, feed={"expiry": {"renew_within_days": 30, "rules": rules}})
    result = invoke(config, "status")
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"Warning: feed patrons: {config}: feeds.patrons.expiry: rule 'guests' sets expiry "
        "today+7, within renew_within_days = 30: every patron is renewed every run\n"
    )


def test_renewals_and_refreshes_do_not_count_toward_the_guards(
    feed_on_a_clock: Callable[..., Feed],
) -> None:
    # Every patron's confirmed expiry is within the window on day 1: all renew at once.
    soon = "2027-01-20Z"
    feed = feed_on_a_clock(
        expiry={"renew_within_days": 30, "refresh_days": 2},
        departure={"max_changes": 0},
    )
    day0 = feed.night(0, *(record(pid).replace("2032-06-30Z", soon) for pid in IDS))
    assert day0.batch is not None
    later = [record(pid).replace("2032-06-30Z", "2028-01-05Z") for pid in IDS]
    renewed: set[str] = set()
    for day in range(1, 17):
        result = feed.night(day, *later)  # max_changes = 0 would refuse any change
        renewed |= {
            pid for pid, u in feed.sent(result).items() if "2028" in u.findtext("expiry_date")
        }
    assert renewed == set(IDS)
    with pytest.raises(GuardRefused):
        feed.night(17, *(r.replace("Doe", "Roe") for r in later))


# -- a forbidden character in one record ------------------------------------------------------


@pytest.mark.parametrize("bad", ["D\x01oe", "D&#x1A;oe"])
def test_a_control_character_in_one_name_holds_back_nobody_else(
    bad: str, db_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(db_url)
    spoilt = record("B").replace("<last_name>Doe", f"<last_name>{bad}")
    day0 = write(tmp_path, "d0.xml", campus(record("A"), spoilt, record("C")))
    out = run_json(config, str(day0))
    assert out["counts"]["new"] == 3
    assert out["checks"]["findings"] == [
        {
            "code": "char-forbidden",
            "policy": "fix",
            "match_id": "B",
            "source": str(day0),
            "line": 18,
            "message": "last_name: removed U+" + ("0001" if "\x01" in bad else "001A"),
        }
    ]
    sent = read_delta(Path(out["batch"]["file"]))
    assert set(sent) == {"A", "B", "C"} and sent["B"].findtext("last_name") == "Doe"
    # Fixed every day without counting as a change.
    again = run_json(
        config, str(write(tmp_path, "d1.xml", campus(record("A"), spoilt, record("C")) + "\n"))
    )
    assert again["counts"]["unchanged"] == 3 and again["batch"] is None


def test_a_control_character_held_back_by_policy(
    db_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(db_url, checks={"policy": {"char-forbidden": "error"}})
    spoilt = record("B").replace("<last_name>Doe", "<last_name>D\x01oe")
    out = run_json(config, str(write(tmp_path, "d0.xml", campus(record("A"), spoilt))), exit_code=4)
    assert [(h["match_id"], h["reason"]) for h in out["held_back"]] == [
        ("B", "failed checks: char-forbidden")
    ]
    assert set(read_delta(Path(out["batch"]["file"]))) == {"A"}


def test_a_control_character_outside_any_record_stops_the_file(
    db_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(db_url)
    text = campus(record("A"), record("B")).replace("</users>", "\x01</users>")
    path = write(tmp_path, "d0.xml", text)
    result = invoke(config, "run", str(path))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {path}: line 27, column 1: PCDATA invalid Char value 1 (U+0001 is a character "
        "XML 1.0 forbids; remove it in the SIS export)\n"
    )


def test_check_warns_when_an_extract_s_dates_look_like_a_heartbeat(
    db_url: str, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(db_url, feed={"expiry": {"renew_within_days": 30}})
    soon = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=7)).isoformat()
    path = write(tmp_path, "d0.xml", everyone(lambda r: r.replace("2032-06-30", soon)))
    result = invoke(config, "check", str(path))
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"Warning: {path}: 10 of 10 records expire within 30 day(s) of today; the dates look "
        "like a heartbeat (within renew_within_days = 30: they would be renewed every run)\n"
    )
    # A year ahead is no heartbeat.
    assert invoke(config, "check", str(write(tmp_path, "d1.xml", everyone()))).stderr == ""
