"""Shared fixtures: a real migrated store on SQLite and on PostgreSQL, configs and extracts."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import generate_extract  # noqa: E402
from sshd import SshServer, sshd_server  # noqa: E402

PG_URL_ENV = "DELTASYNC_TEST_PG_URL"
REQUIRE_PG_ENV = "DELTASYNC_TEST_REQUIRE_PG"
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a config or store URL from the developer's environment."""
    monkeypatch.delenv("DELTASYNC_CONFIG", raising=False)
    monkeypatch.delenv("DELTASYNC_STATE_URL", raising=False)


def _postgres_database() -> Iterator[str]:
    admin_url = os.environ.get(PG_URL_ENV)
    if not admin_url:
        if os.environ.get(REQUIRE_PG_ENV):
            pytest.fail(f"{PG_URL_ENV} is not set but PostgreSQL tests are required")
        pytest.skip(f"PostgreSQL not available (set {PG_URL_ENV}; ./scripts/test does)")
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty state store: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'deltasync.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database, for tests that only make sense there."""
    yield from _postgres_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite store URL, for tests about the embedded default only."""
    return f"sqlite:///{tmp_path / 'state' / 'deltasync.db'}"


ConfigWriter = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> ConfigWriter:
    """Write a config.toml for one feed ``patrons`` and return its path."""

    def write(
        url: str,
        *,
        feed: dict[str, Any] | None = None,
        departure: dict[str, Any] | None = None,
        name: str = "patrons",
        checks: dict[str, Any] | None = None,
    ) -> Path:
        settings: dict[str, Any] = {
            "timezone": "America/Chicago",
            "ignore": ["status_date"],
            **(feed or {}),
        }
        lines = ["[state]", f"url = {_toml(url)}", "", f"[feeds.{name}]"]
        lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
        if departure:
            lines += ["", f"[feeds.{name}.departure]"]
            lines += [f"{key} = {_toml(value)}" for key, value in departure.items()]
        if checks:
            lines += ["", f"[feeds.{name}.checks]"]
            lines += [f"{key} = {_toml(value)}" for key, value in checks.items()]
        path = tmp_path / "config.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


@pytest.fixture
def make_extract(tmp_path: Path) -> Callable[..., Path]:
    """Write a generated extract of ``patrons`` patrons on ``day`` and return its path."""

    def make(day: int, patrons: int = 300, *, suffix: str = ".xml", **options: Any) -> Path:
        folder = tmp_path / "incoming"
        folder.mkdir(exist_ok=True)
        path = folder / f"patrons-day{day:03d}{suffix}"
        generate_extract.write_extract(path, patrons=patrons, day=day, **options)
        return path

    return make


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """One throwaway OpenSSH server on loopback for the whole session."""
    yield from sshd_server(tmp_path_factory)


@pytest.fixture
def smtp_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real SMTP server (aiosmtpd) on loopback, plain; its ``received`` mails."""
    from notices import SmtpServer

    monkeypatch.setattr("deltasync.report.notify.RETRY_PAUSE", 0.05)
    server = SmtpServer(tmp_path / "smtp").start()
    yield server
    server.stop()


@pytest.fixture
def webhook_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real HTTP listener on loopback; its ``posts``, and ``answers`` to give."""
    from notices import WebhookServer

    monkeypatch.setattr("deltasync.report.notify.RETRY_PAUSE", 0.05)
    server = WebhookServer().start()
    yield server
    server.stop()
