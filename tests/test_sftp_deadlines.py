"""`deltasync run` against SFTP servers that never answer, and SSH keys it cannot use.

Each hostile server is real and on loopback (tests/sshd.py): a socket that accepts and says
nothing, and OpenSSH servers whose sftp subsystem never answers. The run is a real process,
so everything paramiko's threads might print would show on its stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import dump_store, invoke
from sshd import MUTE_SFTP, STALLED_SFTP, SilentServer, SshServer, sshd_server

PATRONS = 20
CONNECT = 2
OPERATION = 3
"""Short deadlines so each test takes seconds; the defaults are 30 and 120 s."""


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


@pytest.fixture(scope="module")
def mute_sftp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    yield from sshd_server(tmp_path_factory, sftp=MUTE_SFTP)


@pytest.fixture(scope="module")
def stalled_sftp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    yield from sshd_server(tmp_path_factory, sftp=STALLED_SFTP)


def write_config(tmp_path: Path, host: str, port: int, **sftp: object) -> Path:
    settings = {
        "host": host,
        "port": port,
        "username": "alma",
        "connect_timeout": CONNECT,
        "operation_timeout": OPERATION,
        "attempts": 4,
        **sftp,
    }
    lines = [
        "[state]",
        f'url = "sqlite:///{tmp_path / "state.db"}"',
        "[feeds.patrons]",
        'timezone = "America/Chicago"',
        'transport = "sftp"',
        'remote_dir = "/alma"',
        "[feeds.patrons.sftp]",
    ]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def server_config(tmp_path: Path, ssh: SshServer, **sftp: object) -> Path:
    return write_config(
        tmp_path,
        ssh.host,
        ssh.port,
        **{
            "username": ssh.username,
            "key_file": str(ssh.key_file),
            "known_hosts": str(ssh.known_hosts),
            **sftp,
        },
    )


def run_process(config: Path, extract: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """``deltasync run`` as cron runs it; main hung here, so the harness gives up after 60 s."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "deltasync", "--config", str(config), "run", str(extract)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, time.monotonic() - started


def attention(stdout: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines() if "ATTENTION" in line]


def assert_only_attention(result: subprocess.CompletedProcess[str], expected: list[str]) -> None:
    """Exit 4 with exactly these reasons, and nothing else on stderr: no paramiko thread
    traceback, no log record."""
    assert result.returncode == 4, result.stdout + result.stderr
    assert attention(result.stdout) == expected
    reasons = [line.removeprefix("ATTENTION: ") for line in expected]
    assert result.stderr.splitlines() == [f"ATTENTION: feed patrons: {r}" for r in reasons]


def test_a_server_that_never_answers_ssh_is_named_and_not_waited_for_twice(
    tmp_path: Path,
    silent: SilentServer,
    ssh_server: SshServer,
    make_extract: Callable[..., Path],
) -> None:
    config = write_config(
        tmp_path,
        silent.host,
        silent.port,
        key_file=str(ssh_server.key_file),
        known_hosts=str(ssh_server.known_hosts),
    )
    extract = make_extract(0, PATRONS)
    where = f"sftp://alma@{silent.host}:{silent.port}/alma"
    silence = f"the server at {silent.host}:{silent.port} did not answer SSH within {CONNECT} s"

    first, seconds = run_process(config, extract)
    assert_only_attention(
        first,
        [f"ATTENTION: batch 1 not delivered: {where}: list failed: {silence}"],
    )
    assert silent.accepted == 1  # a server that let its deadline pass is not tried again
    assert seconds < CONNECT + 8

    # The next run checks the batch it left and delivers again: one more try, not two.
    second, _ = run_process(config, extract)
    assert_only_attention(
        second,
        [
            f"ATTENTION: cannot check delivered batches: {where}: list failed: {silence}",
            f"ATTENTION: batch 1 not delivered: {where}: list not tried: earlier in this run, "
            f"{silence}",
        ],
    )
    assert silent.accepted == 2


def test_a_server_that_never_answers_the_sftp_version_exchange_does_not_hang_the_run(
    tmp_path: Path, mute_sftp: SshServer, make_extract: Callable[..., Path]
) -> None:
    config = server_config(tmp_path, mute_sftp)
    result, seconds = run_process(config, make_extract(0, PATRONS))
    where = f"sftp://{mute_sftp.username}@{mute_sftp.host}:{mute_sftp.port}/alma"
    assert_only_attention(
        result,
        [
            f"ATTENTION: batch 1 not delivered: {where}: list failed: the server at "
            f"{mute_sftp.host}:{mute_sftp.port} did not start SFTP within {CONNECT} s"
        ],
    )
    assert seconds < CONNECT + 8
    # The lock died with the process: the store answers at once.
    status = invoke(config, "status", "--json")
    # Exit 4, the probe's answer: batch 1 is not delivered.
    assert status.exit_code == 4, status.output
    [pending] = json.loads(status.stdout)["pending_batches"]
    assert pending["status"] == "built"
    assert "did not start SFTP" in pending["last_error"]


def test_a_server_that_stops_answering_requests_is_not_waited_for_again(
    tmp_path: Path, stalled_sftp: SshServer, make_extract: Callable[..., Path]
) -> None:
    config = server_config(tmp_path, stalled_sftp)
    result, seconds = run_process(config, make_extract(0, PATRONS))
    where = f"sftp://{stalled_sftp.username}@{stalled_sftp.host}:{stalled_sftp.port}/alma"
    assert_only_attention(
        result,
        [
            f"ATTENTION: batch 1 not delivered: {where}: list failed: the server at "
            f"{stalled_sftp.host}:{stalled_sftp.port} did not answer within {OPERATION} s"
        ],
    )
    assert seconds < OPERATION + 8  # once, not four times with backoff


def test_a_missing_key_file_is_named_and_nothing_is_tried(
    tmp_path: Path,
    silent: SilentServer,
    ssh_server: SshServer,
    make_extract: Callable[..., Path],
) -> None:
    missing = tmp_path / "keys" / "id_ed25519"
    config = write_config(
        tmp_path,
        silent.host,
        silent.port,
        key_file=str(missing),
        known_hosts=str(ssh_server.known_hosts),
    )
    result = invoke(config, "run", str(make_extract(0, PATRONS)))
    # A configuration mistake: the run stops before it changes anything (exit 1).
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"Error: {missing}: cannot read the SSH key (sftp.key_file): No such file or directory\n"
    )
    assert silent.accepted == 0  # checked before connecting, and not retried
    assert (
        not (tmp_path / "state.db").exists()
        or dump_store(f"sqlite:///{tmp_path / 'state.db'}").get("patron", []) == []
    )


def test_an_encrypted_key_without_passphrase_env_says_so(
    tmp_path: Path, ssh_server: SshServer, make_extract: Callable[..., Path]
) -> None:
    config = server_config(tmp_path, ssh_server, key_file=str(ssh_server.encrypted_key_file))
    result = invoke(config, "run", str(make_extract(0, PATRONS)))
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"Error: {ssh_server.encrypted_key_file} is encrypted; "
        "name the environment variable holding its passphrase in sftp.passphrase_env\n"
    )


def test_a_wrong_or_missing_passphrase_is_named_and_nothing_changes(
    tmp_path: Path,
    ssh_server: SshServer,
    make_extract: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = ssh_server.encrypted_key_file
    config = server_config(tmp_path, ssh_server, key_file=str(key), passphrase_env="SFTP_PASS")
    extract = make_extract(0, PATRONS)
    monkeypatch.delenv("SFTP_PASS", raising=False)
    unset = invoke(config, "run", str(extract))
    # A variable missing from cron's environment stops the run before it changes anything.
    assert unset.exit_code == 1, unset.output
    assert unset.stderr == (
        "Error: sftp.passphrase_env names SFTP_PASS, which is not set (or empty)\n"
    )
    monkeypatch.setenv("SFTP_PASS", "not the passphrase")
    wrong = invoke(config, "run", str(extract))
    assert wrong.exit_code == 1, wrong.output
    assert wrong.stderr == (
        f"Error: {key}: cannot read the SSH key (sftp.key_file) with the passphrase in "
        "SFTP_PASS: wrong passphrase, or not a private key\n"
    )
    store = tmp_path / "state.db"
    assert not store.exists() or dump_store(f"sqlite:///{store}").get("patron", []) == []
