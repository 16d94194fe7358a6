"""``deltasync check``: the run's own pass over any extract or delta zip, storing nothing.

Every record is checked as if it were about to be sent: the pass runs against an empty
snapshot in a scratch store of its own (a temporary SQLite file, removed afterwards), so the
findings are exactly the ones a first run would report — duplicates and identifier values two
patrons share included — and the feed's store is never touched.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import insert

from .canonical import Recipe
from .checks import CheckSettings, Report
from .config import FeedConfig
from .matchid import MatchIdRule
from .scan import ScanSetup, scan
from .source import Source
from .source.factory import open_source
from .source.xml import XmlExtract
from .store.engine import create_store_engine
from .store.models import metadata
from .store.staging import Staging
from .store.tables import feed_t


@dataclass(frozen=True)
class FileCheck:
    """What ``check`` found in one file."""

    path: Path
    records: int
    """How many ``<user>`` records the file holds."""
    report: Report
    held_back: int = 0
    """How many records the checks would hold back (a match ID twice counts once)."""
    expiry_days: dict[int, int] = field(default_factory=dict)
    """Days from today to each record's expiry date → how many records."""


def check_file(
    path: Path | None,
    settings: CheckSettings,
    *,
    rule: MatchIdRule | None = None,
    today: dt.date,
    encoding: str = "utf-8",
    feed: FeedConfig | None = None,
) -> FileCheck:
    """Check every record of an extract or a delta zip, as if each were about to be sent.

    With ``feed``, a file is read as that feed's source reads it (a CSV file through its
    mapping), and without a file the feed's own sources are read (a SQL query). Raises
    :class:`~deltasync.errors.ExtractError` for a file-level problem.
    """
    source = source_for(path, settings, rule, encoding, feed)
    with tempfile.TemporaryDirectory(prefix="deltasync-check-") as folder:
        engine = create_store_engine(f"sqlite:///{Path(folder) / 'scratch.db'}")
        try:
            metadata.create_all(engine)
            with engine.begin() as conn:
                key = conn.execute(
                    insert(feed_t).values(
                        name="check",
                        match_id="-",
                        hash_recipe="-",
                        created_at=dt.datetime.now(dt.UTC),
                    )
                ).inserted_primary_key
                assert key is not None
                setup = ScanSetup(
                    feed_id=int(key[0]),
                    rule=rule or MatchIdRule(),
                    recipe=Recipe(),
                    checks=settings,
                    today=today,
                    trusted_raw=False,
                    keep_payloads=False,
                    count_expiry=True,
                )
                scanned = scan(conn, setup, source, Staging(conn, setup.feed_id))
                conn.rollback()
        finally:
            engine.dispose()
    shown = path if path is not None else Path(source.name)
    return FileCheck(
        shown, scanned.read, scanned.report, len(scanned.held_back), scanned.expiry_days
    )


def source_for(
    path: Path | None,
    settings: CheckSettings,
    rule: MatchIdRule | None,
    encoding: str,
    feed: FeedConfig | None,
) -> Source:
    """What ``check`` reads: ``path`` as the feed's source that names it would read it (else
    as its first file source), or the feed's sources themselves."""
    if feed is None or not feed.sources:
        assert path is not None
        return XmlExtract(path, encoding=encoding)
    if path is None:
        return open_source(feed, None, settings=settings, rule=rule)
    files = [s for s in feed.sources if s.kind != "sql"]
    named = [s for s in files if s.extract and fnmatch.fnmatch(str(path.resolve()), s.extract)]
    chosen = (named or files or list(feed.sources))[0]
    return open_source(
        replace(feed, sources=(chosen,)),
        path,
        settings=settings,
        rule=rule,
    )
