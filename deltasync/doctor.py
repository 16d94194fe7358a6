"""``deltasync doctor``: check an installation without changing anything.

Each check yields one :class:`Finding`: what was checked, ok or not, and for a failure what to
do. Nothing is created or migrated: the store's revision is only read, a missing outbox or
store is reported as what the first run will create, and the ``dir`` transport's folder is
never created. The only writes are hidden probe files (``.deltasync-doctor-<random>``) in the
outbox and in ``remote_dir``, removed at once, which prove that deltasync may write there;
Alma reads only ``*.zip``.
"""

from __future__ import annotations

import base64
import datetime as dt
import glob
import hashlib
import os
import shutil
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from . import safefiles
from .config import Config, FeedConfig, SftpSettings
from .errors import ConfigError, DeltasyncError

if TYPE_CHECKING:
    import paramiko

RECENT = dt.timedelta(hours=36)
"""An extract older than this is stale: a nightly export that missed a night, with slack."""
MIN_FREE_BYTES = 1 << 30
"""Free space the state store's filesystem needs: a run writes its whole transaction (a large
feed's first day: several times the extract) before it commits."""
PROBE_PREFIX = ".deltasync-doctor-"
_RECENT_HOURS = int(RECENT.total_seconds() // 3600)


@dataclass(frozen=True)
class Finding:
    """The result of one check."""

    subject: str
    ok: bool
    detail: str
    fix: str | None = None

    def line(self) -> str:
        """``ok    subject: detail`` or ``FAIL  subject: detail; fix: …``."""
        text = f"{'ok' if self.ok else 'FAIL':<5} {self.subject}: {self.detail}"
        return f"{text}; fix: {self.fix}" if self.fix and not self.ok else text


def diagnose(config: Config, feeds: list[FeedConfig], now: dt.datetime) -> Iterator[Finding]:
    """Every check of the installation, then of each of ``feeds``, as it is made."""
    names = ", ".join(config.feeds)
    yield Finding("config", True, f"{config.path} is valid ({len(config.feeds)} feed(s): {names})")
    yield from _store(config.state_url)
    for feed in feeds:
        yield from _feed(config, feed, now)


def _store(url: str) -> Iterator[Finding]:
    from .store.engine import read_revision, safe_url

    shown = safe_url(url)
    try:
        revision = read_revision(url)
    except DeltasyncError as exc:
        yield Finding("store", False, str(exc), "check state.url, and that the database is up")
        return
    if not revision.exists:
        yield Finding("store", True, f"{shown} does not exist yet; the first run creates it")
    elif revision.newer:
        yield Finding(
            "store",
            False,
            f"{shown} was written by a newer deltasync (revision {', '.join(revision.newer)})",
            "upgrade deltasync",
        )
    elif revision.up_to_date:
        yield Finding("store", True, f"{shown} is at the current migration ({revision.head})")
    else:
        at = ", ".join(sorted(revision.current)) or "none (an empty database)"
        yield Finding(
            "store",
            True,
            f"{shown} is at migration {at}; the next command migrates it to {revision.head} "
            "(doctor does not)",
        )
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        folder = _existing(Path(parsed.database).parent)
        free = shutil.disk_usage(folder).free
        gib = f"{free / (1 << 30):.1f} GiB"
        if free < MIN_FREE_BYTES:
            yield Finding(
                "disk",
                False,
                f"only {gib} free for the state store ({folder})",
                f"free space there: a run needs at least {MIN_FREE_BYTES >> 30} GiB",
            )
        else:
            yield Finding("disk", True, f"{gib} free for the state store ({folder})")


def _feed(config: Config, feed: FeedConfig, now: dt.datetime) -> Iterator[Finding]:
    subject = f"feed {feed.name}"
    yield _outbox(subject, feed.outbox)
    yield _extract(subject, feed, now)
    delivery = feed.delivery
    if delivery is None:
        yield Finding(f"{subject}: delivery", True, "no transport: delta files stay in the outbox")
    elif delivery.transport == "dir":
        yield _dir_transport(subject, Path(delivery.remote_dir))
    else:
        assert delivery.sftp is not None
        yield from _sftp(subject, delivery.sftp, delivery.remote_dir)
    if delivery is not None and delivery.confirm == "alma-api":
        assert config.alma is not None and delivery.job_id is not None
        yield _alma_job(subject, config, delivery.job_id)


def _outbox(subject: str, outbox: Path) -> Finding:
    what = f"{subject}: outbox"
    if not outbox.exists():
        parent = _existing(outbox.parent)
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            return Finding(what, True, f"{outbox} does not exist yet; the first run creates it")
        return Finding(
            what,
            False,
            f"{outbox} does not exist and cannot be created in {parent}",
            "create it, writable by the user that runs deltasync",
        )
    if not outbox.is_dir():
        return Finding(what, False, f"{outbox} is not a folder", "point outbox at a folder")
    problem = _probe(outbox)
    if problem is not None:
        return Finding(
            what,
            False,
            f"{outbox} is not writable: {problem}",
            "make it writable by the user that runs deltasync",
        )
    return Finding(what, True, f"{outbox} is writable")


def _extract(subject: str, feed: FeedConfig, now: dt.datetime) -> Finding:
    what = f"{subject}: extract"
    if not feed.file_extract:
        # Several sources, or a query: each file source's extract must be there.
        for number, source in enumerate(feed.sources, 1):
            if source.extract is None:
                continue
            found = _extract(subject, replace(feed, extract=source.extract, sources=()), now)
            if not found.ok:
                return replace(found, detail=f"source {number}: {found.detail}")
        return Finding(what, True, f"{len(feed.sources)} source(s) configured")
    if feed.extract is None:
        return Finding(what, True, "not set: give `run` the extract's path")
    matches = [Path(p) for p in glob.glob(feed.extract) if Path(p).is_file()]
    if not matches:
        return Finding(
            what,
            False,
            f"no file matches {feed.extract}",
            "put the SIS export there, or correct `extract`",
        )
    newest = max(matches, key=lambda p: (p.stat().st_mtime, p.name))
    modified = dt.datetime.fromtimestamp(newest.stat().st_mtime, dt.UTC)
    age = now - modified
    hours = f"{age.total_seconds() / 3600:.0f} h"
    if age > RECENT:
        return Finding(
            what,
            False,
            f"the newest match, {newest}, was modified {modified:%Y-%m-%d %H:%M}Z ({hours} ago)",
            f"check that the SIS export runs (doctor wants one modified within {_RECENT_HOURS} h)",
        )
    return Finding(what, True, f"{newest} ({hours} old)")


def _dir_transport(subject: str, folder: Path) -> Finding:
    what = f"{subject}: delivery folder"
    if not folder.is_dir():
        return Finding(
            what,
            False,
            f"{folder} does not exist (deltasync never creates it)",
            "mount the share, or create the folder Alma reads",
        )
    problem = _probe(folder)
    if problem is not None:
        return Finding(
            what,
            False,
            f"{folder} is not writable: {problem}",
            "make it writable by the user that runs deltasync",
        )
    return Finding(what, True, f"{folder} exists and is writable")


def _sftp(subject: str, s: SftpSettings, remote_dir: str) -> Iterator[Finding]:
    """Reachable, host key, login, remote_dir, writable: each step only after the one before."""
    import paramiko  # loads only when SFTP is used

    from .delivery.session import Session, Unanswered, load_key, open_session

    server = f"{s.host}:{s.port}"
    what = f"{subject}: sftp"
    try:
        with socket.create_connection((s.host, s.port), timeout=s.connect_timeout):
            pass
    except OSError as exc:
        yield Finding(
            f"{what} server",
            False,
            f"{server} is not reachable: {_reason(exc)}",
            "check sftp.host and sftp.port, and that a firewall lets this machine through",
        )
        return
    yield Finding(f"{what} server", True, f"{server} accepts connections")
    found = _host_key(f"{what} host key", s)
    yield found
    if not found.ok:
        return
    try:
        key = load_key(s)
    except DeltasyncError as exc:
        yield Finding(f"{what} key", False, str(exc), "make sftp.key_file a readable private key")
        return
    session = Session()
    try:
        session.client.load_host_keys(str(s.known_hosts))
        session.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            open_session(s, session, key)
        except paramiko.AuthenticationException as exc:
            yield Finding(
                f"{what} login",
                False,
                f"{server} refused {s.username} with {s.key_file}: {exc}",
                f"ask the server's administrator to authorize {s.key_file}.pub for {s.username}",
            )
            return
        except (Unanswered, paramiko.SSHException, OSError, EOFError) as exc:
            yield Finding(
                f"{what} login",
                False,
                f"{server}: {_reason(exc)}",
                "check the server, and sftp.connect_timeout",
            )
            return
        yield Finding(f"{what} login", True, f"{s.username} logged in with {s.key_file}")
        assert session.sftp is not None
        yield from _remote_dir(what, session.sftp, remote_dir)
    finally:
        session.close()


def _host_key(what: str, s: SftpSettings) -> Finding:
    """Is the server's host key in known_hosts, and the same? Asked of the server's handshake
    alone, before any login."""
    import paramiko

    scan = f"ssh-keyscan -p {s.port} {s.host} >> {s.known_hosts}"
    try:
        known = paramiko.HostKeys(str(s.known_hosts))
    except OSError as exc:
        return Finding(
            what,
            False,
            f"cannot read known_hosts {s.known_hosts}: {exc.strerror}",
            f"add the server's key, after checking its fingerprint: {scan}",
        )
    try:
        sock = socket.create_connection((s.host, s.port), timeout=s.connect_timeout)
    except OSError as exc:
        return Finding(what, False, f"cannot connect: {_reason(exc)}", "check the server")
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = s.connect_timeout
        transport.start_client(timeout=s.connect_timeout)
        offered = transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        return Finding(what, False, f"no SSH handshake: {_reason(exc)}", "check sftp.port")
    finally:
        transport.close()
    name = s.host if s.port == 22 else f"[{s.host}]:{s.port}"
    entry = known.lookup(name)
    ours = None if entry is None else entry.get(offered.get_name())
    fingerprint = f"{offered.get_name()} SHA256:{_sha256(offered)}"
    if ours is None:
        return Finding(
            what,
            False,
            f"not in {s.known_hosts} (the server offers {fingerprint})",
            f"check that fingerprint with the server's administrator, then: {scan}",
        )
    if ours != offered:
        return Finding(
            what,
            False,
            f"does not match {s.known_hosts}: the server offers {fingerprint} (it changed, or "
            "this is not the right server)",
            "ask the server's administrator; only if the key was changed on purpose, replace "
            f"its line in {s.known_hosts}",
        )
    return Finding(what, True, f"known and matching ({fingerprint})")


def _remote_dir(what: str, sftp: paramiko.SFTPClient, remote_dir: str) -> Iterator[Finding]:
    try:
        attributes = sftp.stat(remote_dir)
    except FileNotFoundError:
        yield Finding(
            f"{what} remote_dir",
            False,
            f"{remote_dir} does not exist on the server",
            "set remote_dir to the folder the SIS integration profile reads",
        )
        return
    except OSError as exc:
        yield Finding(f"{what} remote_dir", False, f"{remote_dir}: {_reason(exc)}", None)
        return
    if attributes.st_mode is None or not stat.S_ISDIR(attributes.st_mode):
        yield Finding(f"{what} remote_dir", False, f"{remote_dir} is not a folder", None)
        return
    yield Finding(f"{what} remote_dir", True, f"{remote_dir} exists")
    probe = str(PurePosixPath(remote_dir) / f"{PROBE_PREFIX}{safefiles.token()}")
    try:
        with sftp.open(probe, "wbx") as handle:
            handle.write(b"")
    except OSError as exc:
        yield Finding(
            f"{what} remote_dir",
            False,
            f"{remote_dir} is not writable: {_reason(exc)}",
            f"ask the server's administrator to let the account write to {remote_dir}",
        )
        return
    try:
        sftp.remove(probe)
    except OSError as exc:
        yield Finding(
            f"{what} remote_dir",
            False,
            f"cannot remove the probe file {probe}: {_reason(exc)}",
            "remove it by hand; deltasync must be able to take files back",
        )
        return
    yield Finding(f"{what} remote_dir", True, f"{remote_dir} is writable")


def _alma_job(subject: str, config: Config, job_id: str) -> Finding:
    from .alma_api import AlmaApiError, AlmaJobs

    assert config.alma is not None
    what = f"{subject}: Alma API"
    variable = config.alma.api_key_env
    try:
        job = AlmaJobs(config.alma, job_id, timeout=15, attempts=1).job()
    except ConfigError as exc:
        return Finding(what, False, str(exc), f"export {variable}=<the API key>")
    except AlmaApiError as exc:
        if exc.status in (401, 403):
            return Finding(
                what,
                False,
                f"Alma refused the key in {variable}: {exc}",
                "use a key with read access to Configuration, for this institution",
            )
        if exc.status in (400, 404):
            return Finding(
                what,
                False,
                f"no job {job_id}: {exc}",
                "set job_id to the SIS synchronize job's ID (Alma: Monitor Jobs)",
            )
        return Finding(what, False, str(exc), "check alma.base_url and the network")
    name = job.get("name") or "no name"
    return Finding(what, True, f"the key works and job {job_id} exists ({name})")


def _probe(folder: Path) -> str | None:
    """Write and remove a hidden empty file in ``folder``; why that failed, or None."""
    try:
        path, fd = safefiles.create(folder, PROBE_PREFIX, "")
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    try:
        path.unlink()
    except OSError as exc:
        return f"cannot remove the probe file {path}: {exc.strerror}"
    return None


def _existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer in time"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _sha256(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return base64.b64encode(digest).decode().rstrip("=")
