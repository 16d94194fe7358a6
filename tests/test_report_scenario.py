"""Twelve nights of a feed, told to people: a real SMTP server and a real HTTP listener get
the notices of the nights that need attention (an Alma rejection, a record held back for three
days, an aborted Alma job, a broken extract, a delivery outage, a truncated extract the guard
refuses) and nothing on the quiet ones; the HTML report of those nights is rendered by a real
headless Chromium, its charts checked in the screenshot and its numbers in the DOM against
the store; and no patron's name or e-mail address appears in any of it."""

from __future__ import annotations

import datetime as dt
import html as html_module
import json
import os
import re
import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import generate_extract
import pytest
from helpers import invoke
from lxml import etree
from lxml import html as lxml_html
from notices import Mail, Post, SmtpServer, WebhookServer
from sqlalchemy import func, select
from world import API_KEY, World

from deltasync import job
from deltasync.cli import logs
from deltasync.errors import DeltasyncError
from deltasync.report import log as run_log
from deltasync.report import reads
from deltasync.report import run as run_report
from deltasync.report.after import after_run
from deltasync.store import batches as led
from deltasync.store import tables as tb
from deltasync.store.feeds import find_feed

PATRONS = 60
DAYS = 12
CHROMIUM_ENV = "DELTASYNC_TEST_CHROMIUM"
REQUIRE_CHROMIUM_ENV = "DELTASYNC_TEST_REQUIRE_CHROMIUM"
SCREENSHOT_ENV = "DELTASYNC_SAVE_REPORT_SCREENSHOT"
"""Set to a path to keep the screenshot (docs/report.png is made so)."""
SECRET = "/hooks/T0001/B0002/s3cr3t"


@dataclass
class Night:
    """One night: what ran, and how it ended."""

    day: int
    outcomes: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    world: World
    root: Path
    smtp: SmtpServer
    hook: WebhookServer
    log: Path
    config: Path
    nights: list[Night]
    rejected_id: str
    held_id: str
    mails_by_day: dict[int, list[Mail]]
    posts_by_day: dict[int, list[Post]]


def _start() -> dt.datetime:
    """Day 0 twelve days ago at 05:00 in Chicago, so the last night is yesterday's."""
    today = dt.datetime.now(dt.UTC).replace(hour=11, minute=0, second=0, microsecond=0)
    return today - dt.timedelta(days=DAYS)


def _break_last_name(path: Path, match_id: str) -> None:
    """Drop one patron's last name: a mandatory field, so the checks hold the record back."""
    text = path.read_text(encoding="utf-8")
    start = text.index(f"<primary_id>{match_id}</primary_id>")
    begin = text.rindex("<user>", 0, start)
    end = text.index("</user>", start)
    record = re.sub(r"<last_name>[^<]*</last_name>", "", text[begin:end], count=1)
    path.write_text(text[:begin] + record + text[end:], encoding="utf-8")


def _cli_config(world: World, root: Path) -> Path:
    """The world's feed as a config file, for the CLI's `report`."""
    path = root / "config.toml"
    path.write_text(
        f"""[state]
url = "{world.url}"
[alma]
base_url = "http://127.0.0.1:1"
api_key_env = "ALMA_TEST_KEY"
[feeds.patrons]
timezone = "America/Chicago"
ignore = ["status_date"]
transport = "dir"
remote_dir = "{world.remote}"
confirm = "alma-api"
job_id = "S20000"
[feeds.patrons.departure]
max_departures = "20%"
max_changes = "50%"
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("report-scenario")
    saved_key = os.environ.get("ALMA_TEST_KEY")
    os.environ["ALMA_TEST_KEY"] = API_KEY
    smtp = SmtpServer(root / "smtp").start()
    hook = WebhookServer().start()
    notify = {
        "email": {
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "security": "none",
            "from": "deltasync@example.edu",
            "to": ["library-systems@example.edu"],
        },
        "webhook": {"url": hook.url + SECRET},
    }
    world = World(
        root / "world",
        f"sqlite:///{root / 'state' / 'deltasync.db'}",
        confirm="alma-api",
        patrons=PATRONS,
        departure={"max_departures": "20%", "max_changes": "50%"},
        settings={"notify": notify},
        start=_start(),
    )
    log = root / "run.log"
    logs.configure(log, 0)
    rejected_id = generate_extract.truth(patrons=PATRONS, day=2)["changed"][0]
    present = generate_extract.present_ids(patrons=PATRONS, day=3)
    held_id = next(p for p in present if p != rejected_id)
    nights: list[Night] = []
    mails: dict[int, list[Mail]] = defaultdict(list)
    posts: dict[int, list[Post]] = defaultdict(list)

    def night(day: int, *, extract: Path | None = None, hours: float = 0) -> str:
        """One run as the CLI does it: the run, its report, the notices; the outcome."""
        before_mails, before_posts = len(smtp.received), len(hook.posts)
        path = extract or world.extract(day)
        run_log.started("patrons", "run", path)
        try:
            result = job.run(
                world.store,
                world.feed,
                path,
                alma=world.config.alma,
                now=world.now(day, hours),
                jobs=world.jobs,
            )
        except DeltasyncError as exc:
            report = run_report.for_failure(world.store, world.feed, "run", exc)
        else:
            report = run_report.for_result(world.store, world.feed, result, "run")
        assert after_run(world.store, world.config, world.feed, report) == []
        expected = 0 if report.outcome == run_report.Outcome.OK else 1
        mails[day] += smtp.wait_for(before_mails + expected)[before_mails:]
        posts[day] += hook.posts[before_posts:]
        return report.outcome.value

    try:
        for day in range(DAYS):
            tonight = Night(day)
            nights.append(tonight)
            if day in (3, 4, 5):  # a record that fails its checks until the SIS fixes it
                _break_last_name(world.extract(day), held_id)
            if day == 7:  # a transfer cut the file short: the run stops, nothing changes
                broken = world.root / "incoming" / "broken-day007.xml"
                broken.write_text(world.extract(6).read_text()[:5000], encoding="utf-8")
                tonight.outcomes.append(night(day, extract=broken))
            if day == 8:  # the share Alma reads is not mounted
                world.remote.rename(world.remote.with_name("alma-inbox-unmounted"))
            if day == 10:  # a truncated export: the guard refuses it
                short = world.root / "incoming" / "truncated-day010.xml"
                full = world.extract(9).read_text()
                short.write_text(full[: full.index("<user>", len(full) // 5)] + "</users>\n")
                tonight.outcomes.append(night(day, extract=short))
            tonight.outcomes.append(night(day, hours=1 if tonight.outcomes else 0))
            if day == 8:
                world.remote.with_name("alma-inbox-unmounted").rename(world.remote)
            if day == 2:  # staff made this patron by hand: Alma rejects the SIS record
                world.alma.add_internal_user(rejected_id)
            world.alma_runs(day, outcome="aborted" if day == 5 else "success")
        yield Scenario(
            world,
            root,
            smtp,
            hook,
            log,
            _cli_config(world, root),
            nights,
            rejected_id,
            held_id,
            dict(mails),
            dict(posts),
        )
    finally:
        logs.reset()
        world.close()
        smtp.stop()
        hook.stop()
        if saved_key is None:
            os.environ.pop("ALMA_TEST_KEY", None)
        else:
            os.environ["ALMA_TEST_KEY"] = saved_key


def test_the_nights_that_need_a_person_send_notices_and_quiet_ones_do_not(
    scenario: Scenario,
) -> None:
    outcomes = {n.day: n.outcomes for n in scenario.nights}
    assert outcomes == {
        0: ["ok"],
        1: ["ok"],
        2: ["ok"],
        3: ["attention"],  # Alma rejected a patron; a record held back
        4: ["attention"],
        5: ["attention"],
        6: ["attention"],  # Alma's job aborted last night
        7: ["error", "ok"],  # a cut-off extract, then the right one
        8: ["attention"],  # remote_dir not mounted
        9: ["ok"],
        10: ["refused", "ok"],  # a truncated extract, then the right one
        11: ["ok"],
    }
    mails, posts = scenario.mails_by_day, scenario.posts_by_day
    quiet = [0, 1, 2, 9, 11]
    assert all(not mails.get(day) and not posts.get(day) for day in quiet)
    subjects = {day: [m.subject for m in found] for day, found in mails.items() if found}
    assert sorted(subjects) == [3, 4, 5, 6, 7, 8, 10]
    prefix = "deltasync patrons: "
    assert subjects[3][0].startswith(
        prefix + "ATTENTION - Alma rejected 1 patron(s) in batch 3; 1 record(s) held back ("
    )
    for day in (4, 5):  # still held back (and the rejected patron changed again, rejected again)
        assert subjects[day][0].startswith(prefix + "ATTENTION - ")
        assert "1 record(s) held back (" in subjects[day][0]
    assert re.match(prefix + r"ATTENTION - batch \d+ failed in Alma \(", subjects[6][0])
    assert subjects[7][0].startswith(prefix + "ERROR - the run stopped: broken-day007.xml: ")
    assert re.match(
        prefix + r"ATTENTION - batch \d+ not delivered; remote_dir unreachable \(", subjects[8][0]
    )
    assert re.match(
        prefix + r"REFUSED - truncated-day010\.xml: \d+ of \d+ patrons would depart \(",
        subjects[10][0],
    )
    assert all(len(found) == 1 for found in subjects.values()), subjects
    # The e-mail of day 3 names both patrons by match ID, by code.
    plain = mails[3][0].part("plain")
    assert f"  mandatory-missing (1): {scenario.held_id}\n" in plain
    assert (
        f"Rejected by Alma\n  User is not external (1): {scenario.rejected_id} (batch 3)\n" in plain
    )
    assert "Open the SIS job's report in Alma" in mails[6][0].part("plain")
    # The webhook got the same nights, each with the run's whole JSON.
    for day, found in posts.items():
        if not found:
            continue
        [post] = found
        assert post.path == SECRET
        body = post.json()
        assert body["text"].splitlines()[0] == subjects[day][0]
        assert body["deltasync"]["outcome"] in ("attention", "error", "refused")
    [failed] = posts[6][0].json()["deltasync"]["failed"]
    assert failed["status"] == "failed" and f"batch {failed['seq']} failed" in subjects[6][0]


def test_the_log_reconstructs_the_nights(scenario: Scenario) -> None:
    text = scenario.log.read_text(encoding="utf-8")
    assert text.count("deltasync.run: feed patrons: run started") == 14
    assert f"deltasync.run: feed patrons: held back {scenario.held_id}: mandatory-missing" in text
    assert re.search(
        r"deltasync\.run: feed patrons: batch \d+ failed: Alma job run \d+: ABORTED", text
    )
    assert "ERROR   " in text and "run stopped (exit 1)" in text
    assert "run refused (exit 3)" in text
    assert f"Alma rejected {scenario.rejected_id}: User is not external" in text
    assert text.count("deltasync.notify: feed patrons: notice sent: e-mail") == 7


def _names_and_addresses(extracts: list[Path]) -> set[str]:
    found: set[str] = set()
    for path in extracts:
        tree = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True))
        for tag in ("first_name", "middle_name", "last_name", "email_address"):
            found |= {e.text.strip() for e in tree.iter(tag) if e.text and e.text.strip()}
    return found


def _report_html(scenario: Scenario) -> Path:
    out = scenario.root / "report.html"
    if not out.exists():
        result = invoke(scenario.config, "report", "--days", "30", "--html", str(out))
        assert result.exit_code == 0, result.output
        assert result.stdout == f"wrote {out}: 1 feed(s), 30 day(s)\n"
    return out


def test_no_personal_data_beyond_match_ids(scenario: Scenario) -> None:
    extracts = sorted((scenario.world.root / "incoming").glob("p60-*.xml"))
    secrets = _names_and_addresses(extracts)
    assert len(secrets) > 50
    texts = {"log": scenario.log.read_text(encoding="utf-8")}
    for day, found in scenario.mails_by_day.items():
        for n, mail in enumerate(found):
            texts[f"mail {day}.{n}"] = mail.part("plain")
            texts[f"mail {day}.{n} html"] = html_module.unescape(mail.part("html"))
            texts[f"mail {day}.{n} raw"] = mail.raw.decode("utf-8", "replace")
    for day, posts in scenario.posts_by_day.items():
        for n, post in enumerate(posts):
            texts[f"webhook {day}.{n}"] = json.dumps(post.json(), ensure_ascii=False)
    texts["html"] = html_module.unescape(_report_html(scenario).read_text(encoding="utf-8"))
    for where, content in texts.items():
        for secret in secrets:
            pattern = rf"(?<![\w@.-]){re.escape(secret)}(?![\w@-])"
            assert not re.search(pattern, content), f"{secret!r} in {where}"
    # The check can fail: match IDs are there, where they belong.
    assert scenario.held_id in texts["mail 3.0"] and scenario.rejected_id in texts["html"]


def _store_numbers(scenario: Scenario) -> dict[str, Any]:
    tz = scenario.world.feed.timezone
    with scenario.world.store.read() as conn:
        row = find_feed(conn, "patrons")
        assert row is not None
        days: dict[str, Counter[str]] = defaultdict(Counter)
        for e in conn.execute(select(tb.extract_t).where(tb.extract_t.c.feed_id == row.id)):
            day = e.ingested_at.astimezone(tz).date().isoformat()
            for kind in ("new", "changed", "returned", "departed", "held_back"):
                days[day][kind] += getattr(e, kind)
        batches = {b.seq: (b.status, b.records) for b in reads.batches(conn, row.id)}
        present = conn.execute(
            select(func.count())
            .select_from(tb.patron_t)
            .where(tb.patron_t.c.feed_id == row.id, tb.patron_t.c.state == tb.PatronState.PRESENT)
        ).scalar_one()
        awaiting = led.awaiting_confirmation(conn, row.id)
        in_flight = len(led.listed(conn, row.id, tb.OPEN))
    return {
        "days": days,
        "batches": batches,
        "present": present,
        "awaiting": awaiting,
        "in_flight": in_flight,
    }


def _chromium() -> str:
    found = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium")
    if not found:
        if os.environ.get(REQUIRE_CHROMIUM_ENV):
            pytest.fail(f"{CHROMIUM_ENV} is not set but the browser test is required")
        pytest.skip("chromium not installed (./scripts/test installs it)")
    return found


def _browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Headless Chromium on a local file: no network, no sandbox (root), a fresh profile."""
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--force-color-profile=srgb",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done


def test_chromium_renders_the_report_and_its_numbers_match_the_store(
    scenario: Scenario, tmp_path: Path
) -> None:
    from PIL import Image

    page = _report_html(scenario)
    assert page.stat().st_mode & 0o777 == 0o600
    source = page.read_text(encoding="utf-8")
    # Self-contained: nothing to fetch, no script.
    assert "<script" not in source and "http://" not in source and "https://" not in source
    assert not list(page.parent.glob(".report.html.*"))  # no temporary left behind

    dom = _browse(page, tmp_path / "profile-dom", "--dump-dom").stdout.decode("utf-8")
    tree = lxml_html.fromstring(dom)
    numbers = _store_numbers(scenario)
    [feed] = tree.xpath('//section[@data-feed="patrons"]')
    # The numbers of the table and of the chart's bars are the store's, day by day.
    table = {
        row.get("data-date"): {
            td.get("data-kind"): int(td.text) for td in row.xpath("td[@data-kind]")
        }
        for row in feed.xpath('.//table[@class="daily"]//tr[@data-date]')
    }
    kinds = ("new", "changed", "returned", "departed", "held_back")
    expected = {day: {k: counts[k] for k in kinds} for day, counts in numbers["days"].items()}
    assert table == expected
    bars: dict[str, Counter[str]] = defaultdict(Counter)
    for rect in feed.xpath('.//figure[@data-chart="daily"]//*[local-name()="rect"][@data-kind]'):
        bars[rect.get("data-date")][rect.get("data-kind")] += int(rect.get("data-count"))
    assert {d: {k: n for k, n in c.items() if n} for d, c in expected.items()} == {
        d: dict(c) for d, c in bars.items()
    }
    assert feed.xpath('.//*[@data-limit="max_departures"]')  # the guard is drawn
    batches = {}
    for row in feed.xpath('.//table[@class="batches"]//tr[@data-batch]'):
        [records] = row.xpath("td[@data-field='records']")
        batches[int(row.get("data-batch"))] = (row.get("data-status"), int(records.text))
    assert batches == numbers["batches"]
    assert {"confirmed", "failed", "superseded"} <= {status for status, _n in batches.values()}
    state = feed.xpath(".//div[@data-level]")[0]
    field_text = {
        e.get("data-field"): (e.text or "").strip() for e in state.xpath(".//*[@data-field]")
    }
    assert int(field_text["present"]) == numbers["present"]
    assert int(field_text["awaiting"]) == numbers["awaiting"]
    assert int(field_text["in-flight"]) == numbers["in_flight"]
    flagged = [
        (r.get("data-match-id"), r.get("data-kind"), r.get("data-code"))
        for r in feed.xpath('.//table[@class="flagged"]//tr[@data-match-id]')
    ]
    assert flagged == [(scenario.rejected_id, "rejected", "User is not external")]
    codes = feed.xpath('.//figure[@data-chart="codes"]//*[local-name()="rect"][@data-code]')
    held = sum(int(r.get("data-count")) for r in codes if r.get("data-code") == "mandatory-missing")
    assert held == 3  # three nights

    shot = tmp_path / "report.png"
    _browse(page, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1100,3200")
    image = Image.open(shot).convert("RGB")
    data = image.tobytes()
    colours = Counter(zip(data[0::3], data[1::3], data[2::3], strict=True))
    drawn = {
        # daily bars, the guard lines, the batch timeline, the codes chart
        "new": (0x4C, 0x78, 0xA8),
        "changed": (0x9D, 0x75, 0xC7),
        "departed": (0xF5, 0x85, 0x18),
        "held back": (0xE4, 0x57, 0x56),
        "max_departures": (0xB3, 0x58, 0x06),
        "waiting for pickup": (0xEE, 0xCA, 0x3B),
        "confirmed": (0x2E, 0x7D, 0x32),
        "failed": (0xD6, 0x27, 0x28),
        "taken back": (0x7F, 0x7F, 0x7F),
        "code": (0x8C, 0x6D, 0x31),
    }
    missing = {name: colours[rgb] for name, rgb in drawn.items() if colours[rgb] < 12}
    assert not missing, f"not drawn (pixels of each colour): {missing}"
    white = colours[(255, 255, 255)]
    assert white < 0.97 * image.width * image.height  # a page, not a blank
    if os.environ.get(SCREENSHOT_ENV):
        top = image.crop((0, 0, image.width, min(image.height, 1500)))
        top.save(os.environ[SCREENSHOT_ENV], optimize=True)
