"""`deltasync report` (text, --json, --html) and report_html written after every run."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import invoke, record, run_json, users, write


def config_with(config: Path, top: str = "", feed: str = "") -> Path:
    """Add top-level lines (before [state]) and lines to the feed's table."""
    text = config.read_text(encoding="utf-8")
    if feed:
        text = text.replace("[feeds.patrons]\n", f"[feeds.patrons]\n{feed}\n", 1)
    config.write_text(top + "\n" + text, encoding="utf-8")
    return config


def test_report_text_and_json_tell_where_the_feed_stands(
    db_url: str, write_config: Callable[..., Path], make_extract: Callable[..., Path]
) -> None:
    config = write_config(db_url)
    days = [run_json(config, str(make_extract(day, 80))) for day in range(3)]
    result = invoke(config, "report", "--days", "7")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "feed patrons: all is well"
    assert re.fullmatch(
        r"  last run: run \d{4}-\d\d-\d\d \d\d:\d\d C[SD]T: ok \(exit 0\)", lines[1]
    )
    assert lines[2].startswith(f"  last extract: {make_extract(2, 80)}: ")
    totals = {
        kind: sum(day["counts"][kind] for day in days)
        for kind in ("new", "changed", "returned", "departed", "held_back")
    }
    assert (
        f"3 extract(s): {totals['new']} new, {totals['changed']} changed, "
        f"{totals['returned']} returned, {totals['departed']} departed, 0 held back; "
        "3 batch(es) (3 confirmed)"
    ) in result.stdout

    data = json.loads(invoke(config, "report", "--json").stdout)
    [feed] = data
    assert feed["feed"] == "patrons" and feed["state"]["level"] == "ok"
    assert len(feed["daily"]) == 90
    assert sum(d["new"] for d in feed["daily"]) == totals["new"]
    assert [b["seq"] for b in feed["batches"]] == [1, 2, 3]
    assert feed["state"]["last_run"]["outcome"] == "ok"


def test_report_html_is_private_self_contained_and_escapes_what_it_shows(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(sqlite_url)
    # A match ID that looks like markup, held back twice: it must show as text.
    extract = write(
        tmp_path,
        "a.xml",
        users(record("A"), record("&lt;b&gt;X"), record("&lt;b&gt;X"), record("C")),
    )
    assert invoke(config, "run", str(extract)).exit_code == 4
    out = tmp_path / "site" / "report.html"
    out.parent.mkdir()
    result = invoke(config, "report", "--html", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {out}: 1 feed(s), 90 day(s)\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]
    page = out.read_text(encoding="utf-8")
    assert "<b>X" not in page
    assert 'data-match-id="&lt;b&gt;X"' in page and "<td>&lt;b&gt;X</td>" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "Content-Security-Policy" in page
    # The page is replaced whole on the next write, never edited in place.
    before = out.stat().st_ino
    assert invoke(config, "report", "--html", str(out)).exit_code == 0
    assert out.stat().st_ino != before


def test_report_html_after_every_run_even_a_failed_one(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = config_with(
        write_config(sqlite_url),
        top='report_html = "www/all.html"',
        feed='report_html = "www/patrons.html"',
    )
    (tmp_path / "www").mkdir()
    assert invoke(config, "run", str(write(tmp_path, "a.xml", users(record("A"))))).exit_code == 0
    for name in ("all.html", "patrons.html"):
        page = tmp_path / "www" / name
        assert stat.S_IMODE(page.stat().st_mode) == 0o600
        assert 'data-level="ok"' in page.read_text()
    broken = write(tmp_path, "broken.xml", "<users><user>")
    assert invoke(config, "run", str(broken)).exit_code == 1
    page = (tmp_path / "www" / "patrons.html").read_text()
    assert 'data-level="error"' in page
    assert "the last run stopped: " in page and "broken.xml" in page


def test_a_report_that_cannot_be_written_leaves_the_run_as_it_was(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    missing = tmp_path / "not-mounted" / "report.html"
    config = config_with(write_config(sqlite_url), top=f'report_html = "{missing}"')
    result = invoke(config, "run", "--json", str(write(tmp_path, "a.xml", users(record("A")))))
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"Warning: feed patrons: report not written: {missing}: cannot write the report: "
        "No such file or directory\n"
    )
    assert json.loads(result.stdout)["batch"]["seq"] == 1
    direct = invoke(config, "report", "--html", str(missing))
    assert direct.exit_code == 1
    assert direct.stderr == (
        f"Error: {missing}: cannot write the report: No such file or directory\n"
    )


@pytest.mark.parametrize("chosen", [None, "staff"])
def test_report_covers_every_feed_or_the_one_asked_for(
    sqlite_url: str, tmp_path: Path, chosen: str | None
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[state]\nurl = "{sqlite_url}"\n'
        '[feeds.patrons]\ntimezone = "UTC"\n[feeds.staff]\ntimezone = "Europe/Dublin"\n'
    )
    extract = write(tmp_path, "a.xml", users(record("A")))
    assert invoke(config, "--feed", "patrons", "run", str(extract)).exit_code == 0
    args = ["report"] if chosen is None else ["--feed", chosen, "report"]
    result = invoke(config, *args)
    assert result.exit_code == 0, result.output
    headers = [line for line in result.stdout.splitlines() if line.startswith("feed ")]
    if chosen is None:
        assert headers == ["feed patrons: all is well", "feed staff: needs attention"]
    else:
        assert headers == ["feed staff: needs attention"]
        assert re.fullmatch(
            r"feed staff: needs attention\n"
            r"  last run: none yet\n"
            r"  patrons present: 0; awaiting confirmation by Alma: 0\n"
            r"  ATTENTION: the feed has not run yet\n"
            r"  \d{4}-\d\d-\d\d to \d{4}-\d\d-\d\d: 0 extract\(s\): 0 new, 0 changed, 0 returned, "
            r"0 departed, 0 held back; 0 batch\(es\)\n",
            result.stdout,
        )


def test_a_report_page_per_feed_from_defaults(tmp_path: Path) -> None:
    from deltasync.config import load
    from deltasync.errors import ConfigError

    config = tmp_path / "config.toml"
    feeds = '[feeds.patrons]\ntimezone = "UTC"\n[feeds.staff]\ntimezone = "UTC"\n'
    config.write_text(f'[defaults]\nreport_html = "www/{{feed}}.html"\n{feeds}')
    loaded = load(config, environ={})
    assert {name: feed.report_html for name, feed in loaded.feeds.items()} == {
        "patrons": tmp_path / "www" / "patrons.html",
        "staff": tmp_path / "www" / "staff.html",
    }
    # One page for two feeds would be overwritten by each in turn.
    config.write_text(f'[defaults]\nreport_html = "www/all.html"\n{feeds}')
    with pytest.raises(ConfigError, match="defaults.report_html: every feed needs its own"):
        load(config, environ={})
