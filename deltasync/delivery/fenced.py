"""A transport that makes the run prove it still holds its feed before each change it makes
on the server (store/lease.py): a run that lost its lock must not upload beside the run that
took the feed over, nor rename or remove that run's files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import RemoteFile, Transport


class FencedTransport:
    """Wraps ``inner``; ``check(doing)`` raises when the run no longer holds the feed."""

    def __init__(self, inner: Transport, check: Callable[[str], None]) -> None:
        self.inner = inner
        self.check = check

    def describe(self) -> str:
        return self.inner.describe()

    def list(self) -> list[RemoteFile]:
        return self.inner.list()

    def upload(self, local: Path, name: str) -> RemoteFile:
        self.check(f"uploading {name} to {self.inner.describe()}")
        return self.inner.upload(local, name)

    def rename(self, old: str, new: str) -> None:
        self.check(f"renaming {old} in {self.inner.describe()}")
        self.inner.rename(old, new)

    def remove(self, name: str) -> None:
        self.check(f"removing {name} from {self.inner.describe()}")
        self.inner.remove(name)

    def close(self) -> None:
        self.inner.close()
