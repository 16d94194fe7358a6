"""run --all: every feed of a consortium, N at a time, each on its own; workers share a round."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import generate_extract
import pytest
from helpers import invoke, write
from notices import WebhookServer
from procs import Command
from sshd import SshServer
from test_status_all import metrics
from test_unattended import directives

from deltasync.many import RUNNING_ELSEWHERE
from deltasync.store import open_store, runs

FEEDS = [f"m{n:02d}" for n in range(1, 31)]
BAD, OUTAGE, GUARDED = "m03", "m07", "m12"
MAIN = """
include = ["feeds.d/*.toml"]
{top}

[state]
url = "{url}"

[defaults]
timezone = "America/Chicago"
ignore = ["status_date"]
extract = "incoming/{{feed}}/*.xml"
outbox = "outbox/{{feed}}"
transport = "dir"
remote_dir = "alma/{{feed}}"

[defaults.departure]
max_departures = "100%"
max_changes = "100%"
"""


def consortium(tmp_path: Path, url: str, top: str = "", tables: str = "") -> Path:
    """30 member feeds, one file each under feeds.d/, sharing the main file's [defaults]."""
    (tmp_path / "feeds.d").mkdir()
    for name in FEEDS:
        (tmp_path / "alma" / name).mkdir(parents=True)
        member(tmp_path, name, "")
    path = tmp_path / "config.toml"
    path.write_text(MAIN.format(url=url, top=top) + tables, encoding="utf-8")
    return path


def member(tmp_path: Path, name: str, settings: str) -> None:
    text = f"[feeds.{name}]\n{settings}"
    (tmp_path / "feeds.d" / f"{name}.toml").write_text(text, encoding="utf-8")


def extract(tmp_path: Path, name: str, day: int, patrons: int = 20) -> Path:
    path = tmp_path / "incoming" / name / f"patrons-day{day}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    generate_extract.write_extract(path, patrons=patrons, day=day)
    return path


def delivered(tmp_path: Path, name: str) -> list[str]:
    return sorted(p.name for p in (tmp_path / "alma" / name).glob("*.zip"))


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def by_feed(stdout: str) -> dict[str, str]:
    """The per-feed lines of run --all's text output, by feed (they come in as feeds end)."""
    found = {}
    for line in stdout.splitlines()[:-1]:
        name, rest = line.split(": ", 1)
        found[name] = rest
    return found


def test_one_feeds_failures_leave_the_other_27_delivered(
    db_url: str, tmp_path: Path, ssh_server: SshServer
) -> None:
    config = consortium(tmp_path, db_url)
    for name in FEEDS:
        extract(tmp_path, name, 0)
    first = invoke(config, "run", "--all", "--jobs", "4")
    assert first.exit_code == 0, first.output
    lines = by_feed(first.stdout)
    assert sorted(lines) == FEEDS
    assert {lines[n] for n in FEEDS} == {
        "ok: 20 patrons: 20 new, 0 changed, 0 departed, 0 returned, 0 held back; "
        "batch 1 (20 records)"
    }
    assert first.stdout.splitlines()[-1] == (
        "30 feed(s): 30 ok, 0 attention, 0 refused, 0 error, 0 skipped"
    )
    assert all(len(delivered(tmp_path, n)) == 1 for n in FEEDS)

    # The next night: one extract cut off, one server gone, one extract that would expire
    # most of its feed past the feed's guard.
    for name in FEEDS:
        extract(tmp_path, name, 1, patrons=5 if name == GUARDED else 20)
    broken = write(tmp_path / "incoming" / BAD, "patrons-day1.xml", "<users><user>")
    member(tmp_path, GUARDED, "[feeds.m12.departure]\nmax_departures = 2\n")
    member(
        tmp_path,
        OUTAGE,
        f"""transport = "sftp"
remote_dir = "/alma/{OUTAGE}"
[feeds.{OUTAGE}.sftp]
host = "127.0.0.1"
port = {unused_port()}
username = "alma"
key_file = "{ssh_server.key_file}"
known_hosts = "{ssh_server.known_hosts}"
connect_timeout = 2
attempts = 1
""",
    )
    before = {n: delivered(tmp_path, n) for n in FEEDS}

    second = invoke(config, "run", "--all", "--jobs", "4")

    assert second.exit_code == 1, second.output
    lines = by_feed(second.stdout)
    assert sorted(lines) == FEEDS
    assert lines[BAD] == (
        f"error: {broken}: line 1, column 14: Premature end of data in tag user line 1 "
        "(the file ends too early: truncated?)"
    )
    assert lines[GUARDED] == (
        f"refused: {tmp_path / 'incoming' / GUARDED / 'patrons-day1.xml'}: 15 of 20 patrons "
        "would depart (75.0%), over max_departures = 2 for feed 'm12'. Check the extract; if "
        "it is right, run again with --force"
    )
    counts = r"20 patrons: \d+ new, \d+ changed, \d+ departed, \d+ returned, 0 held back"
    assert re.fullmatch(
        f"attention: {counts}; batch 2 \\(\\d+ records\\); \\d+ reason\\(s\\) on stderr",
        lines[OUTAGE],
    ), lines[OUTAGE]
    others = [n for n in FEEDS if n not in (BAD, OUTAGE, GUARDED)]
    assert len(others) == 27
    for name in others:
        assert re.fullmatch(f"ok: {counts}; batch 2 \\(\\d+ records\\)", lines[name]), lines[name]
        # Batch 1 lay unread, so it was taken back: batch 2 carries its patrons too.
        [zip_name] = delivered(tmp_path, name)
        assert zip_name.startswith(f"{name}_000002_"), zip_name
    for name in (BAD, OUTAGE, GUARDED):
        assert delivered(tmp_path, name) == before[name], name
    assert second.stdout.splitlines()[-1] == (
        "30 feed(s): 27 ok, 1 attention, 1 refused, 1 error, 0 skipped"
    )
    errors = [line for line in second.stderr.splitlines() if line.startswith("Error: ")]
    assert sorted(errors) == sorted(
        [
            f"Error: feed {BAD}: {lines[BAD].removeprefix('error: ')}",
            f"Error: feed {GUARDED}: {lines[GUARDED]}",
        ]
    )
    assert any(
        line.startswith(f"ATTENTION: feed {OUTAGE}: ") for line in second.stderr.splitlines()
    )

    # A third pass in the same round: what ran (or failed on its extract) is done; only the
    # feed whose batch still waits for its server is tried again.
    third = invoke(config, "run", "--all", "--jobs", "4", "--json")
    assert third.exit_code == 4, third.output
    data = json.loads(third.stdout)
    assert [f["feed"] for f in data["feeds"]] == FEEDS
    ends = {f["feed"]: f for f in data["feeds"]}
    assert data["summary"] == {
        "feeds": 30,
        "ok": 0,
        "attention": 1,
        "refused": 0,
        "error": 0,
        "skipped": 29,
        "exit_code": 4,
    }
    outage = ends.pop(OUTAGE)
    assert (outage["outcome"], outage["exit_code"], outage["skipped"]) == ("attention", 4, None)
    single = outage["run"]
    assert single["feed"] == OUTAGE and single["already_ingested"] is True
    assert single["attention"] and single["batch"] is None
    for name, end in ends.items():
        assert (end["outcome"], end["exit_code"], end["run"], end["error"]) == (
            "skipped",
            0,
            None,
            None,
        )
        outcome = "refused" if name == GUARDED else "error" if name == BAD else "ok"
        assert end["skipped"].startswith("nothing new since its run at "), end
        again = f"; to run it again now: deltasync --feed {name} run"
        assert end["skipped"].endswith(f" ({outcome})" + (again if outcome != "ok" else "")), end


def test_two_workers_share_a_round_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    config = consortium(tmp_path, pg_url)
    for day in (0, 1):
        for name in FEEDS:
            extract(tmp_path, name, day, patrons=150)
        workers = [Command(config, "run", "--all", "--jobs", "2", "--json") for _ in range(2)]
        done = [w.finish() for w in workers]
        assert [d.code for d in done] == [0, 0], [d.err for d in done]
        outputs = [json.loads(d.out) for d in done]
        ran = [{f["feed"] for f in out["feeds"] if f["outcome"] == "ok"} for out in outputs]
        assert ran[0] | ran[1] == set(FEEDS) and not ran[0] & ran[1], ran
        assert all(ran), "both workers ran feeds"
        for out in outputs:
            for end in out["feeds"]:
                if end["outcome"] == "skipped":
                    assert end["skipped"] == RUNNING_ELSEWHERE or end["skipped"].startswith(
                        "nothing new since its run at "
                    ), end
        for name in FEEDS:
            # Each round's batch in Alma's folder; the day before's, unread, was taken back.
            [zip_name] = delivered(tmp_path, name)
            assert zip_name.startswith(f"{name}_{day + 1:06d}_"), zip_name

    with open_store(pg_url) as store, store.read() as conn:
        for name in FEEDS:
            logged = sorted(runs.runs(conn, name), key=lambda r: r.started_at)
            assert [(r.command, r.outcome) for r in logged] == [("run", runs.Outcome.OK)] * 2
            assert [r.batch_seq for r in logged] == [1, 2], name
            assert logged[0].finished_at <= logged[1].started_at, name


def test_each_feed_is_notified_and_in_the_metrics_as_after_a_single_run(
    sqlite_url: str, tmp_path: Path, webhook_server: WebhookServer
) -> None:
    (tmp_path / "textfile").mkdir()
    prom = tmp_path / "textfile" / "deltasync.prom"
    hook = f'\n[notify.webhook]\nurl = "{webhook_server.url}/hook"\ntimeout = 2\n'
    config = consortium(
        tmp_path, sqlite_url, top='metrics_file = "textfile/deltasync.prom"', tables=hook
    )
    for name in FEEDS:
        extract(tmp_path, name, 0)
    broken = write(tmp_path / "incoming" / BAD, "patrons-day0.xml", "<users><user>")

    result = invoke(config, "run", "--all", "--jobs", "3")

    assert result.exit_code == 1, result.output
    # Notices go out on attention (the default), so only the broken feed's.
    [post] = webhook_server.posts
    notice = post.json()["deltasync"]
    assert (notice["feed"], notice["outcome"]) == (BAD, "error")
    assert notice["error"].startswith(f"{broken}: line 1, column 14: ")
    found = metrics(prom)
    for name in FEEDS:
        code = found[("deltasync_last_run_exit_code", (("feed", name),))]
        assert code == (1 if name == BAD else 0), name


def test_all_refuses_what_belongs_to_one_feed(sqlite_url: str, tmp_path: Path) -> None:
    config = consortium(tmp_path, sqlite_url)
    for args, message in [
        (["--feed", "m01", "run", "--all"], "--all runs every feed; leave out --feed"),
        (
            ["run", "--all", "x.xml"],
            "--all runs each feed on its `extract` setting; give no EXTRACT",
        ),
        (
            ["run", "--all", "--dry-run"],
            "--all does not take --dry-run; see one feed with diff --feed NAME",
        ),
        (
            ["run", "--all", "--force"],
            "--force overrides one feed's guard after you checked its extract: use run --feed "
            "NAME --force",
        ),
        (["--feed", "m01", "run", "--jobs", "2"], "--jobs goes with --all"),
        (["--feed", "m01", "run", "--round-minutes", "5"], "--round-minutes goes with --all"),
    ]:
        result = invoke(config, *args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.splitlines()[-1] == f"Error: {message}", args
    result = invoke(config, "run", "--all", "--jobs", "0")
    assert result.exit_code == 2
    assert "Invalid value for '--jobs': 0 is not in the range 1<=x<=64." in result.stderr
    assert not (tmp_path / "state").exists()  # nothing was opened, nothing ran


def test_the_all_feeds_units_are_the_feed_units_running_run_all(tmp_path: Path) -> None:
    units = Path(__file__).resolve().parent.parent / "contrib" / "systemd"
    one, every = (
        directives(units / "deltasync@.service"),
        directives(units / "deltasync-all.service"),
    )
    assert every.pop("ExecStart") == ["/usr/local/bin/deltasync run --all --jobs 4"]
    assert every.pop("Description") == ["deltasync: send Alma the changed patrons of every feed"]
    del one["ExecStart"], one["Description"]
    assert every == one  # the same user, hardening and paths
    timer = directives(units / "deltasync-all.timer")
    assert timer["Unit"] == ["deltasync-all.service"] and timer["Persistent"] == ["true"]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not found (Debian's systemd package has it)")
    deltasync = Path(sys.executable).parent / "deltasync"
    service = (units / "deltasync-all.service").read_text(encoding="utf-8")
    (tmp_path / "deltasync-all.service").write_text(
        service.replace("/usr/local/bin/deltasync", str(deltasync)), encoding="utf-8"
    )
    shutil.copy(units / "deltasync-all.timer", tmp_path / "deltasync-all.timer")
    result = subprocess.run(
        [analyze, "verify", "deltasync-all.service", "deltasync-all.timer"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
