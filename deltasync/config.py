"""Configuration: a TOML file read into frozen dataclasses.

Precedence is CLI option > ``DELTASYNC_*`` environment variable > config file > default.
Relative paths resolve against the folder of the config file. Every error names the file and
the key, and an unknown key is an error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError
from .matchid import MatchIdRule

ENV_CONFIG = "DELTASYNC_CONFIG"
ENV_STATE_URL = "DELTASYNC_STATE_URL"
DEFAULT_CONFIG_NAME = "config.toml"
DEFAULT_STATE_URL = "sqlite:///deltasync.db"
FEED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Limit:
    """A guard threshold: an absolute count or a percentage of the patrons in the snapshot."""

    value: float
    percent: bool

    @classmethod
    def parse(cls, raw: object, where: str) -> Limit:
        """Read ``12`` or ``"12"`` (a count) or ``"5%"`` (a share of the snapshot)."""
        text = str(raw).strip()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%?)", text)
        if isinstance(raw, bool) or match is None:
            raise ConfigError(f"{where}: expected a count such as 500 or a percent such as '5%'")
        return cls(float(match.group(1)), bool(match.group(2)))

    def ceiling(self, base: int) -> int:
        """The largest count allowed when the snapshot holds ``base`` patrons."""
        if self.percent:
            return math.floor(base * self.value / 100)
        return math.floor(self.value)

    def __str__(self) -> str:
        number = f"{self.value:g}"
        return f"{number}%" if self.percent else number


@dataclass(frozen=True)
class DepartureConfig:
    """How departed patrons are expired, and the guards against a truncated extract."""

    expiry_offset_days: int = 0
    purge_after_days: int = 365
    status: str | None = None
    user_group: str | None = None
    max_departures: Limit = Limit(5, True)
    max_changes: Limit = Limit(50, True)

    def policy_date(self, now: dt.datetime, tz: dt.tzinfo) -> dt.date:
        """The expiry date written into expiration records for a run at ``now``."""
        return now.astimezone(tz).date() + dt.timedelta(days=self.expiry_offset_days)


@dataclass(frozen=True)
class FeedConfig:
    """One SIS feed: one population of patrons with its own snapshot and outbox."""

    name: str
    match_id: MatchIdRule
    outbox: Path
    timezone: dt.tzinfo
    extract: str | None = None
    ignore: tuple[str, ...] = ()
    records_per_part: int = 20_000
    departure: DepartureConfig = field(default_factory=DepartureConfig)


@dataclass(frozen=True)
class Config:
    """The whole configuration of one deltasync installation."""

    path: Path | None
    state_url: str
    feeds: Mapping[str, FeedConfig]

    def feed(self, name: str | None) -> FeedConfig:
        """The feed called ``name``, or the only feed when ``name`` is None."""
        if name is None:
            if len(self.feeds) == 1:
                return next(iter(self.feeds.values()))
            choices = ", ".join(sorted(self.feeds)) or "none"
            raise ConfigError(
                f"{self._where()}: several feeds are configured ({choices}); choose one with --feed"
            )
        try:
            return self.feeds[name]
        except KeyError:
            choices = ", ".join(sorted(self.feeds)) or "none"
            raise ConfigError(
                f"{self._where()}: no feed named {name!r} (configured: {choices})"
            ) from None

    def _where(self) -> str:
        return str(self.path) if self.path else "configuration"


def locate(explicit: Path | None) -> Path:
    """The config file to read: ``--config``, else ``$DELTASYNC_CONFIG``, else ./config.toml."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(ENV_CONFIG)
    if from_env:
        return Path(from_env)
    return Path.cwd() / DEFAULT_CONFIG_NAME


def load(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration file at ``path``."""
    env = os.environ if environ is None else environ
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse(data, path.resolve(), env)


def parse(data: Mapping[str, Any], path: Path, environ: Mapping[str, str]) -> Config:
    """Build a :class:`Config` from already-decoded TOML ``data`` read from ``path``."""
    reader = _Reader(path)
    reader.keys(data, "", {"state", "feeds"})
    state = reader.table(data, "state")
    reader.keys(state, "state", {"url"})
    raw_url = environ.get(ENV_STATE_URL) or reader.string(state, "state.url", DEFAULT_STATE_URL)
    state_url = _state_url(raw_url, path.parent, reader, from_env=bool(environ.get(ENV_STATE_URL)))
    feeds_table = reader.table(data, "feeds")
    if not feeds_table:
        raise ConfigError(f"{path}: [feeds]: at least one feed must be configured")
    feeds = {name: _feed(reader, name, table) for name, table in feeds_table.items()}
    return Config(path=path, state_url=state_url, feeds=feeds)


FEED_KEYS = {
    "match_id",
    "extract",
    "outbox",
    "timezone",
    "ignore",
    "records_per_part",
    "departure",
}
DEPARTURE_KEYS = {
    "expiry",
    "purge_after_days",
    "status",
    "user_group",
    "max_departures",
    "max_changes",
}


def _feed(reader: _Reader, name: str, table: object) -> FeedConfig:
    where = f"feeds.{name}"
    if not isinstance(table, dict):
        raise reader.error(where, "must be a table")
    if not FEED_NAME.match(name):
        raise reader.error(where, "a feed name is 1-64 letters, digits, '_' or '-'")
    reader.keys(table, where, FEED_KEYS)
    try:
        match_id = MatchIdRule.parse(reader.string(table, f"{where}.match_id", "primary_id"))
    except ValueError as exc:
        raise reader.error(f"{where}.match_id", str(exc)) from None
    extract = table.get("extract")
    if extract is not None:
        extract = str(reader.path(reader.string(table, f"{where}.extract", "")))
    outbox = reader.path(reader.string(table, f"{where}.outbox", f"outbox/{name}"))
    tz_name = table.get("timezone")
    timezone: dt.tzinfo
    if tz_name is None:
        # The machine's own zone: "today" then means what the librarian's calendar says.
        timezone = dt.datetime.now().astimezone().tzinfo or dt.UTC
    else:
        try:
            timezone = ZoneInfo(reader.string(table, f"{where}.timezone", ""))
        except (ZoneInfoNotFoundError, ValueError):
            raise reader.error(f"{where}.timezone", f"unknown time zone {tz_name!r}") from None
    ignore = table.get("ignore", [])
    if not isinstance(ignore, list) or not all(isinstance(i, str) and i.strip() for i in ignore):
        raise reader.error(f"{where}.ignore", "must be a list of field names or paths")
    if any(not re.fullmatch(r"[A-Za-z_][\w.-]*(/[A-Za-z_][\w.-]*)*", i) for i in ignore):
        raise reader.error(
            f"{where}.ignore",
            "entries are element names or paths like "
            "'status_date' or 'contact_info/addresses/address/start_date'",
        )
    per_part = reader.integer(table, f"{where}.records_per_part", 20_000, minimum=1)
    departure = _departure(reader, where, reader.table(table, "departure", where))
    return FeedConfig(
        name=name,
        match_id=match_id,
        outbox=outbox,
        timezone=timezone,
        extract=extract,
        ignore=tuple(ignore),
        records_per_part=per_part,
        departure=departure,
    )


def _departure(reader: _Reader, feed_where: str, table: dict[str, Any]) -> DepartureConfig:
    where = f"{feed_where}.departure"
    reader.keys(table, where, DEPARTURE_KEYS)
    expiry = reader.string(table, f"{where}.expiry", "today").replace(" ", "")
    match = re.fullmatch(r"today(?:([+-])(\d+))?", expiry)
    if match is None:
        raise reader.error(f"{where}.expiry", "must be 'today' or 'today+N' (N days)")
    offset = int(match.group(2) or 0) * (-1 if match.group(1) == "-" else 1)

    def optional(key: str) -> str | None:
        value = table.get(key)
        return None if value is None else reader.string(table, f"{where}.{key}", "")

    return DepartureConfig(
        expiry_offset_days=offset,
        purge_after_days=reader.integer(table, f"{where}.purge_after_days", 365, minimum=0),
        status=optional("status"),
        user_group=optional("user_group"),
        max_departures=Limit.parse(
            table.get("max_departures", "5%"), reader.at(f"{where}.max_departures")
        ),
        max_changes=Limit.parse(table.get("max_changes", "50%"), reader.at(f"{where}.max_changes")),
    )


def _state_url(raw: str, base: Path, reader: _Reader, *, from_env: bool) -> str:
    where = ENV_STATE_URL if from_env else "state.url"
    try:
        url: URL = make_url(raw)
    except ArgumentError:
        raise reader.error(where, f"not a database URL: {raw!r}") from None
    if url.password is not None and not from_env:
        raise reader.error(
            where,
            "holds a password; keep secrets out of config files "
            "(PostgreSQL reads PGPASSWORD or ~/.pgpass)",
        )
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise reader.error(where, "SQLite needs a file path, e.g. sqlite:///var/deltasync.db")
        url = url.set(database=str((base / url.database).resolve()))
    elif url.get_backend_name() != "postgresql":
        raise reader.error(where, "only sqlite:/// and postgresql+psycopg:// URLs are supported")
    return url.render_as_string(hide_password=False)


class _Reader:
    """Typed access to TOML values with errors that name the file and the key."""

    def __init__(self, path: Path) -> None:
        self.file = path

    def at(self, key: str) -> str:
        return f"{self.file}: {key}"

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {key}: {message}")

    def keys(self, table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                name = f"{where}.{key}" if where else key
                raise self.error(name, f"unknown key (allowed here: {', '.join(sorted(allowed))})")

    def table(self, data: Mapping[str, Any], key: str, where: str = "") -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(f"{where}.{key}" if where else key, "must be a table")
        return value

    def string(self, data: Mapping[str, Any], where: str, default: str) -> str:
        value = data.get(where.rsplit(".", 1)[-1], default)
        if not isinstance(value, str):
            raise self.error(where, "must be a string")
        return value

    def integer(self, data: Mapping[str, Any], where: str, default: int, *, minimum: int) -> int:
        value = data.get(where.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(where, f"must be a whole number of at least {minimum}")
        return value

    def path(self, raw: str) -> Path:
        return (self.file.parent / Path(raw).expanduser()).resolve()
