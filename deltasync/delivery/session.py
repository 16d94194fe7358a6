"""Opening an SFTP session with paramiko, every step under a deadline.

A server can accept the TCP connection and then say nothing, or log in and never answer the
SFTP version exchange; paramiko waits for some of these steps without any limit (the
subsystem request, the version exchange) and for others with limits of its own. Each step of
opening a session here (the TCP connection, the SSH handshake and login, starting SFTP) gets
``connect_timeout`` seconds, enforced by a watchdog that shuts the socket down when the step
outlasts it: every wait inside paramiko then ends, and the step raises :class:`Unanswered`
naming what the server did not do. Once open, the channel's own timeout
(``operation_timeout``) bounds every wait for a reply of a read, write, listing or rename.

The private key is read before any connection is made, so a missing, unreadable or encrypted
key is reported as such, naming the file, and costs no network round trip.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import paramiko

from ..config import SftpSettings
from ..errors import ConfigError, DeliveryError

KEEPALIVE_SECONDS = 30
"""Keeps the connection (and any NAT or firewall state on the way) alive while a run ingests
between reconciling and delivering."""
KEY_TYPES: tuple[type[paramiko.PKey], ...] = (
    paramiko.Ed25519Key,
    paramiko.ECDSAKey,
    paramiko.RSAKey,
)


class Unanswered(Exception):
    """The server let a deadline pass: it did not ``action`` within ``seconds``."""

    def __init__(self, action: str, seconds: float) -> None:
        super().__init__(f"did not {action} within {seconds:g} s")
        self.action = action
        self.seconds = seconds


class ParamikoLog(logging.Handler):
    """Keeps paramiko's log records off stderr and remembers each thread's first error.

    paramiko's transport thread logs its failures, tracebacks included, as ERROR records; with
    no handler configured, Python's last-resort handler prints them on stderr. The first error
    a transport thread logs often says more than the exception the caller sees ("Socket
    exception: Connection reset by peer" behind an EOFError), so it is kept for the message.
    Records still propagate, so a log an application configures receives them.
    """

    LIMIT = 64
    """Threads remembered at most: errors of transports this module never asks about."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self._first: dict[int, str] = {}
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread is None:
            return
        with self._guard:
            if record.thread not in self._first and len(self._first) < self.LIMIT:
                self._first[record.thread] = record.getMessage()

    def pop(self, thread: int | None) -> str | None:
        """The first error ``thread`` logged since it was last asked, if any."""
        if thread is None:
            return None
        with self._guard:
            return self._first.pop(thread, None)


PARAMIKO_LOG = ParamikoLog()
logging.getLogger("paramiko").addHandler(PARAMIKO_LOG)


def load_key(settings: SftpSettings) -> paramiko.PKey:
    """The private key ``sftp.key_file`` names; a DeliveryError (not transient) if unusable."""
    path = settings.key_file
    try:
        passphrase = settings.passphrase()
    except ConfigError as exc:
        # A variable missing from cron's environment: the run's work stands, the batch waits.
        raise DeliveryError(str(exc), transient=False) from exc
    encrypted = False
    for key_type in KEY_TYPES:
        try:
            return key_type.from_private_key_file(str(path), passphrase)
        except OSError as exc:
            detail = exc.strerror or str(exc)
            raise DeliveryError(
                f"{path}: cannot read the SSH key (sftp.key_file): {detail}", transient=False
            ) from exc
        except paramiko.PasswordRequiredException:
            encrypted = True
        except (paramiko.SSHException, ValueError):
            continue  # not this type of key, or not decrypted by this passphrase
    if encrypted and passphrase is None:
        raise DeliveryError(
            f"{path} is encrypted; name the environment variable holding its passphrase in "
            "sftp.passphrase_env",
            transient=False,
        )
    if passphrase is not None:
        raise DeliveryError(
            f"{path}: cannot read the SSH key (sftp.key_file) with the passphrase in "
            f"{settings.passphrase_env}: wrong passphrase, or not a private key",
            transient=False,
        )
    raise DeliveryError(
        f"{path}: cannot read the SSH key (sftp.key_file): not an OpenSSH or PEM private key",
        transient=False,
    )


class Session:
    """An open SFTP session and what its messages may need (the transport thread)."""

    def __init__(self) -> None:
        self.client = paramiko.SSHClient()
        self.sftp: paramiko.SFTPClient | None = None
        self.thread: int | None = None
        """The transport thread's id, to find what it logged."""
        self.remote_version = ""
        """The server's SSH banner, empty until it answered SSH."""

    def close(self) -> None:
        """Close the session and stop its transport thread; safe to call twice."""
        transport = self.client.get_transport()
        if transport is not None:
            self.thread = transport.ident
        if self.sftp is not None:
            with suppress(Exception):  # the connection may be gone already
                self.sftp.close()
        self.client.close()
        self.sftp = None


def open_session(settings: SftpSettings, session: Session, key: paramiko.PKey) -> None:
    """Connect, check the host key, log in and start SFTP into ``session``.

    Raises :class:`Unanswered` when a step outlasts ``connect_timeout``, and paramiko's or the
    socket's own exceptions otherwise; the caller explains them and closes ``session``.
    """
    s = settings
    limit = s.connect_timeout
    # paramiko's own limits only back the watchdog up: they must never fire before it.
    backstop = 2 * limit + 5
    try:
        sock = socket.create_connection((s.host, s.port), timeout=limit)
    except TimeoutError as exc:
        raise Unanswered("accept a connection", limit) from exc

    def transport_factory(sock: Any, /, **options: Any) -> paramiko.Transport:
        transport = paramiko.Transport(sock, **options)
        transport.handshake_timeout = backstop
        return transport

    def ssh_step() -> str:
        transport = session.client.get_transport()
        if transport is None or not transport.remote_version:
            return "answer SSH"
        if transport.host_key is None:
            return "finish the SSH handshake"
        return "answer the login"

    watchdog = _Watchdog(sock, limit)
    try:
        with watchdog.step(ssh_step):
            session.client.connect(
                s.host,
                port=s.port,
                username=s.username,
                pkey=key,
                sock=sock,
                timeout=backstop,
                banner_timeout=backstop,
                auth_timeout=backstop,
                channel_timeout=backstop,
                transport_factory=transport_factory,
                allow_agent=False,
                look_for_keys=False,
            )
        transport = session.client.get_transport()
        assert transport is not None  # connect() returned: it is logged in
        session.thread = transport.ident
        transport.set_keepalive(KEEPALIVE_SECONDS)
        with watchdog.step(lambda: "start SFTP"):
            channel = transport.open_session(timeout=backstop)
            channel.invoke_subsystem("sftp")
            session.sftp = paramiko.SFTPClient(channel)
        channel.settimeout(s.operation_timeout)
    finally:
        transport = session.client.get_transport()
        if transport is not None:
            session.thread = transport.ident
            session.remote_version = transport.remote_version
        if session.sftp is None:
            sock.close()


class _Watchdog:
    """Shuts ``sock`` down when a step outlasts ``seconds``, which ends every wait on it."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.sock = sock
        self.seconds = seconds

    @contextmanager
    def step(self, action: Callable[[], str]) -> Iterator[None]:
        """Run the block under the deadline; ``action`` names what the server failed to do."""
        fired = threading.Event()
        expired: list[str] = []

        def expire() -> None:
            expired.append(action())  # what the server was doing, before the shutdown
            fired.set()
            with suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(self.seconds, expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        except Exception as exc:
            if _stopped(timer, fired):
                raise Unanswered(expired[0], self.seconds) from exc
            raise
        except BaseException:
            timer.cancel()
            raise
        if _stopped(timer, fired):
            # It fired as the step finished: the socket is shut down all the same.
            raise Unanswered(expired[0], self.seconds)


def _stopped(timer: threading.Timer, fired: threading.Event) -> bool:
    """Cancel ``timer`` and wait for it; whether it had fired."""
    timer.cancel()
    timer.join()  # a timer firing right now finishes before the answer is read
    return fired.is_set()
