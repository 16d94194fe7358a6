"""A small world for ledger tests: deltasync, a remote folder and a simulated Alma, on a clock."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import generate_extract
from almasim import AlmaApiServer, AlmaSimulator, FolderSource
from lxml import etree

from deltasync import job
from deltasync.alma_api import AlmaJobs
from deltasync.canonical import Recipe
from deltasync.config import Config, FeedConfig, parse
from deltasync.delivery import Transport
from deltasync.source.fullparse import read_records
from deltasync.store import Store, open_store
from deltasync.userxml import parse_alma_date, strip_formatting

START = dt.datetime(2027, 1, 4, 11, 0, tzinfo=dt.UTC)  # 05:00 in Chicago
API_KEY = "test-api-key"


@dataclass
class World:
    """deltasync runs once a day at START + day; Alma runs whenever a test says."""

    root: Path
    url: str
    confirm: str = "pickup"
    patrons: int = 60
    seed: int = 1
    departure: dict[str, Any] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    extracts: Path | None = None
    """Where generated extracts are kept; worlds with the same seed and rates may share it."""
    settings: dict[str, Any] = field(default_factory=dict)
    """More top-level configuration ([notify], report_html …)."""
    start: dt.datetime = START
    """Day 0's run."""
    status_date: generate_extract.StatusDate = "daily"
    """Each record's status_date: the day of the extract (every record's bytes differ from
    the day before's: read in full the first day its date moves, by its undated digest
    after), or the day its current version started (unchanged records repeat byte for byte:
    read by their raw digests)."""

    def __post_init__(self) -> None:
        self.remote = self.root / "alma-inbox"
        self.remote.mkdir(parents=True, exist_ok=True)
        feed: dict[str, Any] = {
            "timezone": "America/Chicago",
            "ignore": ["status_date"],
            "transport": "dir",
            "remote_dir": str(self.remote),
            "confirm": self.confirm,
            "departure": {"max_departures": "100%", "max_changes": "100%", **self.departure},
        }
        data: dict[str, Any] = {
            "state": {"url": self.url},
            "feeds": {"patrons": feed},
            **self.settings,
        }
        if self.confirm == "alma-api":
            feed["job_id"] = "S20000"
            data["alma"] = {"base_url": "http://127.0.0.1:1", "api_key_env": "ALMA_TEST_KEY"}
        self.config: Config = parse(data, self.root / "config.toml", {})
        self.feed: FeedConfig = self.config.feed(None)
        self.store: Store = open_store(self.config.state_url)
        self.alma = AlmaSimulator(FolderSource(self.remote))
        self.api: AlmaApiServer | None = None
        self.jobs: AlmaJobs | None = None
        if self.confirm == "alma-api":
            self.api = AlmaApiServer(self.alma, API_KEY)
            self.api.start()
            assert self.config.alma is not None
            api_config = type(self.config.alma)(self.api.base_url, "ALMA_TEST_KEY")
            self.jobs = AlmaJobs(api_config, "S20000", timeout=5, attempts=2, backoff_seconds=0.01)
        self.day = -1

    def close(self) -> None:
        self.store.close()
        if self.api is not None:
            self.api.close()

    def now(self, day: int, hours: float = 0) -> dt.datetime:
        return self.start + dt.timedelta(days=day, hours=hours)

    def extract(self, day: int) -> Path:
        folder = self.extracts or self.root / "incoming"
        dated = "" if self.status_date == "daily" else f"-{self.status_date}"
        path = folder / f"p{self.patrons}-s{self.seed}{dated}-day{day:03d}.xml"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            generate_extract.write_extract(
                path,
                patrons=self.patrons,
                day=day,
                seed=self.seed,
                shuffle=True,
                status_date=self.status_date,
                **self.rates,
            )
        return path

    def run(
        self,
        day: int,
        hours: float = 0,
        *,
        transport: Transport | None = None,
        checkpoint: job.Checkpoint | None = None,
    ) -> job.RunResult:
        """deltasync's scheduled run for ``day``."""
        self.day = day
        return job.run(
            self.store,
            self.feed,
            self.extract(day),
            alma=self.config.alma,
            now=self.now(day, hours),
            jobs=self.jobs,
            transport=transport,
            checkpoint=checkpoint,
        )

    def alma_runs(self, day: int, hours: float = 6, outcome: str = "success") -> Any:
        return self.alma.run_job(self.now(day, hours), outcome=outcome)

    def already_taken(self) -> list[dict[str, Any]]:
        return [e for e in self.alma.rejections if "already taken" in e["description"]]

    def mismatches(self, day: int) -> list[str]:
        """How Alma's users differ from day ``day``'s extract (departed ones must be expired)."""
        recipe = Recipe(self.feed.ignore)
        expected = {
            r.element.findtext("primary_id", "").lower(): recipe.digest(r.element)
            for r in read_records(self.extract(day))
        }
        problems = []
        held = {key: user for key, user in self.alma.users.items()}
        for key, digest in expected.items():
            user = held.get(key)
            if user is None:
                problems.append(f"{key}: missing in Alma")
                continue
            element = strip_formatting(etree.fromstring(user.xml))
            if recipe.digest(element) != digest:
                problems.append(f"{key}: Alma holds another record")
        policy_day = self.now(day).astimezone(self.feed.timezone).date()
        for key, user in held.items():
            if key in expected:
                continue
            expiry = parse_alma_date(user.fields.get("expiry_date"))
            if expiry is None or expiry > policy_day:
                problems.append(f"{key}: departed but expires {expiry} in Alma")
        return problems
