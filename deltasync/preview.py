"""``deltasync map``: rows rendered through the feed's mapping, for checking a mapping.

Nothing is stored and no check runs: this shows what the mapping makes of the rows, and what
it could not map (a code its tables lack, a date its format does not read), row by row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from .check import source_for
from .checks.findings import Finding
from .config import FeedConfig
from .errors import ConfigError


@dataclass(frozen=True)
class Rendered:
    """One row, as the mapping renders it."""

    where: str
    user: etree._Element
    findings: list[Finding]


def render_rows(feed: FeedConfig, path: Path | None, *, limit: int | None) -> list[Rendered]:
    """The first ``limit`` rows (every row with None) of ``path``, or of the feed's own
    sources without one, rendered through the feed's mapping."""
    if not any(s.mapping is not None for s in feed.sources):
        raise ConfigError(f"feed {feed.name!r} has no mapping: `map` is for csv and sql sources")
    source = source_for(path, feed.checks, feed.match_id, feed.encoding, feed)
    rendered: list[Rendered] = []
    for record in source.records():
        if limit is not None and len(rendered) >= limit:
            break
        user = record.element
        rendered.append(Rendered(record.where, user, list(record.findings)))
    return rendered
