"""Where the simulated Alma reads zip files: a local folder or an SFTP server."""

from __future__ import annotations

import builtins
import io
import posixpath
import stat
from pathlib import Path
from typing import Protocol

import paramiko


class Source(Protocol):
    """Where the job finds its input files: the profile's SFTP directory."""

    def read(self, name: str) -> bytes: ...
    def rename(self, old: str, new: str) -> None: ...
    def mtime(self, name: str) -> float: ...
    def list(self) -> builtins.list[str]: ...


class FolderSource:
    """The input directory as a local folder."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def read(self, name: str) -> bytes:
        """The bytes of one file."""
        return (self.path / name).read_bytes()

    def rename(self, old: str, new: str) -> None:
        """Rename one file in place."""
        (self.path / old).replace(self.path / new)

    def mtime(self, name: str) -> float:
        """The modification time of one file."""
        return (self.path / name).stat().st_mtime

    def list(self) -> builtins.list[str]:
        """Names of the regular files directly in the folder."""
        return sorted(p.name for p in self.path.iterdir() if p.is_file())


class SftpSource:
    """The input directory on an SFTP server (key auth, host key checked against known_hosts)."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        key_file: Path | str,
        known_hosts: Path | str,
        remote_dir: str,
    ) -> None:
        self.host, self.port, self.username = host, port, username
        self.key_file, self.known_hosts, self.remote_dir = key_file, known_hosts, remote_dir
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def _open(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            client = paramiko.SSHClient()
            client.load_host_keys(str(self.known_hosts))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(
                self.host,
                port=self.port,
                username=self.username,
                key_filename=str(self.key_file),
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
            )
            self._client, self._sftp = client, client.open_sftp()
        return self._sftp

    def _path(self, name: str) -> str:
        return posixpath.join(self.remote_dir, name)

    def read(self, name: str) -> bytes:
        """The bytes of one file."""
        buffer = io.BytesIO()
        self._open().getfo(self._path(name), buffer)
        return buffer.getvalue()

    def rename(self, old: str, new: str) -> None:
        """Rename one file; like the folder's rename it replaces an existing target."""
        self._open().posix_rename(self._path(old), self._path(new))

    def mtime(self, name: str) -> float:
        """The modification time of one file (SFTP carries whole seconds)."""
        return float(self._open().stat(self._path(name)).st_mtime or 0)

    def close(self) -> None:
        """Close the connection; the next operation reconnects."""
        if self._client is not None:
            self._client.close()
        self._client = self._sftp = None

    def __enter__(self) -> SftpSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list(self) -> builtins.list[str]:
        """Names of the regular files directly in the remote directory."""
        entries = self._open().listdir_attr(self.remote_dir)
        return sorted(e.filename for e in entries if e.st_mode and stat.S_ISREG(e.st_mode))
