"""A SQL query's rows (a view of the SIS's warehouse): the source of the ``sql`` kind.

The mapping's ``[sql]`` table names a SQLAlchemy URL, the query (or a file holding it) and
the environment variable that holds the password (never the URL: secrets stay out of files).
Rows are streamed (server-side cursors where the driver has them), columns are taken by their
labels, and every value reaches the mapping as text, as a CSV file's would: NULL is empty, a
date is ``2027-06-30``, a timestamp its ISO form. So a CSV export and a view of the same data
render the same records.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from collections.abc import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from ..checks.settings import CheckSettings
from ..errors import ConfigError, ExtractError
from ..mapping.spec import Mapping
from .files import Progress
from .record import Record
from .rows import RowRecords

BATCH = 1_000
"""Rows fetched at a time."""


class SqlExtract:
    """The rows of one mapping's query, rendered through the mapping."""

    def __init__(
        self,
        mapping: Mapping,
        settings: CheckSettings,
        *,
        seed: bytes = b"",
        progress: Progress | None = None,
    ) -> None:
        if mapping.sql is None:
            raise ConfigError(f"{mapping.path}: a sql source needs an [sql] table in its mapping")
        self.mapping = mapping
        self.options = mapping.sql
        self.settings = settings
        self.seed = seed
        self.progress = progress

    @property
    def name(self) -> str:
        """What to call the rows in messages: the query of this mapping."""
        return f"sql:{self.mapping.path}"

    def url(self) -> URL:
        """The database URL, with the password from ``password_env``."""
        where = f"{self.mapping.path}: sql.url"
        try:
            url = make_url(self.options.url)
        except ArgumentError:
            raise ConfigError(f"{where}: not a SQLAlchemy database URL") from None
        if url.password is not None:
            raise ConfigError(
                f"{where}: holds a password; name the environment variable that holds it "
                "in sql.password_env instead"
            )
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            # Like state.url: a relative SQLite file is found beside the file that names it.
            url = url.set(database=str((self.mapping.path.parent / url.database).resolve()))
        variable = self.options.password_env
        if variable is not None:
            password = os.environ.get(variable)
            if not password:
                raise ConfigError(
                    f"{self.mapping.path}: sql.password_env names {variable}, which is not set"
                )
            url = url.set(password=password)
        return url

    def records(self, *, fast: bool = True) -> Iterator[Record]:
        """Every row of the query, in the order the database gives them."""
        try:
            engine = create_engine(self.url())
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            raise ConfigError(
                f"{self.mapping.path}: sql.url: no driver for this database ({type(exc).__name__})"
            ) from None
        try:
            yield from self._rows(engine)
        except SQLAlchemyError as exc:
            # The driver's text may hold the URL or a value: only what kind of failure.
            reason = type(getattr(exc, "orig", None) or exc).__name__
            raise ExtractError(
                f"{self.name}: the query failed ({reason}); check sql.url, the password in "
                "sql.password_env and the query",
                code="sql-failed",
            ) from None
        finally:
            engine.dispose()

    def _rows(self, engine: Engine) -> Iterator[Record]:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(
                text(self.options.query)
            )
            maker = RowRecords(
                self.name, list(result.keys()), self.mapping, self.settings, self.seed, "sql"
            )
            row = 0
            for values in result:
                row += 1
                yield maker.record([_text(v) for v in values], row, row)
                if self.progress is not None and row % BATCH == 0:
                    self.progress(row)
            if row == 0:
                raise ExtractError(f"{self.name}: the query returned no rows", code="file-no-users")

    def locate(self, raw_digests: set[bytes]) -> dict[bytes, list[str]]:
        """Where (``sql:MAPPING, line N``: the row's number) rows with these digests stand."""
        found: dict[bytes, list[str]] = defaultdict(list)
        for record in self.records():
            if record.raw_digest in raw_digests:
                found[record.raw_digest].append(record.where)
        return found


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)
