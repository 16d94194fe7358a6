"""A throwaway OpenSSH server on loopback for the SFTP tests, and ways to make it fail.

``start_sshd(workdir)`` writes fresh ed25519 keys, an ``sshd_config`` and known_hosts files into
``workdir`` and runs ``sshd -D`` on a free port of 127.0.0.1; ``sshd_server`` wraps it for a
session-scoped pytest fixture and skips (or fails, with ``DELTASYNC_TEST_REQUIRE_SSHD`` set) when
no sshd binary is found (``DELTASYNC_TEST_SSHD``, then PATH, then /usr/sbin/sshd).

Who logs in: the user running the tests. sshd started by a non-root user can only authenticate
that same user, so this is the one choice that works both for a developer and for CI, which runs
as root (``PermitRootLogin prohibit-password`` allows root's key login). A dedicated system user
would need root, changes to /etc/passwd, and a workdir it can traverse, which pytest's 0700
``/tmp/pytest-of-<user>`` is not. ``AllowUsers`` restricts the server to that one user.

What sshd demands, and how it is met:
- ``StrictModes no``: the authorized_keys file lives under /tmp, and StrictModes rejects it when
  any parent folder up to / is group- or world-writable (/tmp is 1777).
- Private host keys must be readable by their owner only (always checked): written 0600.
- ``UsePAM no``, so sshd refuses an account whose password field is locked (``!...``). Root in
  Debian images is ``*``, which is fine; a non-root sshd cannot read /etc/shadow and so never
  sees a lock, except for ``nobody``, which nss-systemd reports as ``!*``. The start-up login
  probe turns this into a clear error with the log tail.
- As root, sshd needs its privilege separation folder ``/run/sshd``, which only the (deliberately
  not started) system service would create; it is created here.
- sshd re-executes itself, so it is run by absolute path.

Failures to simulate:
- wrong host key: ``wrong_known_hosts`` lists another ed25519 key for ``[127.0.0.1]:port``.
- unknown host: any known_hosts file without the server (e.g. an empty one).
- refused login: ``unauthorized_key_file`` is a valid key missing from authorized_keys.
- full disk: ``full_dir()`` is a folder on a 64 KiB tmpfs filled to the brim, so writes fail with
  ENOSPC (root only: mounting needs CAP_SYS_ADMIN). OpenSSH's SFTP server reports ENOSPC as the
  generic ``SSH_FX_FAILURE`` ("Failure"), so the client cannot tell it from other write errors,
  and internal-sftp logs to syslog only, so sshd.log does not say it either. Without root,
  ``full_dir()`` falls back to a read-only folder ("Permission denied", errno EACCES) and
  ``full_disk_is_real`` is False: not the same failure, and tests should say so.
- dropped connection: ``drop_connections()`` SIGKILLs every per-connection sshd process (the
  listener keeps running); ``stop()`` and ``start()`` take the whole server down and back up on
  the same port with the same host key. Finding the session processes reads /proc (Linux).

Hostile servers, for the network deadlines:
- a server that accepts TCP and never says a word: ``SilentServer`` (a plain socket, not sshd).
- an SFTP server that logs in but never answers the SFTP version exchange:
  ``start_sshd(workdir, sftp=MUTE_SFTP)``, whose sftp subsystem reads and discards everything.
- one that answers the version exchange and then no request: ``sftp=STALLED_SFTP``.
  Both read their input until the client hangs up, so no process outlives its session.
"""

from __future__ import annotations

import atexit
import errno
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SSHD_ENV = "DELTASYNC_TEST_SSHD"
REQUIRE_SSHD_ENV = "DELTASYNC_TEST_REQUIRE_SSHD"
HOST = "127.0.0.1"
PASSPHRASE = "s3cret-passphrase"
STARTUP_TIMEOUT = 10.0
FULL_DISK_SIZE = 64 * 1024

INTERNAL_SFTP = "internal-sftp"
MUTE_SFTP = "#!/bin/sh\nexec cat 3>&1 >/dev/null\n"
"""An sftp subsystem that never answers, not even the client's SSH_FXP_INIT. Its stdout stays
open on fd 3: a closed stdout would reach the client as an end of file, not as silence."""
STALLED_SFTP = f"""#!{sys.executable}
import struct, sys
data = sys.stdin.buffer
(length,) = struct.unpack(">I", data.read(4))
data.read(length)  # SSH_FXP_INIT
sys.stdout.buffer.write(struct.pack(">IBI", 5, 2, 3))  # SSH_FXP_VERSION 3
sys.stdout.buffer.flush()
while data.read(65536):  # and then no answer to any request
    pass
"""
"""An sftp subsystem that completes the version exchange, then never answers a request."""


class SshdError(RuntimeError):
    """The throwaway sshd could not be started or driven."""


def find_sshd() -> Path | None:
    """The sshd binary: ``$DELTASYNC_TEST_SSHD``, else sshd on PATH, else /usr/sbin/sshd."""
    explicit = os.environ.get(SSHD_ENV)
    candidates = [explicit] if explicit else [shutil.which("sshd"), "/usr/sbin/sshd"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def sshd_server(
    tmp_path_factory: pytest.TempPathFactory, *, sftp: str = INTERNAL_SFTP
) -> Iterator[SshServer]:
    """A running throwaway sshd, stopped afterwards; wrap it in a session-scoped fixture."""
    sshd = find_sshd()
    if sshd is None:
        where = os.environ.get(SSHD_ENV) or "PATH or /usr/sbin/sshd"
        reason = f"OpenSSH server not found in {where} (./scripts/test installs openssh-server)"
        if os.environ.get(REQUIRE_SSHD_ENV):
            pytest.fail(f"{reason}, but {REQUIRE_SSHD_ENV} is set")
        pytest.skip(reason)
    server = start_sshd(tmp_path_factory.mktemp("sshd"), sshd=sshd, sftp=sftp)
    try:
        yield server
    finally:
        server.close()


@dataclass
class _Runtime:
    """The mutable side of a server: its process and what it mounted."""

    sshd: Path
    config: Path
    process: subprocess.Popen[bytes] | None = None
    full_mount: Path | None = None
    full_disk_is_real: bool = False


@dataclass(frozen=True)
class SshServer:
    """A running sshd on loopback, its keys and known_hosts files."""

    host: str
    port: int
    username: str
    key_file: Path
    encrypted_key_file: Path
    passphrase: str
    unauthorized_key_file: Path
    known_hosts: Path
    wrong_known_hosts: Path
    root: Path
    log_file: Path
    _runtime: _Runtime = field(repr=False, compare=False)

    def connect(
        self,
        *,
        key_file: Path | None = None,
        passphrase: str | None = None,
        known_hosts: Path | None = None,
        timeout: float = 5.0,
    ) -> paramiko.SSHClient:
        """A client logged in with strict host key checking (defaults: key_file, known_hosts)."""
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(known_hosts or self.known_hosts))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(
                self.host,
                port=self.port,
                username=self.username,
                key_filename=str(key_file or self.key_file),
                passphrase=passphrase,
                # A developer's agent or ~/.ssh keys must not log in (or use up MaxAuthTries).
                allow_agent=False,
                look_for_keys=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
        except BaseException:
            client.close()
            raise
        return client

    @property
    def running(self) -> bool:
        """Whether the listening sshd process is alive."""
        process = self._runtime.process
        return process is not None and process.poll() is None

    def start(self) -> None:
        """Start the server again on the same port with the same keys (no-op when running)."""
        if self.running:
            return
        _ensure_privsep_dir()
        with open(self.log_file, "ab") as log:
            self._runtime.process = subprocess.Popen(
                [str(self._runtime.sshd), "-D", "-f", str(self._runtime.config)]
                + ["-E", str(self.log_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self._wait_until_listening()

    def stop(self) -> None:
        """Take the server down: the listener and every open session die at once."""
        process = self._runtime.process
        if process is None:
            return
        if process.poll() is None:
            self._kill_sessions(keep_listener=False)
        process.wait()
        self._runtime.process = None

    def drop_connections(self) -> None:
        """Kill every open session mid-flight, as a network failure would; new logins still work."""
        if self.running:
            self._kill_sessions(keep_listener=True)

    def full_dir(self, free_bytes: int = 0) -> Path:
        """An empty folder on a filesystem with about ``free_bytes`` left (rounded up to pages).

        Each call empties the folder and refills the filesystem. Check ``full_disk_is_real``: False
        means mounting was impossible and the folder is read-only instead.
        """
        mount = self.root.parent / "full-disk"
        folder = mount / "upload"
        runtime = self._runtime
        if runtime.full_mount is None:
            mount.mkdir(exist_ok=True)
            runtime.full_disk_is_real = _mount_tmpfs(mount, FULL_DISK_SIZE)
            runtime.full_mount = mount
        if not runtime.full_disk_is_real:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            folder.chmod(0o555)
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        _fill(mount / ".filler", free_bytes)
        return folder

    @property
    def full_disk_is_real(self) -> bool:
        """True when ``full_dir()`` fails writes with a real ENOSPC (a full tmpfs)."""
        return self._runtime.full_disk_is_real

    def close(self) -> None:
        """Stop the server and unmount the full-disk filesystem; safe to call twice."""
        self.stop()
        mount = self._runtime.full_mount
        if mount is not None:
            if self._runtime.full_disk_is_real:
                # Lazy, so a file a killed session left open cannot keep the mount alive.
                subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
            else:
                (mount / "upload").chmod(0o755)
            self._runtime.full_mount = None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the sshd log, for error messages."""
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no sshd log)"
        return "\n".join(text.splitlines()[-lines:])

    def _wait_until_listening(self) -> None:
        process = self._runtime.process
        assert process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                self._runtime.process = None
                raise SshdError(
                    f"sshd exited with status {process.returncode} while starting on port "
                    f"{self.port}; log {self.log_file}:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    # The banner proves it is our sshd answering, not whoever else had the port.
                    if sock.recv(8).startswith(b"SSH-2.0-") and process.poll() is None:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SshdError(
                    f"sshd did not accept connections on {self.host}:{self.port} within "
                    f"{STARTUP_TIMEOUT:.0f} s; log {self.log_file}:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _kill_sessions(self, *, keep_listener: bool) -> None:
        process = self._runtime.process
        assert process is not None
        listener = process.pid
        # Stopped, the listener cannot fork a new session between the survey and the kill.
        os.kill(listener, signal.SIGSTOP)
        try:
            _wait_for_state(listener, "tT")
            sessions = _descendants(listener)
            for pid in sessions:
                _signal(pid, signal.SIGKILL)
            if not keep_listener:
                process.kill()
        finally:
            _signal(listener, signal.SIGCONT)
        for pid in sessions:
            _wait_for_state(pid, "Z", missing_is_done=True)


class SilentServer:
    """A TCP server on loopback that accepts every connection and never sends a byte.

    What a hung sshd, or a firewall that completes the handshake for a dead host, looks like
    to a client. ``accepted`` counts the connections, so a test can tell how often a client
    tried.
    """

    def __init__(self) -> None:
        self.host = HOST
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        """How many connections were accepted so far."""
        return len(self._connections)

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._listener.close()
        self._thread.join(timeout=5)
        for connection in self._connections:
            connection.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _address = self._listener.accept()
            except OSError:  # closed
                return
            self._connections.append(connection)  # held open, never read or written


def start_sshd(workdir: Path, *, sshd: Path | None = None, sftp: str = INTERNAL_SFTP) -> SshServer:
    """Write keys and a config into ``workdir``, start sshd on a free loopback port, log in once.

    ``sftp`` is the sftp subsystem: OpenSSH's own, or the text of a script that replaces it
    (``MUTE_SFTP``, ``STALLED_SFTP``); with a script the start-up probe only logs in.
    """
    sshd = sshd or find_sshd()
    if sshd is None:
        raise SshdError(f"no sshd binary found (set {SSHD_ENV} or install openssh-server)")
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "root"
    root.mkdir(exist_ok=True)
    username = pwd.getpwuid(os.getuid()).pw_name

    host_public = _write_key(workdir / "ssh_host_ed25519_key")
    wrong_host_public = _public_key(Ed25519PrivateKey.generate())
    authorized = [
        _write_key(workdir / "client_ed25519"),
        _write_key(workdir / "client_ed25519_encrypted", PASSPHRASE),
    ]
    _write_key(workdir / "unauthorized_ed25519")
    (workdir / "authorized_keys").write_text("".join(f"{key}\n" for key in authorized))
    subsystem = sftp
    if sftp != INTERNAL_SFTP:
        script = workdir / "sftp-subsystem"
        script.write_text(sftp)
        script.chmod(0o755)
        subsystem = _quoted(script)

    last_error: SshdError | None = None
    for _attempt in range(3):
        port = _free_port()
        config = _write_config(workdir, port, username, subsystem)
        for name, public in (
            ("known_hosts", host_public),
            ("wrong_known_hosts", wrong_host_public),
        ):
            (workdir / name).write_text(f"[{HOST}]:{port} {public}\n")
        server = SshServer(
            host=HOST,
            port=port,
            username=username,
            key_file=workdir / "client_ed25519",
            encrypted_key_file=workdir / "client_ed25519_encrypted",
            passphrase=PASSPHRASE,
            unauthorized_key_file=workdir / "unauthorized_ed25519",
            known_hosts=workdir / "known_hosts",
            wrong_known_hosts=workdir / "wrong_known_hosts",
            root=root,
            log_file=workdir / "sshd.log",
            _runtime=_Runtime(sshd=sshd, config=config),
        )
        try:
            server.start()
        except SshdError as exc:
            # Another process may have taken the port between probing and binding it.
            if "Address already in use" not in server.log_tail():
                raise
            last_error = exc
            continue
        atexit.register(server.close)
        _probe_login(server, sftp=subsystem == INTERNAL_SFTP)
        return server
    assert last_error is not None
    raise last_error


def _probe_login(server: SshServer, *, sftp: bool = True) -> None:
    """Fail at start-up, with the log, rather than in every test, when logging in is refused."""
    try:
        with server.connect() as client:
            if sftp:
                session = client.open_sftp()
                session.listdir(str(server.root))
                session.close()
    except Exception as exc:
        server.close()
        hint = ""
        if "account is locked" in server.log_tail():
            hint = (
                f" With UsePAM no, sshd refuses an account whose password field starts with '!'"
                f" (nss-systemd reports 'nobody' that way too); `usermod -p '*' {server.username}`"
                " unlocks it without allowing password logins."
            )
        raise SshdError(
            f"sshd started but {server.username} cannot log in and use SFTP ({exc!r}).{hint} "
            f"Log {server.log_file}:\n{server.log_tail()}"
        ) from exc


def _write_config(workdir: Path, port: int, username: str, subsystem: str) -> Path:
    settings = {
        "ListenAddress": HOST,
        "Port": str(port),
        "HostKey": _quoted(workdir / "ssh_host_ed25519_key"),
        "PidFile": _quoted(workdir / "sshd.pid"),
        "AuthorizedKeysFile": _quoted(workdir / "authorized_keys"),
        "AllowUsers": username,
        "PermitRootLogin": "prohibit-password",
        "PubkeyAuthentication": "yes",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "UsePAM": "no",
        "StrictModes": "no",
        "PrintMotd": "no",
        "AllowAgentForwarding": "no",
        "AllowTcpForwarding": "no",
        "X11Forwarding": "no",
        "LogLevel": "VERBOSE",
        # internal-sftp logs only to syslog, so SFTP operations are missing from sshd.log.
        "Subsystem": f"sftp {subsystem}",
    }
    config = workdir / "sshd_config"
    config.write_text("".join(f"{key} {value}\n" for key, value in settings.items()))
    return config


def _quoted(path: Path) -> str:
    return '"' + str(path) + '"'


def _write_key(path: Path, passphrase: str | None = None) -> str:
    """Write a new ed25519 private key in OpenSSH format (mode 0600); return its public line."""
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    )
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return _public_key(key)


def _public_key(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _ensure_privsep_dir() -> None:
    if os.getuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


def _mount_tmpfs(mount: Path, size: int) -> bool:
    """Mount a tiny tmpfs on ``mount``; False when this process may not mount."""
    if os.getuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "deltasync-full", str(mount)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def _fill(filler: Path, free_bytes: int) -> None:
    """Grow ``filler`` until its filesystem is full, then give back ``free_bytes``."""
    page = resource.getpagesize()
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\0" * page)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        size = os.fstat(fd).st_size
        os.ftruncate(fd, max(0, size - free_bytes) // page * page)
    finally:
        os.close(fd)


def _processes() -> dict[int, tuple[int, str]]:
    """Every process as pid -> (parent pid, state letter)."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses; the fields after the last ")" not.
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        table[int(entry.name)] = (int(ppid), state)
    return table


def _descendants(pid: int) -> list[int]:
    table = _processes()
    found: list[int] = []
    parents = {pid}
    while parents:
        children = [child for child, (ppid, _) in table.items() if ppid in parents]
        found += children
        parents = set(children)
    return found


def _wait_for_state(pid: int, states: str, *, missing_is_done: bool = False) -> None:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            # ProcessLookupError: the process was reaped between opening and reading the file.
            if missing_is_done:
                return
            raise SshdError(f"process {pid} vanished") from None
        if stat[stat.rindex(")") + 2] in states:
            return
        time.sleep(0.005)
    raise SshdError(f"process {pid} did not reach state {states!r} within 2 s")


def _signal(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
