"""Which stream gets what, and which exit code: the contract cron and scripts rely on.

Exit 4 must say why on stderr, because a cron line that sends stdout to a log mails only
stderr; ``--json`` keeps stdout pure JSON. Click 8.2+ keeps ``result.stdout`` and
``result.stderr`` apart, so these tests see each stream on its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import invoke, record, users, write

HELD_BACK = (
    "1 record(s) held back (named in the run's output); fix them in the SIS and they go out "
    "with the first extract that passes"
)


def _duplicate_extract(folder: Path) -> Path:
    """B twice: neither copy is sent, which makes the run exit 4."""
    return write(folder, "dup.xml", users(record("A"), record("B"), record("B")))


def _attention_lines(feed: str, reasons: list[str]) -> str:
    return "".join(f"ATTENTION: feed {feed}: {reason}\n" for reason in reasons)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_run_exit_4_says_why_on_stderr(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path, as_json: bool
) -> None:
    config = write_config(sqlite_url)
    extract = _duplicate_extract(tmp_path)
    result = invoke(config, "run", *(["--json"] if as_json else []), str(extract))
    assert result.exit_code == 4, result.output
    assert result.stderr == f"ATTENTION: feed patrons: {HELD_BACK}\n"
    if as_json:
        data = json.loads(result.stdout)  # the whole of stdout, nothing else on it
        assert data["attention"] == [HELD_BACK]
        assert [h["match_id"] for h in data["held_back"]] == ["B"]
    else:
        # The log file that stdout goes to keeps its copy of the reasons.
        assert f"  ATTENTION: {HELD_BACK}\n" in result.stdout
        assert "  held back B: match ID occurs more than once" in result.stdout


def test_run_exit_0_writes_nothing_on_stderr(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(sqlite_url)
    result = invoke(config, "run", str(write(tmp_path, "a.xml", users(record("A")))))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_baseline_exit_4_says_why_on_stderr(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(sqlite_url)
    result = invoke(config, "baseline", "--json", str(_duplicate_extract(tmp_path)))
    assert result.exit_code == 4, result.output
    assert json.loads(result.stdout)["attention"] == [HELD_BACK]
    assert result.stderr == f"ATTENTION: feed patrons: {HELD_BACK}\n"


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_replay_exit_4_says_why_on_stderr(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path, as_json: bool
) -> None:
    remote = tmp_path / "alma-inbox"
    remote.write_text("not a folder")  # the mount is broken: nothing can be delivered
    config = write_config(sqlite_url, feed={"transport": "dir", "remote_dir": str(remote)})
    first = invoke(config, "run", "--json", str(write(tmp_path, "a.xml", users(record("A")))))
    assert first.exit_code == 4, first.output
    reasons = json.loads(first.stdout)["attention"]
    assert reasons and reasons[0].startswith("batch 1 not delivered: ")
    assert first.stderr == _attention_lines("patrons", reasons)

    replayed = invoke(config, "replay", *(["--json"] if as_json else []))
    assert replayed.exit_code == 4, replayed.output
    if as_json:
        reasons = json.loads(replayed.stdout)["attention"]
    else:
        prefix = "ATTENTION: "
        reasons = [line[len(prefix) :] for line in replayed.stdout.splitlines() if prefix in line]
    assert any(" not delivered: " in reason for reason in reasons), reasons
    assert replayed.stderr == _attention_lines("patrons", reasons)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_check_exit_4_says_on_stderr_how_many_would_be_held_back(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path, as_json: bool
) -> None:
    config = write_config(sqlite_url)
    # B twice, and C without a last name or a user group: three error findings, and two
    # patrons held back, which is what someone has to fix in the SIS.
    no_name = record("C").replace("  <last_name>Doe</last_name>\n", "")
    no_name = no_name.replace("  <user_group>UGRD</user_group>\n", "")
    extract = write(tmp_path, "x.xml", users(record("A"), record("B"), record("B"), no_name))
    result = invoke(config, "check", *(["--json"] if as_json else []), str(extract))
    assert result.exit_code == 4, result.output
    assert result.stderr == f"ATTENTION: {extract}: 2 record(s) would be held back by the checks\n"
    if as_json:
        assert json.loads(result.stdout)["errors"] == 3
    else:
        assert result.stdout.startswith(f"{extract}: 4 records\n")


def test_real_process_keeps_json_on_stdout_and_reasons_on_stderr(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """The streams of a real process, as cron sees them (CliRunner could hide a mix-up)."""
    config = write_config(sqlite_url)
    command = [sys.executable, "-m", "deltasync", "--config", str(config), "run", "--json"]
    process = subprocess.run(
        [*command, str(_duplicate_extract(tmp_path))], capture_output=True, timeout=120
    )
    assert process.returncode == 4, process.stderr
    assert json.loads(process.stdout)["attention"] == [HELD_BACK]
    assert process.stderr.decode() == f"ATTENTION: feed patrons: {HELD_BACK}\n"


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["run"], "extract not found"),
        (["diff"], "extract not found"),
        (["baseline"], "extract not found"),
        (["check"], "file not found"),
    ],
    ids=["run", "diff", "baseline", "check"],
)
def test_a_missing_file_is_exit_1_naming_it(
    sqlite_url: str,
    write_config: Callable[..., Path],
    tmp_path: Path,
    command: list[str],
    message: str,
) -> None:
    config = write_config(sqlite_url)
    missing = tmp_path / "incoming" / "patrons-2027-01-05.xml"
    result = invoke(config, *command, str(missing))
    assert result.exit_code == 1, result.output
    assert result.stderr == f"Error: {missing}: {message}\n"
    assert result.stdout == ""


def test_prune_json_when_retention_keeps_everything(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config(sqlite_url, feed={"retention_days": 0})
    assert invoke(config, "run", str(write(tmp_path, "a.xml", users(record("A"))))).exit_code == 0
    result = invoke(config, "prune", "--json")
    assert result.exit_code == 0, result.output
    # The keys of any prune; no cutoff, because there is no window.
    assert json.loads(result.stdout) == {
        "cutoff": None,
        "payloads": 0,
        "patrons": 0,
        "outbox_files": 0,
        "remote_files": 0,
        "problems": [],
        "runs": 0,
    }
    text = invoke(config, "prune")
    assert text.stdout == (
        "feed 'patrons' keeps everything (retention_days = 0): nothing pruned; "
        "give --older-than DAYS to prune anyway\n"
    )


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_prune_exit_4_says_why_on_stderr(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path, as_json: bool
) -> None:
    remote = tmp_path / "alma-inbox"
    remote.mkdir()
    config = write_config(sqlite_url, feed={"transport": "dir", "remote_dir": str(remote)})
    assert invoke(config, "run", str(write(tmp_path, "a.xml", users(record("A"))))).exit_code == 0
    for file in remote.iterdir():
        file.unlink()
    remote.rmdir()
    remote.write_text("not a folder")  # the mount is broken: old files cannot be cleaned up
    result = invoke(config, "prune", "--older-than", "0", *(["--json"] if as_json else []))
    assert result.exit_code == 4, result.output
    if as_json:
        problems = json.loads(result.stdout)["problems"]
    else:
        prefix = "ATTENTION: "
        problems = [line[len(prefix) :] for line in result.stdout.splitlines() if prefix in line]
    assert problems and problems[0].startswith("cannot delete old withdrawn files from remote_dir")
    assert result.stderr == _attention_lines("patrons", problems)
