"""Hundreds of nights of a SIS that stamps every patron with today + 365, against Alma.

The done-when of issue 12: with ``renew_within_days = 30`` no guard trips, the daily delta is
the real churn plus about N/335 renewals, no present patron's expiry in Alma ever falls
before the day, and every departed patron is expired once; with ``refresh_days = 28`` every
present patron is sent again once per 28 days. The runs go through the job's public steps,
the files through a folder that the Alma simulator reads.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from almasim import AlmaSimulator, FolderSource
from helpers import ADDRESS, EMAIL, read_delta
from sqlalchemy import select

from deltasync import job
from deltasync.config import parse
from deltasync.store import open_store
from deltasync.store.tables import patron_t, version_t
from deltasync.userxml import parse_alma_date

START = dt.datetime(2027, 1, 4, 11, 0, tzinfo=dt.UTC)  # 05:00 in Chicago


def sis_record(pid: str, name: str, today: dt.date, group: str = "UGRD") -> str:
    """The SIS's record: dates stamped from today, status_date today, roles it should not send."""
    expiry = today + dt.timedelta(days=365)
    purge = expiry + dt.timedelta(days=365)
    return (
        "<user><record_type>PUBLIC</record_type>"
        f"<primary_id>{pid}</primary_id><last_name>{name}</last_name>"
        f"<user_group>{group}</user_group>"
        f"<expiry_date>{expiry}Z</expiry_date><purge_date>{purge}Z</purge_date>"
        f"<status_date>{today}Z</status_date>"
        "<account_type>EXTERNAL</account_type><status>ACTIVE</status>"
        f"<contact_info><addresses>{ADDRESS}</addresses>"
        f"<emails>{EMAIL.format(id=pid)}</emails></contact_info>"
        "<user_roles><user_role><status>ACTIVE</status><scope>MAIN</scope>"
        "<role_type>200</role_type></user_role></user_roles>"
        "</user>"
    )


@dataclass
class Campus:
    """The SIS: a population with daily churn (arrivals, leavers, changed names)."""

    root: Path
    url: str
    expiry: dict[str, Any]
    patrons: int = 100
    seed: int = 12
    present: dict[str, str] = field(default_factory=dict)
    """Match ID → last name (a new name is a real change)."""
    gone: dict[str, int] = field(default_factory=dict)
    """Match ID → the day it left."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.remote = self.root / "alma-inbox"
        self.remote.mkdir(parents=True)
        (self.root / "incoming").mkdir()
        data = {
            "state": {"url": self.url},
            "feeds": {
                "patrons": {
                    "timezone": "America/Chicago",
                    "transport": "dir",
                    "remote_dir": str(self.remote),
                    "expiry": self.expiry,
                }
            },
        }
        self.config = parse(data, self.root / "config.toml", {})
        self.feed = self.config.feed(None)
        self.store = open_store(self.config.state_url)
        self.alma = AlmaSimulator(FolderSource(self.remote))
        self.next_id = 0
        for _ in range(self.patrons):
            self._arrive()
        self.churn: Counter[str] = Counter()
        self.expired: Counter[str] = Counter()
        """Match ID → expiration records sent (expiry on the day it was sent)."""
        self.results: list[job.RunResult] = []

    def _arrive(self) -> None:
        self.present[f"P{self.next_id:05d}"] = "Doe"
        self.next_id += 1

    def today(self, day: int) -> dt.date:
        return (START + dt.timedelta(days=day)).astimezone(self.feed.timezone).date()

    def night(self, day: int) -> job.RunResult:
        """The SIS changes (from day 1), exports; deltasync runs; Alma's job loads."""
        if day:
            for pid in list(self.present):
                roll = self.rng.random()
                if roll < 0.001:
                    del self.present[pid]
                    self.gone[pid] = day
                elif roll < 0.003:
                    self.present[pid] = f"Name{day}"
            if self.rng.random() < 0.1:
                self._arrive()
        today = self.today(day)
        body = "".join(sis_record(pid, name, today) for pid, name in self.present.items())
        path = self.root / "incoming" / f"day{day:03d}.xml"
        path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<users>{body}</users>\n')
        moment = START + dt.timedelta(days=day)
        os.utime(path, (moment.timestamp() - 600, moment.timestamp() - 600))
        result = job.run(self.store, self.feed, path, now=moment)
        if result.batch is not None:  # read now: retention deletes old delta files
            for pid, user in read_delta(result.batch.file).items():
                if pid in self.gone and parse_alma_date(user.findtext("expiry_date")) == today:
                    self.expired[pid] += 1
        self.alma.run_job(moment + dt.timedelta(hours=6))
        self.results.append(result)
        return result

    def lapsed(self, day: int) -> list[str]:
        """Present patrons whose expiry in Alma falls before the day (after Alma's job)."""
        today = self.today(day)
        found = []
        for pid in self.present:
            user = self.alma.user(pid)
            expiry = None if user is None else parse_alma_date(user.fields.get("expiry_date"))
            if expiry is None or expiry < today:
                found.append(pid)
        return found

    def confirmed_before(self, day: int) -> list[str]:
        """Present patrons whose Alma-confirmed expiry in the store falls before the day."""
        today = self.today(day)
        with self.store.read() as conn:
            rows = conn.execute(select(patron_t.c.match_id, patron_t.c.confirmed_expiry)).all()
        confirmed = dict(rows)
        return [
            pid
            for pid in self.present
            if pid in confirmed and confirmed[pid] is not None and confirmed[pid] < today
        ]

    def versions(self, kind: str) -> dict[str, list[dt.date]]:
        """Match ID → the days a version of this kind was made."""
        p, v = patron_t.c, version_t.c
        with self.store.read() as conn:
            rows = conn.execute(
                select(p.match_id, v.first_seen)
                .join(version_t, v.patron_id == p.id)
                .where(v.kind == kind)
                .order_by(v.id)
            ).all()
        found: dict[str, list[dt.date]] = defaultdict(list)
        for pid, first_seen in rows:
            found[pid].append(first_seen.astimezone(self.feed.timezone).date())
        return found


@pytest.mark.slow
def test_a_year_and_more_of_rolling_dates_with_renewal(tmp_path: Path) -> None:
    # SQLite only: 400 nights take about two minutes; the refresh scenario below and the
    # tests of test_expiry.py run the same steps on PostgreSQL too.
    url = f"sqlite:///{tmp_path / 'state.db'}"
    campus = Campus(tmp_path, url, {"renew_within_days": 30})
    days = 400
    try:
        for day in range(days):
            result = campus.night(day)  # a guard that trips raises GuardRefused
            counts = result.counts
            if day:
                campus.churn["new"] += counts.new
                campus.churn["changed"] += counts.changed
                campus.churn["departed"] += counts.departed
                campus.churn["renewed"] += counts.renewed
                campus.churn["sent"] += 0 if result.batch is None else result.batch.records
                # The daily stamp is no change: only real changes and renewals go out.
                assert counts.expiry_moves == 0 and counts.expiry_cuts == 0
            assert campus.lapsed(day) == [], day
            assert campus.confirmed_before(day) == [], day
        real = campus.churn["new"] + campus.churn["changed"] + campus.churn["departed"]
        population = len(campus.present)
        assert campus.churn["renewed"] > 0
        # On average no more than the real churn plus N/335 renewals a day.
        assert campus.churn["sent"] / (days - 1) <= (real / (days - 1)) + population / 335
        assert campus.churn["sent"] == real + campus.churn["renewed"]
        # Renewals of the day-0 cohort spread over the window rather than one day.
        renewed = campus.versions("renewed")
        first = Counter(dates[0] for dates in renewed.values())
        assert len(first) >= 20 and max(first.values()) <= population // 10
        # Every renewed patron got a new expiry a year ahead of its renewal day.
        for pid, dates in renewed.items():
            user = campus.alma.user(pid)
            if pid in campus.present and user is not None:
                expiry = parse_alma_date(user.fields.get("expiry_date"))
                assert expiry is not None and expiry >= dates[-1] + dt.timedelta(days=365)
        # Departed patrons were expired once, and Alma holds them expired.
        assert campus.gone
        assert campus.expired == Counter(dict.fromkeys(campus.gone, 1))
        for pid, left in campus.gone.items():
            user = campus.alma.user(pid)
            assert user is not None
            assert parse_alma_date(user.fields.get("expiry_date")) == campus.today(left)
    finally:
        campus.store.close()


@pytest.mark.slow
def test_rolling_refresh_resends_every_present_patron_once_per_28_days(
    db_url: str, tmp_path: Path
) -> None:
    campus = Campus(tmp_path, db_url, {"renew_within_days": 30, "refresh_days": 28})
    days = 120
    try:
        total = 0
        for day in range(days):
            result = campus.night(day)
            if day:
                # About 1/28 of the patrons a day (by hash: it varies), counted apart.
                assert result.counts.refreshed <= 3 * (len(campus.present) // 28) + 3
                total += result.counts.refreshed
            assert campus.lapsed(day) == [], day
        share = total / (days - 1) / len(campus.present)
        assert 0.7 / 28 <= share <= 1.3 / 28
        refreshed = campus.versions("refreshed")
        real = campus.versions("changed")
        for pid in campus.present:
            if pid not in refreshed:
                continue
            dates = refreshed[pid]
            gaps = {(b - a).days for a, b in zip(dates, dates[1:], strict=False)}
            # Exactly every 28 days; 56 only when a real change went out on the day between.
            assert gaps <= {28, 56}, (pid, dates)
            if 56 in gaps:
                assert real.get(pid), (pid, dates)
        # Every patron present since day 0 was refreshed in each full cycle.
        since_start = [pid for pid in campus.present if int(pid[1:]) < campus.patrons]
        for pid in since_start:
            assert len(refreshed.get(pid, [])) + len(real.get(pid, [])) >= (days - 1) // 28
        # Nothing but the SIS's records went out: Alma holds today's record of everyone.
        today = campus.today(days - 1)
        for pid, name in campus.present.items():
            user = campus.alma.user(pid)
            assert user is not None and user.fields.get("last_name") == name
            assert parse_alma_date(user.fields.get("expiry_date")) >= today
    finally:
        campus.store.close()
