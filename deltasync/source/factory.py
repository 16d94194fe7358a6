"""A feed's sources, opened: the one place that knows which kind of source reads what.

``ingest`` and ``check`` ask here instead of constructing a reader, so Alma XML, CSV and SQL
sources — and a feed of several, merged by precedence — all reach the pass as records.

The CSV and SQL readers and the mapping they render through are imported only for a feed with
such a source: a mapping means Jinja2, about 35 ms of every start, which Alma XML never needs.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..checks.settings import CheckSettings
from ..config import FeedConfig, SourceConfig
from ..errors import ExtractError
from ..matchid import MatchIdRule
from . import Source
from .files import Progress, in_background, modified_at, sha256_of
from .merged import MergedSource
from .xml import XmlExtract


def sources_of(feed: FeedConfig) -> tuple[SourceConfig, ...]:
    """The feed's sources; a feed that names none reads Alma XML from ``extract``."""
    return feed.sources or (SourceConfig("alma-xml", feed.extract, None),)


def describe(feed: FeedConfig) -> str:
    """What the sources add to the raw seed: their kinds and mappings' fingerprints (a feed of
    Alma XML only says so, as it always has)."""
    parts = []
    for source in sources_of(feed):
        if source.mapping is None:
            parts.append(source.kind)
        else:
            from ..mapping.spec import fingerprint_of  # a mapped source only (module doc)

            # Only the file's fingerprint: the mapping is compiled once, when it is opened.
            parts.append(f"{source.kind}:{fingerprint_of(source.mapping)}")
    return "source=" + ",".join(parts)


@dataclass(frozen=True)
class Identity:
    """What a run records of its extract: a name, a SHA-256 and a modification time."""

    path: Path
    sha256: Callable[[], str]
    """The SHA-256, worked out in the background while the run reads: call it for the value."""
    mtime: dt.datetime


def identify(feed: FeedConfig, path: Path | None) -> Identity:
    """The identity of what a run of ``feed`` reads: the file ``path`` for a feed of one file
    source; for several sources, or a query, every part (a query is new on every run)."""
    if feed.file_extract:
        assert path is not None
        resolved = path.resolve()
        mtime = modified_at(resolved)
        return Identity(resolved, in_background(partial(sha256_of, resolved)), mtime)
    parts: list[str | tuple[str, Path]] = []
    """What the SHA-256 is made of: a query's own line, or a source's kind and file."""
    newest = dt.datetime.min.replace(tzinfo=dt.UTC)
    first: Path | None = None
    for number, source in enumerate(sources_of(feed), 1):
        if source.kind == "sql":
            assert source.mapping is not None
            # A query's rows have no file to know them by: each run reads them anew.
            now = dt.datetime.now(dt.UTC)
            parts.append(f"sql:{source.mapping}:{time.time_ns()}\n")
            newest = max(newest, now)
            first = first or source.mapping
            continue
        file = extract_file(feed, number, source)
        parts.append((source.kind, file))
        newest = max(newest, modified_at(file))
        first = first or file
    assert first is not None
    return Identity(first, in_background(partial(_sha256_of_parts, parts)), newest)


def _sha256_of_parts(parts: list[str | tuple[str, Path]]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, tuple):
            kind, file = part
            part = f"{kind}:{sha256_of(file)}\n"
        digest.update(part.encode())
    return digest.hexdigest()


def extract_file(feed: FeedConfig, number: int, source: SourceConfig) -> Path:
    """The newest file matching one source's ``extract``; a missing one fails the run."""
    pattern = source.extract
    assert pattern is not None
    matches = [Path(p) for p in glob.glob(pattern) if Path(p).is_file()]
    if not matches:
        raise ExtractError(
            f"feed {feed.name!r}: source {number} ({source.kind}): no file matches "
            f"extract = {pattern!r}; a missing source fails the run (its patrons have not left)",
            code="file-unreadable",
        )
    return max(matches, key=lambda p: (p.stat().st_mtime, p.name)).resolve()


def open_source(
    feed: FeedConfig,
    path: Path | None,
    *,
    seed: bytes = b"",
    progress: Progress | None = None,
    settings: CheckSettings | None = None,
    rule: MatchIdRule | None = None,
) -> Source:
    """The records a run of ``feed`` reads: from ``path`` for a feed of one file source, else
    from every source (merged by precedence)."""
    checks = feed.checks if settings is None else settings
    listed = sources_of(feed)
    if feed.file_extract:
        assert path is not None
        return _open(listed[0], path, feed.encoding, checks, seed, progress)
    opened: list[Source] = []
    for number, source in enumerate(listed, 1):
        file = None if source.kind == "sql" else extract_file(feed, number, source)
        own_seed = seed + f"\x00{number}".encode() if len(listed) > 1 else seed
        opened.append(_open(source, file, feed.encoding, checks, own_seed, progress))
    if len(opened) == 1:
        return opened[0]
    return MergedSource(opened, rule or feed.match_id)


def _open(
    source: SourceConfig,
    path: Path | None,
    encoding: str,
    settings: CheckSettings,
    seed: bytes,
    progress: Progress | None,
) -> Source:
    if source.kind in ("sql", "csv"):
        return _open_mapped(source, path, settings, seed, progress)
    assert path is not None
    return XmlExtract(path, encoding=encoding, seed=seed, progress=progress)


def _open_mapped(
    source: SourceConfig,
    path: Path | None,
    settings: CheckSettings,
    seed: bytes,
    progress: Progress | None,
) -> Source:
    # Imported here, for a mapped source only (see the module's doc).
    from ..mapping.spec import load
    from .csvfile import CsvExtract
    from .sql import SqlExtract

    assert source.mapping is not None
    if source.kind == "sql":
        return SqlExtract(load(source.mapping), settings, seed=seed, progress=progress)
    assert path is not None
    return CsvExtract(path, load(source.mapping), settings, seed=seed, progress=progress)
