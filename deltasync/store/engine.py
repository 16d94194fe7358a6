"""Opening the state store: engine set-up, file permissions and automatic migration."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StoreError
from ..redact import SECRET_PARAMETERS, redact

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

SQLITE_CACHE_KIB = 32 * 1024
"""SQLite's page cache per connection (counted in a run's peak memory)."""
HEAD_REVISION = "0011"
"""The newest migration this deltasync ships (a test holds it to alembic's own answer).

Opening an up-to-date store — what every command does — compares against this and never
imports alembic, which costs a fifth of a second of every command's start-up."""

PRIVATE_FILE_MODE = 0o600
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_SECONDS = 600
"""How long a SQLite writer waits for another's transaction: a run ingests a whole extract in
one, which takes minutes for a large feed on its first day."""
READ_ONLY = "deltasync_read_only"
"""Execution option of a connection whose transactions only read (``Store.read``)."""
_MIGRATION_LOCK = int.from_bytes(hashlib.sha256(b"deltasync:migrate").digest()[:8], "big") >> 1


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file is created with mode 0600 and made transactional."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_file(parsed)
        engine = create_engine(parsed)
        _make_sqlite_transactional(engine)
        return engine
    # psycopg logs a second complaint about a connection that is already lost; with no
    # logging configured Python would print it over deltasync's own message.
    logging.getLogger("psycopg").addHandler(logging.NullHandler())
    try:
        engine = create_engine(parsed, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreError(f"cannot use state store {safe_url(url)}: {safe_text(url, exc)}") from exc
    _without_jit(engine)
    return engine


def _without_jit(engine: Engine) -> None:
    # PostgreSQL compiles a query to machine code when its estimated cost is high, and the
    # estimates of the queries over every patron are: finding the ~1,000 patrons to send out
    # of 100,000 took 0.75 s, 0.47 s of it compiling. Per transaction (SET LOCAL), so it
    # holds behind a pooler that hands out connections per transaction, and touches nothing
    # else on the server.
    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("SET LOCAL jit = off")


def migrate(engine: Engine) -> None:
    """Bring the schema up to date, the whole upgrade in one transaction.

    The revision is read first without a write lock, so opening an up-to-date store (every
    command does) never waits for a run that is writing, nor makes one wait.
    """
    from .failures import describe  # failures names this module's limits

    try:
        with engine.connect() as connection:
            connection.execution_options(**{READ_ONLY: True})
            with connection.begin():
                current = _revisions(connection, engine.url)
        if current == {HEAD_REVISION}:
            return
        from alembic import command

        config = alembic_config()
        unknown = _unknown(current)
        if unknown:
            raise StoreError(
                f"cannot open state store {safe_url(engine.url)}: this store was written by "
                f"a newer deltasync (revision {', '.join(unknown)}); upgrade deltasync"
            )
        with engine.begin() as connection:
            if engine.url.get_backend_name() == "postgresql":
                # Two commands opening an old store at once: the second waits, then finds it
                # upgraded, instead of failing on tables the first has just created.
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise StoreError(describe(exc, engine.url, doing="cannot open state store")) from exc


@dataclass(frozen=True)
class Revision:
    """Where a store stands against the migrations this deltasync ships."""

    exists: bool
    """False for a SQLite file not created yet (the first command creates it)."""
    current: frozenset[str]
    head: str

    @property
    def up_to_date(self) -> bool:
        """Whether the store is at this deltasync's newest migration."""
        return self.current == {self.head}

    @property
    def newer(self) -> list[str]:
        """Revisions this deltasync does not know: the store was written by a newer one."""
        return _unknown(self.current)


def read_revision(url: str) -> Revision:
    """The store's migration state, read without creating, migrating or writing anything.

    ``migrate`` is what upgrades a store (every command that opens one does); this only says
    whether it would. A SQLite file that is not a deltasync store raises StoreError.
    """
    from .failures import describe

    head = HEAD_REVISION
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or not Path(parsed.database).exists():
            return Revision(False, frozenset(), head)
        _check_existing_sqlite_file(Path(parsed.database))
    try:
        engine = create_engine(parsed)
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreError(f"cannot use state store {safe_url(url)}: {safe_text(url, exc)}") from exc
    try:
        with engine.connect() as connection:
            return Revision(True, frozenset(_revisions(connection, engine.url)), head)
    except SQLAlchemyError as exc:
        raise StoreError(describe(exc, engine.url, doing="cannot open state store")) from exc
    finally:
        engine.dispose()


def _revisions(connection: Connection, url: URL) -> set[str]:
    """The store's alembic revisions; refuses a SQLite database that deltasync did not make."""
    current: set[str] = set()
    if inspect(connection).has_table("alembic_version"):
        rows = connection.execute(text("SELECT version_num FROM alembic_version"))
        current = {row[0] for row in rows}
    if not current and url.get_backend_name() == "sqlite" and inspect(connection).get_table_names():
        # Never add deltasync's tables to another program's database.
        raise StoreError(
            f"{url.database} is a SQLite database but not a deltasync state store (it has "
            "tables of its own); check state.url"
        )
    return current


def _unknown(revisions: set[str] | frozenset[str]) -> list[str]:
    """The revisions this deltasync does not ship: the store was written by a newer one."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return sorted(revisions - {r.revision for r in script.walk_revisions()})


def alembic_config() -> AlembicConfig:
    """Alembic configuration pointing at the migrations shipped inside the package."""
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    location = resources.files("deltasync._migrations")
    config.set_main_option("script_location", str(location))
    return config


def safe_url(url: str | URL) -> str:
    """The URL without its password (``user:password@`` or ``?password=``), for messages."""
    parsed = make_url(url)
    return redact(parsed.render_as_string(hide_password=True), _secrets(parsed))


def safe_text(url: str | URL, text: object) -> str:
    """``text``, often a driver's error, with the secrets of ``url`` and any URL masked."""
    return redact(str(text), _secrets(make_url(url)))


def _secrets(url: URL) -> list[str]:
    values = [url.password]
    for name, value in url.query.items():
        if name.lower() in SECRET_PARAMETERS:
            values += [value] if isinstance(value, str) else list(value)
    return [str(v) for v in values if v]


def _prepare_sqlite_file(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:":
        raise StoreError("a SQLite state store needs a file path")
    path = Path(database)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Create it ourselves so it never exists with looser permissions, even for an instant.
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    except FileExistsError:
        _check_existing_sqlite_file(path)
        return
    except OSError as exc:
        raise StoreError(f"cannot create state store {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def _check_existing_sqlite_file(path: Path) -> None:
    """Refuse a file that is not a SQLite database, reading its header and changing nothing."""
    try:
        # Non-blocking: a FIFO named by mistake must not hang the command.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise StoreError(f"state store {path} is a symbolic link to a missing file") from None
    except OSError as exc:
        raise StoreError(f"cannot open state store {path}: {exc.strerror}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"state store {path} is not a file; check state.url")
        header = os.read(fd, len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"cannot open state store {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if header and header != SQLITE_HEADER:
        raise StoreError(
            f"{path} is not a deltasync state store (not a SQLite database); check state.url"
        )


def make_private(url: URL) -> None:
    """Give an existing SQLite store of ours mode 0600 again (a copy or an old version may
    have left it readable); called once the store is known to be deltasync's. Never through
    a symlink: the file a link names belongs to whoever made the link."""
    if url.get_backend_name() != "sqlite" or not url.database:
        return
    try:
        fd = os.open(url.database, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return  # a symlink (ELOOP), or gone: nothing of ours to change
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
    except PermissionError:
        pass  # another user's store, shared on purpose: theirs to protect
    except OSError as exc:
        raise StoreError(f"cannot make state store {url.database} private: {exc.strerror}") from exc
    finally:
        os.close(fd)


def _make_sqlite_transactional(engine: Engine) -> None:
    # The sqlite3 driver does not BEGIN before DDL; without this a failed migration or run
    # would leave half its work behind. This is SQLAlchemy's documented recipe.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_SECONDS * 1000}")
        # WAL lets status and history read while a run writes.
        cursor.execute("PRAGMA journal_mode = WAL")
        # 32 MiB of page cache instead of SQLite's 2 MiB: a first run of 100,000 patrons
        # builds indexes over every patron, and missed the cache on most of its pages.
        cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A transaction that writes takes the write lock at BEGIN, where the busy timeout
        # applies. A plain BEGIN reads first and then fails at its first write ("database is
        # locked"), without waiting, whenever another process wrote meanwhile. Readers keep
        # the plain BEGIN: WAL lets them read while a run writes, and they hold up no one.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
