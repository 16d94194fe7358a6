"""`deltasync doctor`: each fault named with exit 1, against a real sshd and the Alma simulator."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import generate_extract
import pytest
from alembic import command
from almasim import AlmaApiServer, AlmaSimulator, FolderSource
from helpers import invoke, listing
from sqlalchemy import create_engine, text
from sshd import SshServer, sshd_server

from deltasync.store.engine import alembic_config

API_KEY = "doctor-test-key"
SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server")


def sftp_server_binary() -> str:
    for candidate in SFTP_SERVERS:
        if os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("OpenSSH's sftp-server not found (it comes with openssh-server)")


@pytest.fixture(scope="module")
def read_only_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """An sshd whose SFTP server is read-only (sftp-server -R): writes are refused even for
    root, which a folder's mode bits would not stop."""
    script = f"#!/bin/sh\nexec {sftp_server_binary()} -R\n"
    yield from sshd_server(tmp_path_factory, sftp=script)


def write_config(site: Path, feed: list[str], *, top: list[str] | None = None) -> Path:
    lines = [*(top or []), "[state]", f'url = "sqlite:///{site / "var" / "deltasync.db"}"']
    lines += ["[feeds.patrons]", 'extract = "incoming/patrons-*.xml"', *feed]
    path = site / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """An installation with a fresh extract, as `init` would lay it out."""
    root = tmp_path / "site"
    (root / "incoming").mkdir(parents=True)
    generate_extract.write_extract(root / "incoming" / "patrons-day0.xml", patrons=5, day=0)
    return root


def sftp_lines(ssh: SshServer, remote: str, **overrides: object) -> list[str]:
    settings: dict[str, object] = {
        "host": ssh.host,
        "port": ssh.port,
        "username": ssh.username,
        "key_file": str(ssh.key_file),
        "known_hosts": str(ssh.known_hosts),
        "connect_timeout": 5,
        **overrides,
    }
    return ['transport = "sftp"', f"remote_dir = {json.dumps(remote)}", "[feeds.patrons.sftp]"] + [
        f"{key} = {json.dumps(value)}" for key, value in settings.items()
    ]


def doctor(config: Path, *args: str) -> tuple[int, list[str], str]:
    result = invoke(config, "doctor", *args)
    return result.exit_code, result.stdout.splitlines(), result.stderr


@pytest.fixture
def remote(ssh_server: SshServer) -> Path:
    folder = ssh_server.root / f"alma-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def test_a_healthy_sftp_setup_passes_and_nothing_changes(
    site: Path, ssh_server: SshServer, remote: Path
) -> None:
    config = write_config(site, sftp_lines(ssh_server, str(remote)))
    before, remote_before = listing(site), listing(remote)
    code, lines, stderr = doctor(config)
    assert code == 0, lines
    server = f"{ssh_server.host}:{ssh_server.port}"
    assert [line.split(": ")[0] for line in lines] == [
        "ok    config",
        "ok    store",
        "ok    disk",
        "ok    feed patrons",  # outbox
        "ok    feed patrons",  # extract
        "ok    feed patrons",  # sftp server
        "ok    feed patrons",  # host key
        "ok    feed patrons",  # login
        "ok    feed patrons",  # remote_dir exists
        "ok    feed patrons",  # remote_dir writable
        "doctor",
    ]
    assert lines[1] == (
        f"ok    store: sqlite:///{site / 'var' / 'deltasync.db'} does not exist yet; the first "
        "run creates it"
    )
    outbox = site / "outbox" / "patrons"
    assert (
        lines[3]
        == f"ok    feed patrons: outbox: {outbox} does not exist yet; the first run creates it"
    )
    assert lines[4].startswith(
        f"ok    feed patrons: extract: {site / 'incoming' / 'patrons-day0.xml'} ("
    )
    assert lines[5] == f"ok    feed patrons: sftp server: {server} accepts connections"
    assert lines[6].startswith(
        "ok    feed patrons: sftp host key: known and matching (ssh-ed25519 SHA256:"
    )
    assert lines[7] == (
        f"ok    feed patrons: sftp login: {ssh_server.username} logged in with "
        f"{ssh_server.key_file}"
    )
    assert lines[8] == f"ok    feed patrons: sftp remote_dir: {remote} exists"
    assert lines[9] == f"ok    feed patrons: sftp remote_dir: {remote} is writable"
    assert lines[10] == "doctor: every check passed"
    assert stderr == ""
    # Changed nothing: no store, no outbox, no probe file left on the server.
    assert listing(site) == before and not (site / "var").exists() and not outbox.exists()
    assert listing(remote) == remote_before


def fails(config: Path, expected: str) -> None:
    """doctor exits 1, and exactly one line fails: ``expected`` (whole, or its start)."""
    code, lines, stderr = doctor(config)
    assert code == 1, lines
    failed = [line for line in lines if line.startswith("FAIL")]
    assert len(failed) == 1, lines
    assert failed[0] == expected or failed[0].startswith(expected), failed[0]
    assert stderr == "Error: doctor found 1 problem(s)\n"


def test_a_wrong_host_key_is_named(site: Path, ssh_server: SshServer, remote: Path) -> None:
    wrong = ssh_server.wrong_known_hosts
    config = write_config(site, sftp_lines(ssh_server, str(remote), known_hosts=str(wrong)))
    fails(
        config,
        f"FAIL  feed patrons: sftp host key: does not match {wrong}: the server offers ssh-ed25519 "
        "SHA256:",
    )
    code, lines, _ = doctor(config)
    assert lines[-1].endswith(
        "(it changed, or this is not the right server); fix: ask the server's administrator; "
        f"only if the key was changed on purpose, replace its line in {wrong}"
    )


def test_an_unknown_host_is_named_with_the_keyscan_to_run(
    site: Path, ssh_server: SshServer, remote: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = write_config(site, sftp_lines(ssh_server, str(remote), known_hosts=str(empty)))
    code, lines, _ = doctor(config)
    assert code == 1
    assert lines[-1].startswith(
        f"FAIL  feed patrons: sftp host key: not in {empty} (the server offers ssh-ed25519 SHA256:"
    )
    assert lines[-1].endswith(
        "fix: check that fingerprint with the server's administrator, then: ssh-keyscan -p "
        f"{ssh_server.port} {ssh_server.host} >> {empty}"
    )
    fails(config, f"FAIL  feed patrons: sftp host key: not in {empty}")


def test_a_refused_login_is_named(site: Path, ssh_server: SshServer, remote: Path) -> None:
    key = ssh_server.unauthorized_key_file
    config = write_config(site, sftp_lines(ssh_server, str(remote), key_file=str(key)))
    server = f"{ssh_server.host}:{ssh_server.port}"
    fails(
        config,
        f"FAIL  feed patrons: sftp login: {server} refused {ssh_server.username} with {key}: "
        "Authentication failed.; fix: ask the server's administrator to authorize "
        f"{key}.pub for {ssh_server.username}",
    )


def test_a_missing_remote_folder_is_named(site: Path, ssh_server: SshServer) -> None:
    missing = ssh_server.root / f"absent-{uuid.uuid4().hex[:8]}"
    config = write_config(site, sftp_lines(ssh_server, str(missing)))
    fails(
        config,
        f"FAIL  feed patrons: sftp remote_dir: {missing} does not exist on the server; fix: set "
        "remote_dir to the folder the SIS integration profile reads",
    )
    assert not missing.exists()


def test_a_read_only_remote_folder_is_named(site: Path, read_only_server: SshServer) -> None:
    folder = read_only_server.root / "alma"
    folder.mkdir(exist_ok=True)
    config = write_config(site, sftp_lines(read_only_server, str(folder)))
    fails(
        config,
        f"FAIL  feed patrons: sftp remote_dir: {folder} is not writable: permission denied; "
        "fix: ask the server's administrator to let the account write to " + str(folder),
    )
    assert list(folder.iterdir()) == []


def test_an_unreachable_server_is_named(site: Path, ssh_server: SshServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once it is closed
    config = write_config(site, sftp_lines(ssh_server, "/alma", port=port))
    fails(
        config,
        f"FAIL  feed patrons: sftp server: 127.0.0.1:{port} is not reachable: connection "
        "refused; fix: check sftp.host and sftp.port, and that a firewall lets this machine "
        "through",
    )


def test_a_missing_delivery_folder_is_named_and_not_created(site: Path) -> None:
    share = site / "mnt" / "alma"
    config = write_config(site, ['transport = "dir"', f'remote_dir = "{share}"'])
    fails(
        config,
        f"FAIL  feed patrons: delivery folder: {share} does not exist (deltasync never creates "
        "it); fix: mount the share, or create the folder Alma reads",
    )
    assert not share.exists() and not share.parent.exists()
    share.mkdir(parents=True)
    code, lines, _ = doctor(config)
    assert (
        code == 0
        and f"ok    feed patrons: delivery folder: {share} exists and is writable" in lines
    )
    assert list(share.iterdir()) == []


@pytest.fixture
def alma(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AlmaApiServer]:
    inbox = tmp_path / "alma-inbox"
    inbox.mkdir()
    monkeypatch.setenv("ALMA_API_KEY", API_KEY)
    with AlmaApiServer(AlmaSimulator(FolderSource(inbox)), API_KEY) as api:
        yield api


def alma_config(site: Path, api: AlmaApiServer, job_id: str) -> Path:
    inbox = site.parent / "alma-inbox"
    feed = ['transport = "dir"', f'remote_dir = "{inbox}"', 'confirm = "alma-api"']
    top = ["[alma]", f'base_url = "{api.base_url}"', 'api_key_env = "ALMA_API_KEY"']
    # [alma] must come after the feed's keys in TOML: write it last.
    path = write_config(site, [*feed, f'job_id = "{job_id}"'])
    path.write_text(path.read_text() + "\n".join(top) + "\n")
    return path


def test_the_alma_api_key_and_job_are_checked(
    site: Path, alma: AlmaApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = alma.simulator.job_id
    config = alma_config(site, alma, job)
    code, lines, _ = doctor(config)
    assert code == 0, lines
    assert (
        f"ok    feed patrons: Alma API: the key works and job {job} exists "
        f"({alma.simulator.job_name})"
    ) in lines
    assert ("GET", f"/almaws/v1/conf/jobs/{job}") in alma.requests

    monkeypatch.setenv("ALMA_API_KEY", "not-the-key")
    fails(
        config,
        "FAIL  feed patrons: Alma API: Alma refused the key in ALMA_API_KEY: Alma API "
        f"conf/jobs/{job}: HTTP 401: UNAUTHORIZED: API-key not defined or not configured to "
        "allow this API.; fix: use a key with read access to Configuration, for this institution",
    )
    monkeypatch.delenv("ALMA_API_KEY")
    fails(
        config,
        "FAIL  feed patrons: Alma API: alma.api_key_env names ALMA_API_KEY, which is not set (or "
        "empty); fix: export ALMA_API_KEY=<the API key>",
    )


def test_an_unknown_job_is_named(site: Path, alma: AlmaApiServer) -> None:
    config = alma_config(site, alma, "S99999")
    fails(
        config,
        "FAIL  feed patrons: Alma API: no job S99999: Alma API conf/jobs/S99999: HTTP 400: "
        "UNKNOWN_JOB: Job ID S99999 is not valid.; fix: set job_id to the SIS synchronize job's "
        "ID (Alma: Monitor Jobs)",
    )


def test_the_store_is_read_never_migrated(site: Path) -> None:
    config = write_config(site, [])
    url = f"sqlite:///{site / 'var' / 'deltasync.db'}"
    (site / "var").mkdir()
    engine = create_engine(url)
    alembic = alembic_config()
    with engine.begin() as connection:
        alembic.attributes["connection"] = connection
        command.upgrade(alembic, "0005")
    code, lines, _ = doctor(config)
    assert code == 0, lines
    head = sorted(
        p.name[:4] for p in (Path(__file__).parent.parent / "migrations" / "versions").glob("0*.py")
    )[-1]
    assert lines[1] == (
        f"ok    store: {url} is at migration 0005; the next command migrates it to {head} "
        "(doctor does not)"
    )
    with engine.connect() as connection:
        assert (
            connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
        )
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        connection.commit()
    engine.dispose()
    fails(
        config,
        f"FAIL  store: {url} was written by a newer deltasync (revision 9999); fix: upgrade "
        "deltasync",
    )


def test_a_stale_extract_and_a_bad_config(site: Path) -> None:
    config = write_config(site, [])
    old = time.time() - 40 * 3600
    extract = site / "incoming" / "patrons-day0.xml"
    os.utime(extract, (old, old))
    fails(config, f"FAIL  feed patrons: extract: the newest match, {extract}, was modified ")
    code, lines, _ = doctor(config)
    assert lines[4].endswith(
        "(40 h ago); fix: check that the SIS export runs (doctor wants one modified within 36 h)"
    )
    shutil.rmtree(site / "incoming")
    fails(
        config,
        f"FAIL  feed patrons: extract: no file matches {site / 'incoming' / 'patrons-*.xml'}; fix: "
        "put the SIS export there, or correct `extract`",
    )
    config.write_text("[feeds.patrons]\nrecords_per_part = 0\n")
    fails(
        config,
        f"FAIL  config: {config}: feeds.patrons.records_per_part: must be a whole number of at "
        "least 1; fix: correct the configuration",
    )
    code, lines, stderr = doctor(config)
    assert stderr == "Error: doctor found 1 problem(s)\n" and len(lines) == 1


def test_doctor_checks_every_feed_or_the_one_asked_for(site: Path) -> None:
    config = write_config(site, [])
    config.write_text(config.read_text() + '[feeds.staff]\nextract = "incoming/staff-*.xml"\n')
    code, lines, _ = doctor(config)
    assert code == 1  # no staff extract
    assert [line.split(":")[0] for line in lines if "feed " in line] == [
        "ok    feed patrons",
        "ok    feed patrons",
        "ok    feed patrons",
        "ok    feed staff",
        "FAIL  feed staff",
        "ok    feed staff",
    ]
    code, lines, _ = doctor(config, "--feed", "patrons")
    assert code == 0 and not any("feed staff" in line for line in lines)
    assert invoke(config, "--feed", "patrons", "doctor").exit_code == 0
    both = invoke(config, "doctor", "--feed", "patrons", "--all")
    assert both.exit_code == 2 and "--all checks every feed; leave out --feed" in both.output
    unknown = invoke(config, "doctor", "--feed", "nope")
    assert unknown.exit_code == 1
    assert unknown.output == (
        f"Error: {config}: no feed named 'nope' (configured: patrons, staff)\n"
    )
