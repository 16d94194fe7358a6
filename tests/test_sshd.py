"""The throwaway sshd harness: logins, host key checking and each simulated failure."""

from __future__ import annotations

import errno
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from sshd import SshServer

ANY_DEAD_SESSION_ERROR = (OSError, EOFError, paramiko.SSHException)


@pytest.fixture
def client(ssh_server: SshServer) -> Iterator[paramiko.SSHClient]:
    with ssh_server.connect() as client:
        yield client


@pytest.fixture
def remote_dir(ssh_server: SshServer) -> Path:
    """A fresh folder under the server's root, so tests sharing the server do not collide."""
    folder = ssh_server.root / uuid.uuid4().hex[:12]
    folder.mkdir()
    return folder


def test_key_login_and_sftp_round_trip(
    client: paramiko.SSHClient, remote_dir: Path, tmp_path: Path
) -> None:
    sftp = client.open_sftp()
    sftp.putfo(io.BytesIO(b"patrons delta"), f"{remote_dir}/delta.zip.part")
    sftp.rename(f"{remote_dir}/delta.zip.part", f"{remote_dir}/delta.zip")
    sftp.get(f"{remote_dir}/delta.zip", str(tmp_path / "back.zip"))
    sftp.close()

    assert sorted(os.listdir(remote_dir)) == ["delta.zip"]
    assert (remote_dir / "delta.zip").read_bytes() == b"patrons delta"
    assert (tmp_path / "back.zip").read_bytes() == b"patrons delta"


def test_listdir_shows_files_written_on_the_server(
    client: paramiko.SSHClient, remote_dir: Path
) -> None:
    (remote_dir / "a.zip").write_bytes(b"a")
    (remote_dir / "b.zip").write_bytes(b"bb")

    sftp = client.open_sftp()
    sizes = {entry.filename: entry.st_size for entry in sftp.listdir_attr(str(remote_dir))}
    sftp.close()

    assert sizes == {"a.zip": 1, "b.zip": 2}


def test_known_hosts_holds_the_servers_key(
    ssh_server: SshServer, client: paramiko.SSHClient
) -> None:
    transport = client.get_transport()
    assert transport is not None
    known = paramiko.HostKeys(str(ssh_server.known_hosts))
    assert known.lookup(f"[{ssh_server.host}]:{ssh_server.port}") == {
        "ssh-ed25519": transport.get_remote_server_key()
    }


def test_wrong_host_key_is_rejected(ssh_server: SshServer) -> None:
    with pytest.raises(paramiko.BadHostKeyException):
        ssh_server.connect(known_hosts=ssh_server.wrong_known_hosts)


def test_unknown_host_is_rejected(ssh_server: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")

    with pytest.raises(paramiko.SSHException, match="not found in known_hosts") as caught:
        ssh_server.connect(known_hosts=empty)

    assert not isinstance(caught.value, paramiko.BadHostKeyException)


def test_key_missing_from_authorized_keys_is_refused(ssh_server: SshServer) -> None:
    with pytest.raises(paramiko.AuthenticationException):
        ssh_server.connect(key_file=ssh_server.unauthorized_key_file)


def test_encrypted_key_logs_in_with_its_passphrase(ssh_server: SshServer) -> None:
    with pytest.raises(paramiko.PasswordRequiredException):
        paramiko.Ed25519Key.from_private_key_file(str(ssh_server.encrypted_key_file))

    with ssh_server.connect(
        key_file=ssh_server.encrypted_key_file, passphrase=ssh_server.passphrase
    ) as client:
        sftp = client.open_sftp()
        assert sftp.normalize(str(ssh_server.root)) == str(ssh_server.root)
        sftp.close()


def test_full_disk_fails_the_write(ssh_server: SshServer, client: paramiko.SSHClient) -> None:
    full = ssh_server.full_dir()
    sftp = client.open_sftp()

    with pytest.raises(OSError) as caught:
        with sftp.open(f"{full}/delta.zip", "wb") as remote:
            remote.write(b"x" * 100_000)

    if ssh_server.full_disk_is_real:
        # OpenSSH's SFTP server sends ENOSPC as the generic SSH_FX_FAILURE.
        assert caught.value.args == ("Failure",)
        assert os.statvfs(full).f_bavail == 0
        assert (full / "delta.zip").stat().st_size == 0
    else:
        assert caught.value.errno == errno.EACCES
    sftp.close()


def test_full_disk_with_some_room_takes_a_small_file_only(
    ssh_server: SshServer, client: paramiko.SSHClient
) -> None:
    full = ssh_server.full_dir(free_bytes=20_000)
    if not ssh_server.full_disk_is_real:
        pytest.skip("mounting a tmpfs needs root; full_dir() is only read-only here")
    sftp = client.open_sftp()

    sftp.putfo(io.BytesIO(b"s" * 20_000), f"{full}/small.zip")
    # paramiko's put() pipelines its writes and ignores their errors; its size check catches it.
    with pytest.raises(OSError, match="size mismatch in put"):
        sftp.putfo(io.BytesIO(b"b" * 20_000), f"{full}/big.zip")
    sftp.close()

    assert (full / "small.zip").stat().st_size == 20_000
    assert (full / "big.zip").stat().st_size < 20_000


def test_dropped_connection_kills_the_session_mid_transfer(
    ssh_server: SshServer, remote_dir: Path
) -> None:
    with ssh_server.connect() as client:
        sftp = client.open_sftp()
        remote = sftp.open(f"{remote_dir}/delta.zip", "wb")
        remote.write(b"x" * 65_536)

        ssh_server.drop_connections()

        with pytest.raises(ANY_DEAD_SESSION_ERROR):
            remote.write(b"y" * 65_536)
            remote.close()
        # The whole SSH connection is gone, not only this SFTP channel.
        with pytest.raises(ANY_DEAD_SESSION_ERROR):
            client.open_sftp()
    assert (remote_dir / "delta.zip").stat().st_size == 65_536

    with ssh_server.connect() as client:
        assert "delta.zip" in client.open_sftp().listdir(str(remote_dir))


def test_stopped_server_refuses_connections_until_started(ssh_server: SshServer) -> None:
    with ssh_server.connect() as client:
        sftp = client.open_sftp()
        try:
            ssh_server.stop()
            assert not ssh_server.running
            with pytest.raises(ANY_DEAD_SESSION_ERROR):
                sftp.listdir(str(ssh_server.root))
            with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError):
                ssh_server.connect()
        finally:
            ssh_server.start()

    with ssh_server.connect() as client:
        assert client.open_sftp().normalize(".")
