"""Delivery: putting delta files where Alma's integration profile reads them.

A transport uploads under a temporary name and renames to the final ``.zip`` only when the
upload is complete and its size checked, so Alma never sees half a file. Two transports exist:
``dir`` (a local or mounted folder) and ``sftp`` (paramiko, strict host keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..config import DeliveryConfig

HANDLED_SUFFIX = ".handled"
"""Alma appends this to a file it has processed (it never deletes it)."""


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

    def close(self) -> None:
        """Release connections."""
        ...


def temporary_name(name: str) -> str:
    """The hidden name a file is uploaded under; Alma only reads names ending in ``.zip``."""
    return f".{name}.part"


def open_transport(delivery: DeliveryConfig) -> Transport:
    """The transport a feed's delivery settings describe."""
    if delivery.transport == "sftp":
        from .sftp import SftpTransport  # paramiko loads only when SFTP is used

        assert delivery.sftp is not None
        return SftpTransport(delivery.sftp, delivery.remote_dir)
    from .folder import FolderTransport

    return FolderTransport(Path(delivery.remote_dir))
