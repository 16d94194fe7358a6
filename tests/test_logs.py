"""The run log: a timestamped file (reopened when logrotate moves it), or stderr, with what a
systems librarian needs to reconstruct a night; paramiko's records go there too."""

from __future__ import annotations

import logging
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import invoke, record, users, write
from sshd import SshServer
from test_sftp_run import sftp_config

from deltasync.cli import logs
from deltasync.errors import ConfigError

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} "
HELD_BACK = (
    "1 record(s) held back (named in the run's output); fix them in the SIS and they go out "
    "with the first extract that passes"
)


@pytest.fixture(autouse=True)
def _no_handlers_left() -> Iterator[None]:
    yield
    logs.reset()


def with_log(config: Path, log_file: str) -> Path:
    config.write_text(f'log_file = "{log_file}"\n' + config.read_text(), encoding="utf-8")
    return config


def lines(path: Path) -> list[str]:
    """The log's lines without their timestamp and process id."""
    found = path.read_text(encoding="utf-8").splitlines()
    for line in found:
        assert re.match(STAMP + r"(INFO|WARNING|ERROR|DEBUG) +\[\d+\] ", line), line
    return [re.sub(STAMP + r"(\S+) +\[\d+\] ", r"\1 ", line) for line in found]


def test_the_run_log_tells_the_night(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = with_log(write_config(sqlite_url), "logs/deltasync.log")
    (tmp_path / "logs").mkdir()
    extract = write(tmp_path, "a.xml", users(record("A"), record("B"), record("B")))
    result = invoke(config, "run", str(extract))
    assert result.exit_code == 4, result.output
    # The log file does not change what cron sees.
    assert result.stderr == f"ATTENTION: feed patrons: {HELD_BACK}\n"
    log = tmp_path / "logs" / "deltasync.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600  # it names patrons by match ID
    found = lines(log)
    assert found[0] == f"INFO deltasync.run: feed patrons: run started: extract {extract}"
    assert found[1:6] == [
        "INFO deltasync.run: feed patrons: run: 2 patrons: 1 new, 0 changed, 0 unchanged, "
        "0 departed, 0 returned, 1 held back",
        "WARNING deltasync.run: feed patrons: held back B: match-id-duplicate",
        "INFO deltasync.run: feed patrons: batch 1 built: 1 records in 1 part(s)",
        "INFO deltasync.run: feed patrons: batch 1 confirmed: no delivery configured: taken as "
        "confirmed when written",
        f"WARNING deltasync.run: feed patrons: attention: {HELD_BACK}",
    ]
    assert re.fullmatch(
        r"INFO deltasync\.run: feed patrons: run finished in \d+\.\d s: attention \(exit 4\)",
        found[6],
    )
    assert len(found) == 7

    broken = write(tmp_path, "broken.xml", "<users><user>")
    assert invoke(config, "run", str(broken)).exit_code == 1
    after = lines(log)[7:]
    assert after[0] == f"INFO deltasync.run: feed patrons: run started: extract {broken}"
    assert after[-1].startswith(
        f"ERROR deltasync.run: feed patrons: run stopped (exit 1): {broken}"
    )


def test_a_run_log_moved_by_logrotate_is_reopened(tmp_path: Path) -> None:
    log = tmp_path / "deltasync.log"
    logs.configure(log, 0)
    logger = logging.getLogger("deltasync.test")
    logger.info("before the rotation")
    os.rename(log, tmp_path / "deltasync.log.1")  # what logrotate does (without copytruncate)
    logger.info("after the rotation")
    logs.reset()
    assert "before the rotation" in (tmp_path / "deltasync.log.1").read_text()
    assert [line.split(": ", 1)[1] for line in log.read_text().splitlines()] == [
        "after the rotation"
    ]
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_an_existing_log_keeps_its_mode_and_a_planted_symlink_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "shared.log"
    log.write_text("")
    log.chmod(0o640)  # logrotate's `create 0640 root adm`: the admin's choice
    logs.configure(log, 0)
    logging.getLogger("deltasync.test").warning("kept")
    logs.reset()
    assert stat.S_IMODE(log.stat().st_mode) == 0o640
    # A link put where the log is (re)created is never written through.
    target = tmp_path / "elsewhere"
    link = tmp_path / "link.log"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match=f"^log_file: cannot open the log {link}: "):
        logs.configure(link, 0)
    assert not target.exists()


def test_a_log_file_that_cannot_be_opened_stops_before_anything_changes(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-folder" / "deltasync.log"
    config = with_log(write_config(sqlite_url), str(missing))
    result = invoke(config, "run", str(write(tmp_path, "a.xml", users(record("A")))))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {config}: log_file: cannot open the log {missing}: No such file or directory\n"
    )
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()


@pytest.mark.parametrize("how", ["-v", "log_file = -"])
def test_the_log_on_stderr(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path, how: str
) -> None:
    config = write_config(sqlite_url)
    args = ["run"]
    if how == "-v":
        args = ["-v", "run"]
    else:
        with_log(config, "-")
    result = invoke(config, *args, str(write(tmp_path, "a.xml", users(record("A")))))
    assert result.exit_code == 0, result.output
    found = result.stderr.splitlines()
    assert re.match(STAMP + r"INFO +\[\d+\] deltasync\.run: feed patrons: run started: ", found[0])
    assert any("feed patrons: run finished" in line for line in found)


def test_quiet_logs_only_warnings(
    sqlite_url: str, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = with_log(write_config(sqlite_url), "run.log")
    extract = write(tmp_path, "a.xml", users(record("A"), record("B"), record("B")))
    assert invoke(config, "-q", "run", str(extract)).exit_code == 4
    assert lines(tmp_path / "run.log") == [
        "WARNING deltasync.run: feed patrons: held back B: match-id-duplicate",
        f"WARNING deltasync.run: feed patrons: attention: {HELD_BACK}",
    ]


def test_paramiko_and_sftp_retries_go_to_the_run_log(
    sqlite_url: str,
    tmp_path: Path,
    ssh_server: SshServer,
    make_extract: Callable[..., Path],
) -> None:
    remote = ssh_server.root / f"alma-{uuid.uuid4().hex[:8]}"
    remote.mkdir()
    config = with_log(sftp_config(tmp_path, sqlite_url, ssh_server, remote), "run.log")
    result = invoke(config, "-v", "run", str(make_extract(0, 20)))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # the log has a file: nothing of paramiko's reaches stderr
    found = lines(tmp_path / "run.log")
    assert any(line.startswith("INFO paramiko.transport: Connected (version 2.0") for line in found)
    assert "INFO paramiko.transport: Authentication (publickey) successful!" in found
    assert "INFO deltasync.run: feed patrons: batch 1 uploaded to " in "\n".join(found)

    # The server is down: each refused attempt is logged before the next.
    down = sftp_config(tmp_path, sqlite_url, ssh_server, remote, port=1)
    with_log(down, "run.log")
    again = invoke(down, "run", str(make_extract(1, 20)))
    assert again.exit_code == 4, again.output
    retries = [line for line in lines(tmp_path / "run.log") if "deltasync.sftp" in line]
    assert len(retries) == 1
    assert re.fullmatch(
        r"WARNING deltasync\.sftp: attempt 1 of 2 failed: .*127\.0\.0\.1:1.*; trying again in "
        r"\d+ s",
        retries[0],
    )
