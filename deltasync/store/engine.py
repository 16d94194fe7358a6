"""Opening the state store: engine set-up, file permissions and automatic migration."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StoreError
from ..redact import SECRET_PARAMETERS, redact

PRIVATE_FILE_MODE = 0o600


def create_store_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file is created with mode 0600 and made transactional."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_file(parsed)
        engine = create_engine(parsed)
        _make_sqlite_transactional(engine)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreError(f"cannot use state store {safe_url(url)}: {safe_text(url, exc)}") from exc


def migrate(engine: Engine) -> None:
    """Bring the schema up to date, the whole upgrade in one transaction."""
    config = alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise StoreError(
            f"cannot open state store {safe_url(engine.url)}: {safe_text(engine.url, exc)}"
        ) from exc


def alembic_config() -> AlembicConfig:
    """Alembic configuration pointing at the migrations shipped inside the package."""
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
        fd = os.open(path, os.O_CREAT | os.O_RDWR, PRIVATE_FILE_MODE)
        os.close(fd)
        os.chmod(path, PRIVATE_FILE_MODE)
    except OSError as exc:
        raise StoreError(f"cannot create state store {path}: {exc.strerror}") from exc


def _make_sqlite_transactional(engine: Engine) -> None:
    # The sqlite3 driver does not BEGIN before DDL; without this a failed migration or run
    # would leave half its work behind. This is SQLAlchemy's documented recipe.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 30000")
        # WAL lets status and history read while a run writes.
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")
