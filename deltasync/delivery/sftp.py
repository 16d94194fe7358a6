"""The ``sftp`` transport: deliver to the SFTP server Alma's integration profile reads.

Key authentication only; the server's host key must already be in the configured known_hosts
file (an unknown or changed key is refused, never added). Every network step has a deadline
(session.py). Transient failures (dropped connections, a refused connection, a full disk) are
retried with exponential backoff on a fresh connection; a server that let a deadline pass, or
could not be connected to in all attempts, is not tried again by this transport until it is
closed (the end of a run), so a dead server costs a run one deadline, not one per operation
and attempt. Uploads go to a hidden, unpredictable temporary name created exclusively and
made 0600 before any data is written, are checked for size, and only then renamed to the
final ``.zip``, which is never overwritten.
"""

from __future__ import annotations

import errno
import logging
import socket
import stat
import sys
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
from .session import PARAMIKO_LOG, Session, Unanswered, load_key, open_session

T = TypeVar("T")
PRIVATE_MODE = 0o600
"""Delta files hold personal data: other accounts on the server must not read them."""
UPLOAD_BLOCK = 32768
log = logging.getLogger("deltasync.sftp")


class SftpTransport:
    """Uploads, lists and renames files in one folder of an SFTP server."""

    def __init__(self, settings: SftpSettings, remote_dir: str) -> None:
        self.settings = settings
        self.remote_dir = PurePosixPath(remote_dir)
        self._session: Session | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._gave_up: str | None = None
        """Why the server is not tried again until close(), once it failed that way."""

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
        self._disconnect()
        self._gave_up = None

    def __enter__(self) -> SftpTransport:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- connection and error handling -------------------------------------------------------

    def _retrying(self, what: str, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        if self._gave_up is not None:
            raise DeliveryError(
                f"{self.describe()}: {what} not tried: earlier in this run, {self._gave_up}",
                transient=True,
            )

        def attempt() -> T:
            sftp = self._connection(what)
            try:
                return operation(sftp)
            except DeltasyncError:
                raise
            except Exception as exc:
                error = self._explain(what, exc)
                # Start the next attempt on a fresh connection.
                self._disconnect()
                raise error from exc

        retrying = Retrying(
            stop=stop_after_attempt(self.settings.attempts),
            wait=wait_exponential(multiplier=self.settings.backoff_seconds, max=60),
            retry=retry_if_exception(_worth_retrying),
            before_sleep=self._forget_connection,
            reraise=True,
        )
        try:
            result: T = retrying(attempt)
        except _ServerFailed as exc:
            self._gave_up = exc.reason
            raise
        return result

    def _forget_connection(self, state: RetryCallState) -> None:
        self._disconnect()
        error = None if state.outcome is None else state.outcome.exception()
        pause = 0.0 if state.next_action is None else state.next_action.sleep
        log.warning(
            "attempt %d of %d failed: %s; trying again in %.0f s",
            state.attempt_number,
            self.settings.attempts,
            error,
            pause,
        )

    def _disconnect(self) -> None:
        if self._session is not None:
            self._session.close()
        self._sftp = None

    def _connection(self, what: str) -> paramiko.SFTPClient:
        if self._sftp is not None:
            return self._sftp
        s = self.settings
        key = load_key(s)  # before any connection: a key problem is not the network's
        session = Session()
        try:
            session.client.load_host_keys(str(s.known_hosts))
        except OSError as exc:
            raise DeliveryError(
                f"{s.known_hosts}: cannot read known_hosts: {exc.strerror}", transient=False
            ) from exc
        session.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self._session = session
        try:
            open_session(s, session, key)
        except Exception as exc:
            session.close()  # no half-open client or transport thread per failed attempt
            raise self._explain(what, exc, connecting=True) from exc
        except BaseException:
            session.close()
            raise
        assert session.sftp is not None
        self._sftp = session.sftp
        return self._sftp

    def _discard(self, remote: str) -> None:
        if isinstance(sys.exc_info()[1], TimeoutError):
            # Called while an upload fails: a server that stopped answering would only make
            # the removal wait out another operation_timeout. The hidden file is harmless
            # (Alma reads only *.zip), and retention deletes it later.
            return
        try:
            if self._sftp is not None:
                self._sftp.remove(remote)
        except Exception:  # noqa: BLE001 - best effort: the connection may be gone
            pass

    def _explain(self, what: str, exc: BaseException, *, connecting: bool = False) -> DeliveryError:
        where = f"{self.describe()}: {what}"
        s = self.settings
        server = f"the server at {s.host}:{s.port}"
        if isinstance(exc, Unanswered):
            return _ServerFailed(where, f"{server} {exc}", retry=False)
        if isinstance(exc, TimeoutError):  # the channel's timeout: an operation's reply
            return _ServerFailed(
                where, f"{server} did not answer within {s.operation_timeout:g} s", retry=False
            )
        if isinstance(exc, paramiko.BadHostKeyException):
            return DeliveryError(
                f"{where}: the server's host key does not match {s.known_hosts} (it changed, "
                "or this is not the right server); refusing to connect. If the key was "
                "changed on purpose, update known_hosts",
                transient=False,
            )
        # Before AuthenticationException, which it is a subclass of.
        if isinstance(exc, paramiko.PasswordRequiredException):
            return DeliveryError(
                f"{s.key_file} is encrypted; name the environment variable holding its "
                "passphrase in sftp.passphrase_env",
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
        if connecting and isinstance(exc, ConnectionRefusedError):
            return _ServerFailed(
                where,
                f"connection refused by {s.host}:{s.port} (is the server up, and is the port "
                "right?)",
                retry=True,
            )
        if connecting and isinstance(exc, socket.gaierror):
            return _ServerFailed(where, f"cannot find host {s.host}: {exc.strerror}", retry=True)
        if isinstance(exc, PermissionError):
            return DeliveryError(f"{where}: permission denied by the server", transient=False)
        if isinstance(exc, OSError) and not isinstance(exc, socket.timeout | ConnectionError):
            detail = exc.strerror or str(exc) or type(exc).__name__
            if exc.errno == errno.ENOSPC or "Failure" in str(exc):
                detail += " (the server gave no reason; a full disk or quota is the usual cause)"
            if connecting:
                return _ServerFailed(where, detail, retry=True)
            return DeliveryError(f"{where} failed: {detail}", transient=True)
        session = self._session
        logged = PARAMIKO_LOG.pop(session.thread if session else None)
        if connecting and session is not None and not session.remote_version:
            return _ServerFailed(
                where,
                f"{server} closed the connection without answering SSH (is port {s.port} "
                "its SSH port?)",
                retry=True,
            )
        detail = _describe(exc)
        if logged and str(exc) not in logged:
            detail += f" ({logged})"  # paramiko's thread saw the cause the exception hides
        if connecting:
            return _ServerFailed(where, detail, retry=True)
        return DeliveryError(f"{where} failed: {detail}", transient=True)


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.lstat(path)
    except FileNotFoundError:
        return False
    return True


class _ServerFailed(DeliveryError):
    """The server could not be reached or let a deadline pass: worth a later run, not now."""

    def __init__(self, where: str, reason: str, *, retry: bool) -> None:
        super().__init__(f"{where} failed: {reason}", transient=True)
        self.reason = reason
        self.retry = retry
        """Whether another attempt in this operation may help (not after a deadline)."""


def _worth_retrying(exc: BaseException) -> bool:
    if isinstance(exc, _ServerFailed):
        return exc.retry
    return isinstance(exc, DeliveryError) and exc.transient


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    text: Any = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
