"""The ``sftp`` transport: deliver to the SFTP server Alma's integration profile reads.

Key authentication only; the server's host key must already be in the configured known_hosts
file (an unknown or changed key is refused, never added). Every network operation has a
timeout, and transient failures (timeouts, dropped connections) are retried with exponential
backoff on a fresh connection. Uploads go to a hidden, unpredictable temporary name created
exclusively and made 0600 before any data is written, are checked for size, and only then
renamed to the final ``.zip``, which is never overwritten.
"""

from __future__ import annotations

import errno
import socket
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import paramiko
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from ..config import SftpSettings
from ..errors import DeliveryError, DeltasyncError, RemoteFileMissing
from . import RemoteFile, temporary_name

T = TypeVar("T")
PRIVATE_MODE = 0o600
"""Delta files hold personal data: other accounts on the server must not read them."""
UPLOAD_BLOCK = 32768


class SftpTransport:
    """Uploads, lists and renames files in one folder of an SFTP server."""

    def __init__(self, settings: SftpSettings, remote_dir: str) -> None:
        self.settings = settings
        self.remote_dir = PurePosixPath(remote_dir)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def describe(self) -> str:
        s = self.settings
        return f"sftp://{s.username}@{s.host}:{s.port}{self.remote_dir}"

    def list(self) -> list[RemoteFile]:
        def operation(sftp: paramiko.SFTPClient) -> list[RemoteFile]:
            try:
                entries = sftp.listdir_attr(str(self.remote_dir))
            except FileNotFoundError as exc:
                raise DeliveryError(
                    f"{self.describe()}: remote folder does not exist", transient=False
                ) from exc
            return sorted(
                (
                    RemoteFile(e.filename, e.st_size or 0, float(e.st_mtime or 0))
                    for e in entries
                    if e.st_mode is not None and stat.S_ISREG(e.st_mode)
                ),
                key=lambda f: f.name,
            )

        return self._retrying("list", operation)

    def upload(self, local: Path, name: str) -> RemoteFile:
        expected = local.stat().st_size
        final = str(self.remote_dir / name)

        def operation(sftp: paramiko.SFTPClient) -> RemoteFile:
            if _exists(sftp, final):
                raise self._already_there(name)
            # A fresh name per attempt; "x" (O_EXCL on the server) refuses a planted symlink.
            temporary = str(self.remote_dir / temporary_name(name))
            try:
                with sftp.open(temporary, "wbx") as remote, local.open("rb") as source:
                    # Private before the first byte: the file holds personal data.
                    remote.chmod(PRIVATE_MODE)
                    remote.set_pipelined(True)
                    for block in iter(lambda: source.read(UPLOAD_BLOCK), b""):
                        remote.write(block)
                size = sftp.stat(temporary).st_size
                if size != expected:
                    # paramiko pipelines writes, and a server out of space may not say so.
                    raise DeliveryError(
                        f"{self.describe()}: upload of {local.name} failed: the server holds "
                        f"{size} of its {expected} bytes (a full disk or quota is the usual "
                        "cause)",
                        transient=True,
                    )
                try:
                    # Plain SFTP rename, unlike posix-rename, never replaces an existing file.
                    sftp.rename(temporary, final)
                except OSError:
                    if _exists(sftp, final):
                        raise self._already_there(name) from None
                    raise
                attributes = sftp.stat(final)
            except BaseException:
                self._discard(temporary)
                raise
            return RemoteFile(name, attributes.st_size or 0, float(attributes.st_mtime or 0))

        return self._retrying(f"upload of {local.name}", operation)

    def _already_there(self, name: str) -> DeliveryError:
        return DeliveryError(
            f"{self.describe()}/{name}: a file of that name is already on the server; "
            "refusing to overwrite it",
            transient=False,
        )

    def rename(self, old: str, new: str) -> None:
        source = str(self.remote_dir / old)

        def operation(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.rename(source, str(self.remote_dir / new))
            except FileNotFoundError as exc:
                raise RemoteFileMissing(f"{self.describe()}/{old}: not there any more") from exc

        self._retrying(f"rename of {old}", operation)

    def remove(self, name: str) -> None:
        path = str(self.remote_dir / name)

        def operation(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.remove(path)
            except FileNotFoundError:
                return

        self._retrying(f"removal of {name}", operation)

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        if self._client is not None:
            self._client.close()
        self._sftp = self._client = None

    def __enter__(self) -> SftpTransport:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- connection and error handling -------------------------------------------------------

    def _retrying(self, what: str, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        def attempt() -> T:
            try:
                return operation(self._connection())
            except DeltasyncError:
                raise
            except Exception as exc:
                # Start the next attempt on a fresh connection.
                self.close()
                raise self._explain(what, exc) from exc

        retrying = Retrying(
            stop=stop_after_attempt(self.settings.attempts),
            wait=wait_exponential(multiplier=self.settings.backoff_seconds, max=60),
            retry=retry_if_exception(_is_transient),
            before_sleep=self._forget_connection,
            reraise=True,
        )
        result: T = retrying(attempt)
        return result

    def _forget_connection(self, _state: RetryCallState) -> None:
        self.close()

    def _connection(self) -> paramiko.SFTPClient:
        if self._sftp is not None:
            return self._sftp
        s = self.settings
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(s.known_hosts))
        except OSError as exc:
            raise DeliveryError(
                f"{s.known_hosts}: cannot read known_hosts: {exc.strerror}", transient=False
            ) from exc
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                s.host,
                port=s.port,
                username=s.username,
                key_filename=str(s.key_file),
                passphrase=s.passphrase(),
                timeout=s.connect_timeout,
                banner_timeout=s.connect_timeout,
                auth_timeout=s.connect_timeout,
                channel_timeout=s.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
            sftp = client.open_sftp()
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(s.operation_timeout)
        except BaseException:
            client.close()  # no half-open client or transport thread per failed attempt
            raise
        self._client, self._sftp = client, sftp
        return sftp

    def _discard(self, remote: str) -> None:
        try:
            if self._sftp is not None:
                self._sftp.remove(remote)
        except Exception:  # noqa: BLE001 - best effort: the connection may be gone
            pass

    def _explain(self, what: str, exc: BaseException) -> DeliveryError:
        where = f"{self.describe()}: {what}"
        s = self.settings
        if isinstance(exc, paramiko.BadHostKeyException):
            return DeliveryError(
                f"{where}: the server's host key does not match {s.known_hosts} (it changed, "
                "or this is not the right server); refusing to connect. If the key was "
                "changed on purpose, update known_hosts",
                transient=False,
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return DeliveryError(
                f"{where}: login refused for {s.username} with key {s.key_file}: {exc}",
                transient=False,
            )
        if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
            return DeliveryError(
                f"{where}: the server's host key is not in {s.known_hosts}; refusing to "
                f"connect to an unknown server (add it with: ssh-keyscan -p {s.port} {s.host} "
                f">> {s.known_hosts}, after checking its fingerprint)",
                transient=False,
            )
        if isinstance(exc, paramiko.PasswordRequiredException):
            return DeliveryError(
                f"{where}: {s.key_file} is encrypted; name the variable holding its "
                "passphrase in sftp.passphrase_env",
                transient=False,
            )
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            return DeliveryError(
                f"{where} failed: connection refused by {s.host}:{s.port} (is the server up, "
                "and is the port right?)",
                transient=True,
            )
        if isinstance(exc, PermissionError):
            return DeliveryError(f"{where}: permission denied by the server", transient=False)
        if isinstance(exc, OSError) and not isinstance(exc, socket.timeout | ConnectionError):
            detail = exc.strerror or str(exc) or type(exc).__name__
            if exc.errno == errno.ENOSPC or "Failure" in str(exc):
                detail += " (the server gave no reason; a full disk or quota is the usual cause)"
            return DeliveryError(f"{where} failed: {detail}", transient=True)
        return DeliveryError(f"{where} failed: {_describe(exc)}", transient=True)


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError) and exc.transient


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    text: Any = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
