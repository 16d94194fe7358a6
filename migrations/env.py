"""Alembic environment: deltasync migrates its own store through a connection it hands in.

``fileConfig()`` is deliberately not called: it would replace the application's logging.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from deltasync.store.models import metadata as target_metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # Batch mode rewrites tables for ALTERs that SQLite lacks; it does nothing elsewhere.
        render_as_batch=True,
        compare_type=True,
    )


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    # Standalone use (alembic CLI for developers): a URL from -x url=... .
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the store URL: alembic -x url=sqlite:///path.db ...")
    engine = create_engine(url)
    with engine.begin() as own_connection:
        _configure(own_connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("deltasync migrations run online only")
run_migrations()
