"""Transports: a folder, and a real OpenSSH server on loopback with strict host keys."""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from sshd import SshServer

from deltasync.config import DeliveryConfig, SftpSettings
from deltasync.delivery import open_transport
from deltasync.delivery.folder import FolderTransport
from deltasync.delivery.sftp import SftpTransport
from deltasync.errors import DeliveryError, RemoteFileMissing


@pytest.fixture
def ssh(ssh_server: SshServer) -> SshServer:
    return ssh_server


@pytest.fixture
def delta(tmp_path: Path) -> Path:
    path = tmp_path / "outbox" / "patrons_000001_20270104T060000Z.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        # Random-looking content so compression cannot make it small.
        archive.writestr("part01.xml", os.urandom(200_000).hex())
    return path


def settings(ssh: SshServer, **changes: object) -> SftpSettings:
    base = SftpSettings(
        host=ssh.host,
        port=ssh.port,
        username=ssh.username,
        key_file=ssh.key_file,
        known_hosts=ssh.known_hosts,
        connect_timeout=5,
        operation_timeout=10,
        attempts=3,
        backoff_seconds=0.05,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def remote_folder(ssh: SshServer, name: str) -> Path:
    folder = ssh.root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- folder ----------------------------------------------------------------------------------


def test_folder_upload_list_rename(tmp_path: Path, delta: Path) -> None:
    inbox = tmp_path / "alma-inbox"
    inbox.mkdir()
    transport = open_transport(DeliveryConfig("dir", str(inbox)))
    assert isinstance(transport, FolderTransport)
    uploaded = transport.upload(delta, delta.name)
    assert uploaded.size == delta.stat().st_size
    assert sha(inbox / delta.name) == sha(delta)
    assert [f.name for f in transport.list()] == [delta.name]
    transport.rename(delta.name, delta.name + ".handled")
    assert [f.name for f in transport.list()] == [delta.name + ".handled"]
    with pytest.raises(RemoteFileMissing, match="not there any more"):
        transport.rename(delta.name, "x")


def test_folder_upload_never_overwrites_a_file_of_the_same_name(
    tmp_path: Path, delta: Path
) -> None:
    inbox = tmp_path / "alma-inbox"
    inbox.mkdir()
    (inbox / delta.name).write_bytes(b"another file, maybe already read by Alma")
    with pytest.raises(DeliveryError) as caught:
        FolderTransport(inbox).upload(delta, delta.name)
    assert str(caught.value) == (
        f"{inbox / delta.name}: a file of that name is already in the delivery folder; "
        "refusing to overwrite it"
    )
    assert caught.value.transient is False
    assert (inbox / delta.name).read_bytes() == b"another file, maybe already read by Alma"
    assert [p.name for p in inbox.iterdir()] == [delta.name]  # no temporary left


def test_folder_failure_is_a_clear_error(tmp_path: Path, delta: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.write_text("a file where the folder should be")
    with pytest.raises(DeliveryError, match=f"{inbox / delta.name}: cannot deliver") as caught:
        FolderTransport(inbox).upload(delta, delta.name)
    assert caught.value.transient is True
    assert inbox.read_text() == "a file where the folder should be"


# -- sftp ------------------------------------------------------------------------------------


def test_sftp_upload_is_atomic_and_checked(ssh: SshServer, delta: Path) -> None:
    folder = remote_folder(ssh, "upload")
    with SftpTransport(settings(ssh), str(folder)) as transport:
        assert transport.describe() == f"sftp://{ssh.username}@{ssh.host}:{ssh.port}{folder}"
        uploaded = transport.upload(delta, delta.name)
        assert uploaded.size == delta.stat().st_size
        assert sha(folder / delta.name) == sha(delta)
        assert [p.name for p in folder.iterdir()] == [delta.name]  # no temporary left
        (folder / "notes").mkdir(exist_ok=True)  # sub-folders are not files
        assert [f.name for f in transport.list()] == [delta.name]
        transport.rename(delta.name, delta.name + ".withdrawn")
        assert (folder / (delta.name + ".withdrawn")).exists()
        with pytest.raises(RemoteFileMissing):
            transport.rename(delta.name, "again")


def test_sftp_upload_is_private_and_never_overwrites(ssh: SshServer, delta: Path) -> None:
    folder = remote_folder(ssh, "private")
    with SftpTransport(settings(ssh), str(folder)) as transport:
        transport.upload(delta, delta.name)
        assert stat.S_IMODE((folder / delta.name).stat().st_mode) == 0o600
        (folder / delta.name).write_bytes(b"another file")
        with pytest.raises(DeliveryError) as caught:
            transport.upload(delta, delta.name)
        assert str(caught.value) == (
            f"{transport.describe()}/{delta.name}: a file of that name is already on the "
            "server; refusing to overwrite it"
        )
        assert caught.value.transient is False
        transport.remove(delta.name)
        transport.remove(delta.name)  # gone already: not an error
    assert list(folder.iterdir()) == []


def test_sftp_changed_host_key_is_refused(ssh: SshServer, delta: Path) -> None:
    folder = remote_folder(ssh, "hostkey")
    transport = SftpTransport(settings(ssh, known_hosts=ssh.wrong_known_hosts), str(folder))
    with pytest.raises(DeliveryError) as caught:
        transport.upload(delta, delta.name)
    assert "host key does not match" in str(caught.value)
    assert caught.value.transient is False
    assert list(folder.iterdir()) == []


def test_sftp_unknown_host_is_refused_not_added(
    ssh: SshServer, tmp_path: Path, delta: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    transport = SftpTransport(settings(ssh, known_hosts=empty), str(remote_folder(ssh, "u")))
    with pytest.raises(DeliveryError, match="host key is not in .*refusing to connect"):
        transport.list()
    assert empty.read_text() == ""


def test_sftp_refused_login(ssh: SshServer, delta: Path) -> None:
    transport = SftpTransport(
        settings(ssh, key_file=ssh.unauthorized_key_file), str(remote_folder(ssh, "login"))
    )
    with pytest.raises(DeliveryError, match=f"login refused for {ssh.username}") as caught:
        transport.upload(delta, delta.name)
    assert caught.value.transient is False


def test_sftp_encrypted_key_with_passphrase_from_environment(
    ssh: SshServer, delta: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = remote_folder(ssh, "encrypted")
    config = settings(ssh, key_file=ssh.encrypted_key_file, passphrase_env="TEST_SFTP_PASS")
    with pytest.raises(DeliveryError, match="TEST_SFTP_PASS, which is not set") as caught:
        SftpTransport(config, str(folder)).list()
    assert caught.value.transient is False
    monkeypatch.setenv("TEST_SFTP_PASS", ssh.passphrase)
    with SftpTransport(config, str(folder)) as transport:
        transport.upload(delta, delta.name)
    assert sha(folder / delta.name) == sha(delta)


def test_sftp_full_disk_is_a_clear_error_and_leaves_nothing(ssh: SshServer, delta: Path) -> None:
    folder = ssh.full_dir(free_bytes=16 * 1024)
    transport = SftpTransport(settings(ssh, attempts=2), str(folder))
    with pytest.raises(DeliveryError) as caught:
        transport.upload(delta, delta.name)
    message = str(caught.value)
    assert message.startswith(f"{transport.describe()}: upload of {delta.name} failed: ")
    if ssh.full_disk_is_real:
        assert "full disk" in message
        assert caught.value.transient is True  # freed space makes the next try work
    assert list(folder.iterdir()) == []  # neither the file nor its temporary


def test_sftp_dropped_connection_is_retried_on_a_new_one(ssh: SshServer, delta: Path) -> None:
    folder = remote_folder(ssh, "dropped")
    with SftpTransport(settings(ssh), str(folder)) as transport:
        transport.list()  # connected
        ssh.drop_connections()
        transport.upload(delta, delta.name)  # the first attempt meets a dead connection
    assert sha(folder / delta.name) == sha(delta)


def test_sftp_server_down_is_transient(ssh: SshServer, delta: Path) -> None:
    folder = remote_folder(ssh, "down")
    ssh.stop()
    try:
        transport = SftpTransport(settings(ssh, attempts=2), str(folder))
        with pytest.raises(DeliveryError, match="connection refused|Unable to connect") as caught:
            transport.upload(delta, delta.name)
        assert caught.value.transient is True
    finally:
        ssh.start()
    assert not (folder / delta.name).exists()


def test_sftp_missing_remote_folder(ssh: SshServer) -> None:
    transport = SftpTransport(settings(ssh), str(ssh.root / "no-such-folder"))
    with pytest.raises(DeliveryError, match="remote folder does not exist"):
        transport.list()
