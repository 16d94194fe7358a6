"""The ``dir`` transport: deliver into a local (or mounted) folder."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ..errors import DeliveryError, RemoteFileMissing
from . import RemoteFile, temporary_name


class FolderTransport:
    """Copies delta files into a folder another process (or Alma's mount) reads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def describe(self) -> str:
        return str(self.folder)

    def list(self) -> list[RemoteFile]:
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DeliveryError(
                f"{self.folder}: cannot list: {exc.strerror}", transient=True
            ) from exc
        files = []
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    files.append(RemoteFile(entry.name, stat.st_size, stat.st_mtime))
            except FileNotFoundError:
                continue  # renamed while listing (Alma marking it .handled)
        return sorted(files, key=lambda f: f.name)

    def upload(self, local: Path, name: str) -> RemoteFile:
        temporary = self.folder / temporary_name(name)
        final = self.folder / name
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with local.open("rb") as source, temporary.open("wb") as target:
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
            os.replace(temporary, final)
            stat = final.stat()
        except BaseException as exc:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise DeliveryError(
                    f"{final}: cannot deliver {local.name}: {exc.strerror}", transient=True
                ) from exc
            raise
        return RemoteFile(name, stat.st_size, stat.st_mtime)

    def rename(self, old: str, new: str) -> None:
        try:
            os.rename(self.folder / old, self.folder / new)
        except FileNotFoundError as exc:
            raise RemoteFileMissing(f"{self.folder / old}: not there any more") from exc
        except OSError as exc:
            raise DeliveryError(
                f"{self.folder / old}: cannot rename: {exc.strerror}", transient=True
            ) from exc

    def close(self) -> None:
        return None
