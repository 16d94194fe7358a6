"""The ``dir`` transport: deliver into a local (or mounted) folder.

The folder is never created: a missing one is usually a share that is not mounted, and files
"delivered" into an empty mount point would never reach Alma.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .. import safefiles
from ..errors import DeliveryError, RemoteFileMissing
from . import RemoteFile


class FolderTransport:
    """Copies delta files into a folder another process (or Alma's mount) reads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def describe(self) -> str:
        return str(self.folder)

    def list(self) -> list[RemoteFile]:
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError as exc:
            raise self._missing() from exc
        except OSError as exc:
            raise DeliveryError(
                f"{self.folder}: cannot list: {exc.strerror}", transient=True
            ) from exc
        files = []
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    info = entry.stat(follow_symlinks=False)
                    files.append(RemoteFile(entry.name, info.st_size, info.st_mtime))
            except FileNotFoundError:
                continue  # renamed while listing (Alma marking it .handled)
        return sorted(files, key=lambda f: f.name)

    def upload(self, local: Path, name: str) -> RemoteFile:
        final = self.folder / name
        try:
            temporary, fd = safefiles.create(self.folder, f".{name}.", ".part")
        except FileNotFoundError as exc:
            raise self._missing() from exc
        except OSError as exc:
            raise DeliveryError(
                f"{final}: cannot deliver {local.name}: {exc.strerror}", transient=True
            ) from exc
        try:
            with local.open("rb") as source, open(fd, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
                target.flush()
                os.fsync(target.fileno())
            expected = local.stat().st_size
            if temporary.stat().st_size != expected:
                raise DeliveryError(
                    f"{final}: cannot deliver {local.name}: the copy has "
                    f"{temporary.stat().st_size} of its {expected} bytes",
                    transient=True,
                )
            safefiles.place(temporary, final)
            info = final.stat()
        except BaseException as exc:
            safefiles.remove_quietly(temporary)
            if isinstance(exc, FileExistsError):
                raise DeliveryError(
                    f"{final}: a file of that name is already in the delivery folder; "
                    "refusing to overwrite it",
                    transient=False,
                ) from exc
            if isinstance(exc, OSError):
                raise DeliveryError(
                    f"{final}: cannot deliver {local.name}: {exc.strerror}", transient=True
                ) from exc
            raise
        return RemoteFile(name, info.st_size, info.st_mtime)

    def rename(self, old: str, new: str) -> None:
        try:
            os.rename(self.folder / old, self.folder / new)
        except FileNotFoundError as exc:
            raise RemoteFileMissing(f"{self.folder / old}: not there any more") from exc
        except OSError as exc:
            raise DeliveryError(
                f"{self.folder / old}: cannot rename: {exc.strerror}", transient=True
            ) from exc

    def remove(self, name: str) -> None:
        path = self.folder / name
        try:
            if stat.S_ISREG(path.lstat().st_mode):
                path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise DeliveryError(f"{path}: cannot delete: {exc.strerror}", transient=True) from exc

    def close(self) -> None:
        return None

    def _missing(self) -> DeliveryError:
        # Transient: a share that is mounted again by the next run makes it work.
        return DeliveryError(
            f"{self.folder}: the delivery folder does not exist (is the share mounted?); "
            "deltasync does not create it",
            transient=True,
        )
