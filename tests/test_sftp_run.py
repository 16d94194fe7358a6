"""`deltasync run` delivering over a real OpenSSH server on loopback, and failing well."""

from __future__ import annotations

import json
import shutil
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

import generate_extract
import pytest
from almasim import AlmaSimulator, SftpSource
from helpers import invoke
from sshd import SshServer

PATRONS = 50


@pytest.fixture
def remote(ssh_server: SshServer) -> Path:
    folder = ssh_server.root / f"alma-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def sftp_config(tmp_path: Path, url: str, ssh: SshServer, remote: Path, **sftp: object) -> Path:
    settings = {
        "host": ssh.host,
        "port": ssh.port,
        "username": ssh.username,
        "key_file": str(ssh.key_file),
        "known_hosts": str(ssh.known_hosts),
        "connect_timeout": 5,
        "operation_timeout": 10,
        "attempts": 2,
        **sftp,
    }
    lines = [
        "[state]",
        f'url = "{url}"',
        "[feeds.patrons]",
        'timezone = "America/Chicago"',
        'ignore = ["status_date"]',
        'transport = "sftp"',
        f'remote_dir = "{remote}"',
        "[feeds.patrons.sftp]",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path = tmp_path / "sftp.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_json(config: Path, extract: Path) -> tuple[int, dict[str, object]]:
    result = invoke(config, "run", "--json", str(extract))
    return result.exit_code, json.loads(result.stdout)


def test_delivery_over_sftp_and_pickup_by_alma(
    db_url: str,
    tmp_path: Path,
    ssh_server: SshServer,
    remote: Path,
    make_extract: Callable[..., Path],
) -> None:
    config = sftp_config(tmp_path, db_url, ssh_server, remote)
    code, first = run_json(config, make_extract(0, PATRONS))
    assert code == 0, first
    assert first["ledger"] == ["batch 1 uploaded"]
    with SftpSource(
        ssh_server.host,
        ssh_server.port,
        ssh_server.username,
        ssh_server.key_file,
        ssh_server.known_hosts,
        str(remote),
    ) as source:
        alma = AlmaSimulator(source)
        instance = alma.run_job(generate_extract_day_time())
        assert instance is not None and len(instance.files) == 1
        assert len(alma.users) == PATRONS
    code, second = run_json(config, make_extract(1, PATRONS))
    assert code == 0
    assert "batch 1 picked up by Alma" in second["ledger"]
    status = json.loads(invoke(config, "status", "--json").stdout)
    assert status["batches_by_status"] == {"confirmed": 1, "uploaded": 1}


def test_delta_files_on_the_server_are_private(
    sqlite_url: str,
    tmp_path: Path,
    ssh_server: SshServer,
    remote: Path,
    make_extract: Callable[..., Path],
) -> None:
    config = sftp_config(tmp_path, sqlite_url, ssh_server, remote)
    code, first = run_json(config, make_extract(0, PATRONS))
    assert code == 0, first
    batch = first["batch"]
    assert isinstance(batch, dict)
    name = Path(batch["file"]).name
    assert [p.name for p in remote.iterdir()] == [name]  # no temporary left behind
    assert stat.S_IMODE((remote / name).stat().st_mode) == 0o600
    assert (remote / name).read_bytes() == Path(batch["file"]).read_bytes()


def generate_extract_day_time() -> object:
    import datetime as dt

    return dt.datetime(2027, 1, 4, 12, tzinfo=dt.UTC)


@pytest.mark.parametrize("fault", ["wrong host key", "refused login", "full disk", "server down"])
def test_sftp_faults_are_clear_leave_the_batch_and_lose_nothing(
    fault: str,
    sqlite_url: str,
    tmp_path: Path,
    ssh_server: SshServer,
    remote: Path,
    make_extract: Callable[..., Path],
) -> None:
    extract = make_extract(0, PATRONS)
    broken: dict[str, object] = {}
    target = remote
    expected = {
        "wrong host key": "host key does not match",
        "refused login": f"login refused for {ssh_server.username}",
        "full disk": "full disk",
        "server down": "connection refused",
    }[fault]
    if fault == "wrong host key":
        broken = {"known_hosts": str(ssh_server.wrong_known_hosts)}
    elif fault == "refused login":
        broken = {"key_file": str(ssh_server.unauthorized_key_file)}
    elif fault == "full disk":
        target = ssh_server.full_dir(free_bytes=4096)
        if not ssh_server.full_disk_is_real:
            pytest.skip("mounting a full filesystem needs root")
    config = sftp_config(tmp_path, sqlite_url, ssh_server, target, **broken)
    if fault == "server down":
        ssh_server.stop()
    try:
        result = invoke(config, "run", str(extract))
    finally:
        ssh_server.start()
    assert result.exit_code == 4, result.output
    assert "ATTENTION: batch 1 not delivered:" in result.stdout
    assert expected in result.stdout
    assert "Traceback" not in result.output
    status = json.loads(invoke(config, "status", "--json").stdout)
    [pending] = status["pending_batches"]
    assert pending["status"] == "built" and pending["attempts"] >= 1
    assert expected in pending["last_error"]
    assert not [p for p in target.iterdir() if p.name.endswith(".zip")]

    # Mended: the next run (same extract, nothing new) delivers the kept batch whole.
    config = sftp_config(tmp_path, sqlite_url, ssh_server, remote)
    again = invoke(config, "run", str(extract))
    assert again.exit_code == 0, again.output
    assert "ledger: batch 1 uploaded" in again.stdout
    [delivered] = [p for p in remote.iterdir() if p.name.endswith(".zip")]
    local = config.parent / "outbox" / "patrons" / delivered.name
    assert delivered.read_bytes() == local.read_bytes()
    truth = generate_extract.truth(patrons=PATRONS, day=0)
    assert len(truth["new"]) == PATRONS
    if fault == "full disk":
        shutil.rmtree(target, ignore_errors=True)
