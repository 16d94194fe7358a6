"""Delivery: putting delta files where Alma's integration profile reads them.

A transport uploads under a hidden, unpredictable temporary name (created exclusively, so a
planted symlink cannot redirect it), makes it 0600, and renames it to the final ``.zip`` only
when the upload is complete and its size checked, so Alma never sees half a file. It never
overwrites a file: an upload whose final name exists fails. Two transports exist: ``dir`` (a
local or mounted folder, never created by deltasync) and ``sftp`` (paramiko, strict host keys).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..safefiles import token

if TYPE_CHECKING:
    from ..config import DeliveryConfig

HANDLED_SUFFIX = ".handled"
"""Alma appends this to a file it has processed (it never deletes it)."""

# deltasync's own hidden files in the remote folder: ``.NAME.withdrawn`` (taken back unread)
# and ``.NAME.<token>.part`` (an upload under way, or left by one that was interrupted;
# ``.NAME.part`` from older versions).
_HIDDEN = re.compile(r"^\.(?P<name>.+\.zip)(?:\.withdrawn|(?:\.[0-9a-f]{16})?\.part)$")


@dataclass(frozen=True)
class RemoteFile:
    """A file in the remote folder."""

    name: str
    size: int
    mtime: float


class Transport(Protocol):
    """The operations delivery needs on the remote folder."""

    def describe(self) -> str:
        """Where files go, for messages: ``sftp://user@host:22/alma/in`` or a folder path."""
        ...

    def list(self) -> list[RemoteFile]:
        """The files in the remote folder (not sub-folders)."""
        ...

    def upload(self, local: Path, name: str) -> RemoteFile:
        """Copy ``local`` to ``name`` atomically; returns the checked remote file."""
        ...

    def rename(self, old: str, new: str) -> None:
        """Rename a remote file; :class:`RemoteFileMissing` if ``old`` is not there."""
        ...

    def remove(self, name: str) -> None:
        """Delete a remote file of deltasync's own; one already gone is not an error."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def temporary_name(name: str) -> str:
    """A new hidden name to upload ``name`` under; Alma only reads names ending in ``.zip``."""
    return f".{name}.{token()}.part"


def withdrawn_name(name: str) -> str:
    """The hidden name a taken-back file gets on the server (Alma reads only ``*.zip``)."""
    return f".{name}.withdrawn"


def hidden_original(name: str) -> str | None:
    """For deltasync's own hidden remote file (withdrawn, or an upload's temporary), the
    delta file name it stands for; None for any other name."""
    match = _HIDDEN.match(name)
    return None if match is None else match.group("name")


def check_credentials(delivery: DeliveryConfig) -> None:
    """Refuse, before a run changes anything, credentials that cannot work: an SFTP key that
    is missing, unreadable or encrypted without its passphrase (ConfigError naming the file).

    A run that ingested first would only build a batch it cannot deliver, day after day.
    """
    if delivery.transport != "sftp":
        return
    from ..errors import ConfigError, DeliveryError
    from .session import load_key  # paramiko loads only when SFTP is used

    assert delivery.sftp is not None
    try:
        load_key(delivery.sftp)
    except DeliveryError as exc:
        raise ConfigError(str(exc)) from exc


def open_transport(delivery: DeliveryConfig) -> Transport:
    """The transport a feed's delivery settings describe."""
    if delivery.transport == "sftp":
        from .sftp import SftpTransport  # paramiko loads only when SFTP is used

        assert delivery.sftp is not None
        return SftpTransport(delivery.sftp, delivery.remote_dir)
    from .folder import FolderTransport

    return FolderTransport(Path(delivery.remote_dir))
