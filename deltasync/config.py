"""Configuration: a TOML file read into frozen dataclasses.

Precedence is CLI option > ``DELTASYNC_*`` environment variable > config file > default.
Relative paths resolve against the folder of the (main) config file. Every error names the
file and the key, and an unknown key is an error, so a typo never silently falls back to a
default. Feeds may come from included files and share ``[defaults]`` (config_sources.py).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from . import config_sources
from .checks import settings as check_settings
from .checks.settings import CheckSettings
from .errors import ConfigError
from .matchid import MatchIdRule
from .policy import settings as expiry_settings
from .policy.settings import ExpiryConfig
from .redact import SECRET_PARAMETERS, redact
from .report import settings as notify_settings
from .report.settings import NotifySettings

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
    max_expiry_moves: Limit = Limit(100, True)
    """Patrons whose only change is a later expiry or purge date (a term rollover)."""
    max_expiry_cuts: Limit = Limit(5, True)
    """Present patrons whose expiry or purge date moves earlier (a SIS expiring everyone)."""
    grace_days: int = 0
    """A patron absent for fewer days than this is not departed yet."""
    keep_groups: tuple[str, ...] = ()
    """User groups never expired by absence."""
    note: str | None = None
    """A user note added to expiration records; ``{date}`` is the run's date."""
    note_type: str = "CIRCULATION"

    def policy_date(self, now: dt.datetime, tz: dt.tzinfo) -> dt.date:
        """The expiry date written into expiration records for a run at ``now``."""
        return now.astimezone(tz).date() + dt.timedelta(days=self.expiry_offset_days)


@dataclass(frozen=True)
class SftpSettings:
    """How to reach the SFTP server; secrets come from the environment, never the config."""

    host: str
    username: str
    key_file: Path
    known_hosts: Path
    port: int = 22
    passphrase_env: str | None = None
    connect_timeout: float = 30.0
    operation_timeout: float = 120.0
    attempts: int = 4
    backoff_seconds: float = 2.0

    def passphrase(self) -> str | None:
        """The key's passphrase from the environment variable the config names."""
        if self.passphrase_env is None:
            return None
        return secret_from_environment("sftp.passphrase_env", self.passphrase_env)


@dataclass(frozen=True)
class DeliveryConfig:
    """Where delta files go after the outbox: a folder, or a folder on an SFTP server."""

    transport: str
    remote_dir: str
    sftp: SftpSettings | None = None
    confirm: str = "pickup"
    pickup_timeout: dt.timedelta = dt.timedelta(hours=26)
    job_id: str | None = None


@dataclass(frozen=True)
class AlmaApiConfig:
    """Alma's REST API, for confirming batches from the SIS job's results."""

    base_url: str
    api_key_env: str

    def api_key(self) -> str:
        """The API key, from the environment variable the config names."""
        return secret_from_environment("alma.api_key_env", self.api_key_env)


def secret_from_environment(setting: str, variable: str) -> str:
    """A secret from the environment variable a setting names; secrets never sit in files."""
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(f"{setting} names {variable}, which is not set (or empty)")
    return value


SOURCE_KINDS = ("alma-xml", "csv", "sql")


@dataclass(frozen=True)
class SourceConfig:
    """One source of a feed: what kind, where its extract is, and the mapping of its rows."""

    kind: str = "alma-xml"
    extract: str | None = None
    """A path or a glob (the newest match is taken); None for ``sql`` or when given per run."""
    mapping: Path | None = None
    """The mapping file of a ``csv`` or ``sql`` source."""


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
    encoding: str = "utf-8"
    """What the extract is written in; anything but UTF-8 is transcoded on purpose."""
    departure: DepartureConfig = field(default_factory=DepartureConfig)
    delivery: DeliveryConfig | None = None
    checks: CheckSettings = field(default_factory=CheckSettings)
    retention_days: int = 365
    """Superseded records older than this lose their payload; 0 keeps everything."""
    notify: NotifySettings = field(default_factory=NotifySettings)
    """Who hears about this feed's runs (``[notify]`` with ``[feeds.NAME.notify]`` over it)."""
    report_html: Path | None = None
    """This feed's HTML report, written after every run."""
    expiry: ExpiryConfig = field(default_factory=ExpiryConfig)
    """``[feeds.NAME.expiry]``: renewal window, rolling refresh, computed dates."""
    count_sis_fields: bool = False
    """Count changes of the fields Alma's SIS load ignores (off: they are not changes)."""
    warnings: tuple[str, ...] = ()
    """What looks wrong but is allowed (dates that look like a heartbeat)."""
    sources: tuple[SourceConfig, ...] = ()
    """Where the records come from, in precedence order; empty: Alma XML from ``extract``."""

    @property
    def file_extract(self) -> bool:
        """Whether a run reads one extract file (given on the command line or by
        ``extract``); else each source finds its own (several sources, or SQL)."""
        return len(self.sources) <= 1 and all(s.kind != "sql" for s in self.sources)


@dataclass(frozen=True)
class Config:
    """The whole configuration of one deltasync installation."""

    path: Path | None
    state_url: str
    feeds: Mapping[str, FeedConfig]
    alma: AlmaApiConfig | None = None
    metrics_file: Path | None = None
    """Where node_exporter's textfile collector reads deltasync's metrics (metrics.py)."""
    feed_files: Mapping[str, Path] = field(default_factory=dict)
    """The file each feed is defined in: the main file or an included one."""
    log_file: Path | Literal["-"] | None = None
    """The run log: a file (reopened when logrotate moves it), ``-`` for stderr, or none."""
    report_html: Path | None = None
    """The HTML report of every feed, written after every run."""

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
    return parse(config_sources.read_toml(path), path.resolve(), env)


def parse(data: Mapping[str, Any], path: Path, environ: Mapping[str, str]) -> Config:
    """Build a :class:`Config` from already-decoded TOML ``data`` read from ``path``."""
    reader = _Reader(path)
    reader.keys(
        data,
        "",
        {"state", "feeds", "alma", "checks", "include", "defaults", "metrics_file", *REPORT_KEYS},
    )
    state = reader.table(data, "state")
    reader.keys(state, "state", {"url"})
    raw_url = environ.get(ENV_STATE_URL) or reader.string(state, "state.url", DEFAULT_STATE_URL)
    state_url = _state_url(raw_url, path.parent, reader, from_env=bool(environ.get(ENV_STATE_URL)))
    sources = config_sources.gather(data, path, FEED_KEYS)
    if not sources:
        raise ConfigError(f"{path}: [feeds]: at least one feed must be configured")
    shared_checks = reader.table(data, "checks")
    check_settings.parse(shared_checks, "checks", reader.error)  # its errors name [checks]
    shared_notify = _shared_notify(reader, data)
    readers = {s.name: _FeedReader(s, path) for s in sources}
    feeds = {
        s.name: _feed(readers[s.name], s.name, s.table, shared_checks, shared_notify)
        for s in sources
    }
    alma = _alma(reader, reader.table(data, "alma"))
    for feed in feeds.values():
        if feed.delivery is not None and feed.delivery.confirm == "alma-api" and alma is None:
            raise readers[feed.name].error(
                f"feeds.{feed.name}.confirm",
                "'alma-api' needs an [alma] table with base_url and api_key_env",
            )
    metrics_file = None
    if "metrics_file" in data:
        raw_metrics = reader.string(data, "metrics_file", "")
        if not raw_metrics.strip():
            raise reader.error(
                "metrics_file", "a file path, e.g. /var/lib/node_exporter/deltasync.prom"
            )
        metrics_file = reader.path(raw_metrics)
    log_file, report_html = _reports(reader, data)
    return Config(
        path=path,
        state_url=state_url,
        feeds=feeds,
        alma=alma,
        metrics_file=metrics_file,
        feed_files={s.name: s.file for s in sources},
        log_file=log_file,
        report_html=report_html,
    )


def _alma(reader: _Reader, table: dict[str, Any]) -> AlmaApiConfig | None:
    if not table:
        return None
    reader.keys(table, "alma", {"base_url", "api_key_env"})
    base_url = _alma_base_url(reader, reader.string(table, "alma.base_url", ""))
    key_env = reader.string(table, "alma.api_key_env", "")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key_env):
        raise reader.error(
            "alma.api_key_env",
            "the name of an environment variable holding "
            "the API key (the key itself never goes in the config)",
        )
    return AlmaApiConfig(base_url, key_env)


LOOPBACK_NAMES = {"localhost", "localhost."}


def _alma_base_url(reader: _Reader, raw: str) -> str:
    example = "such as 'https://api-na.hosted.exlibrisgroup.com'"
    try:
        parts = urllib.parse.urlsplit(raw)
        _ = parts.port  # ValueError for a port that is not a number
    except ValueError:
        parts = urllib.parse.urlsplit("")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise reader.error("alma.base_url", f"must be an http(s) URL {example}")
    if parts.username is not None or parts.query or parts.fragment:
        # The key goes in a header, from api_key_env; never in the config, nor in a URL.
        raise reader.error(
            "alma.base_url",
            f"only the API's address, {example}: no user, password, query or fragment "
            "(the API key comes from the variable api_key_env names)",
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise reader.error(
            "alma.base_url",
            "http:// would send the API key in clear text; use https:// (http is accepted "
            "only for this machine: localhost, 127.0.0.0/8, ::1)",
        )
    return raw.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it is not resolved, so it cannot be trusted to stay local


FEED_KEYS = {
    "source",
    "mapping",
    "sources",
    "encoding",
    "transport",
    "remote_dir",
    "sftp",
    "confirm",
    "pickup_timeout",
    "job_id",
    "match_id",
    "extract",
    "outbox",
    "timezone",
    "ignore",
    "records_per_part",
    "departure",
    "checks",
    "retention_days",
    "notify",
    "report_html",
    "expiry",
    "count_sis_fields",
}
DEPARTURE_KEYS = {
    "expiry",
    "purge_after_days",
    "status",
    "user_group",
    "max_departures",
    "max_changes",
    "max_expiry_moves",
    "max_expiry_cuts",
    "grace_days",
    "keep_groups",
    "note",
    "note_type",
}
NOTE_TEXT_MAX = 2000
"""Alma's schema: ``note_text`` is a string2000Length."""


def _feed(
    reader: _Reader,
    name: str,
    table: object,
    shared_checks: dict[str, Any],
    shared_notify: dict[str, Any],
) -> FeedConfig:
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
    delivery = _delivery(reader, where, table)
    encoding = reader.string(table, f"{where}.encoding", "utf-8").lower()
    if encoding not in ("utf-8", "cp1252"):
        raise reader.error(f"{where}.encoding", "must be 'utf-8' or 'cp1252'")
    checks = check_settings.parse(
        check_settings.merged(shared_checks, reader.table(table, "checks", where)),
        f"{where}.checks" if "checks" in table else "checks",
        reader.error,
    )
    retention = reader.integer(table, f"{where}.retention_days", 365, minimum=0)
    notify, report_html = _feed_reports(reader, where, table, shared_notify)
    expiry = expiry_settings.parse(
        reader.table(table, "expiry", where), f"{where}.expiry", reader.error
    )
    count_sis = table.get("count_sis_fields", False)
    if not isinstance(count_sis, bool):
        raise reader.error(f"{where}.count_sis_fields", "must be true or false")
    warnings = [f"{reader.at(f'{where}.expiry')}: {w}" for w in expiry.warnings()]
    sources = _sources(reader, where, table, extract)
    return FeedConfig(
        expiry=expiry,
        count_sis_fields=count_sis,
        warnings=tuple(warnings),
        sources=sources,
        notify=notify,
        report_html=report_html,
        retention_days=retention,
        checks=checks,
        encoding=encoding,
        delivery=delivery,
        name=name,
        match_id=match_id,
        outbox=outbox,
        timezone=timezone,
        extract=extract,
        ignore=tuple(ignore),
        records_per_part=per_part,
        departure=departure,
    )


SOURCE_KEYS = {"source", "extract", "mapping"}


def _sources(
    reader: _Reader, where: str, table: dict[str, Any], extract: str | None
) -> tuple[SourceConfig, ...]:
    """``source``/``mapping`` of the feed, or its ``[[feeds.NAME.sources]]`` in order."""
    listed = table.get("sources")
    if listed is None:
        if "source" not in table and "mapping" not in table:
            return ()
        return (_source(reader, where, table, extract, own_extract=False),)
    for key in ("source", "mapping", "extract"):
        if key in table:
            raise reader.error(
                f"{where}.{key}", "set it in each [[feeds.NAME.sources]] table instead"
            )
    if not isinstance(listed, list) or not listed or not all(isinstance(t, dict) for t in listed):
        raise reader.error(f"{where}.sources", "one or more [[feeds.NAME.sources]] tables")
    sources = []
    for number, entry in enumerate(listed, 1):
        at = f"{where}.sources[{number}]"
        reader.keys(entry, at, SOURCE_KEYS)
        raw = entry.get("extract")
        path = None if raw is None else str(reader.path(reader.string(entry, f"{at}.extract", "")))
        sources.append(_source(reader, at, entry, path, own_extract=True))
    return tuple(sources)


def _source(
    reader: _Reader, where: str, table: dict[str, Any], extract: str | None, *, own_extract: bool
) -> SourceConfig:
    kind = reader.string(table, f"{where}.source", "alma-xml")
    if kind not in SOURCE_KINDS:
        raise reader.error(f"{where}.source", f"must be one of {', '.join(SOURCE_KINDS)}")
    raw_mapping = table.get("mapping")
    if kind == "alma-xml":
        if raw_mapping is not None:
            raise reader.error(f"{where}.mapping", "only csv and sql sources have a mapping")
        mapping = None
    else:
        if raw_mapping is None:
            raise reader.error(f"{where}.mapping", f"a {kind} source needs a mapping file")
        mapping = reader.path(reader.string(table, f"{where}.mapping", ""))
    if kind == "sql" and extract is not None:
        raise reader.error(f"{where}.extract", "a sql source reads its [sql] query, not a file")
    if own_extract and kind != "sql" and extract is None:
        raise reader.error(
            f"{where}.extract", "each file source names its extract (a path or glob)"
        )
    return SourceConfig(kind, extract, mapping)


REPORT_KEYS = {"notify", "log_file", "report_html"}


def _reports(
    reader: _Reader, data: Mapping[str, Any]
) -> tuple[Path | Literal["-"] | None, Path | None]:
    """``log_file`` and ``report_html`` of the whole installation (``[notify]`` is per feed)."""
    log_file: Path | Literal["-"] | None = None
    if "log_file" in data:
        raw = reader.string(data, "log_file", "")
        if not raw.strip():
            raise reader.error("log_file", "a file name, or '-' for stderr")
        log_file = "-" if raw.strip() == "-" else reader.path(raw)
    return log_file, _report_html(reader, data, "report_html")


def _shared_notify(reader: _Reader, data: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level ``[notify]``, checked once so that its errors name the main file."""
    shared = reader.table(data, "notify")
    notify_settings.parse(shared, "notify", reader.error, reader.path)
    return shared


def _feed_reports(
    reader: _Reader, where: str, table: dict[str, Any], shared: dict[str, Any]
) -> tuple[NotifySettings, Path | None]:
    own = reader.table(table, "notify", where)
    notify = notify_settings.parse(
        notify_settings.merged(shared, own),
        f"{where}.notify" if own else "notify",
        reader.error,
        reader.path,
    )
    return notify, _report_html(reader, table, f"{where}.report_html")


def _report_html(reader: _Reader, table: Mapping[str, Any], where: str) -> Path | None:
    if "report_html" not in table:
        return None
    raw = reader.string(table, where, "")
    if not raw.strip():
        raise reader.error(where, "the HTML file to write, such as 'reports/deltasync.html'")
    return reader.path(raw)


SFTP_KEYS = {
    "host",
    "port",
    "username",
    "key_file",
    "known_hosts",
    "passphrase_env",
    "connect_timeout",
    "operation_timeout",
    "attempts",
}


def _delivery(reader: _Reader, where: str, table: dict[str, Any]) -> DeliveryConfig | None:
    transport = table.get("transport")
    sftp_table = reader.table(table, "sftp", where)
    if transport is None:
        for key in ("remote_dir", "confirm", "pickup_timeout", "job_id"):
            if key in table:
                raise reader.error(f"{where}.transport", f"set 'dir' or 'sftp' to use {key}")
        if sftp_table:
            raise reader.error(f"{where}.transport", "set 'dir' or 'sftp' to deliver files")
        return None
    confirm = reader.string(table, f"{where}.confirm", "pickup")
    if confirm not in ("pickup", "alma-api", "manual"):
        raise reader.error(f"{where}.confirm", "must be 'pickup', 'alma-api' or 'manual'")
    job_id = table.get("job_id")
    if confirm == "alma-api" and not job_id:
        raise reader.error(f"{where}.job_id", "the SIS job's id is required for 'alma-api'")
    ledger: dict[str, Any] = {
        "confirm": confirm,
        "pickup_timeout": _duration(
            reader, f"{where}.pickup_timeout", table.get("pickup_timeout", "26h")
        ),
        "job_id": None if job_id is None else str(job_id),
    }
    if transport not in ("dir", "sftp"):
        raise reader.error(f"{where}.transport", "must be 'dir' or 'sftp'")
    raw_dir = table.get("remote_dir")
    if not isinstance(raw_dir, str) or not raw_dir.strip():
        raise reader.error(f"{where}.remote_dir", "the folder Alma reads must be set")
    if transport == "dir":
        if sftp_table:
            raise reader.error(f"{where}.sftp", "only used with transport = 'sftp'")
        return DeliveryConfig("dir", str(reader.path(raw_dir)), **ledger)
    at = f"{where}.sftp"
    reader.keys(sftp_table, at, SFTP_KEYS)
    for key in ("host", "username", "key_file", "known_hosts"):
        if key not in sftp_table:
            raise reader.error(f"{at}.{key}", "is required for transport = 'sftp'")
    if not raw_dir.startswith("/"):
        raise reader.error(f"{where}.remote_dir", "an absolute path on the SFTP server")
    passphrase_env = sftp_table.get("passphrase_env")
    if passphrase_env is not None and not re.fullmatch(
        r"[A-Za-z_][A-Za-z0-9_]*", str(passphrase_env)
    ):
        raise reader.error(f"{at}.passphrase_env", "the name of an environment variable")

    def seconds(key: str, default: float) -> float:
        value = sftp_table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise reader.error(f"{at}.{key}", "must be a number of seconds above 0")
        return float(value)

    settings = SftpSettings(
        host=reader.string(sftp_table, f"{at}.host", ""),
        port=reader.integer(sftp_table, f"{at}.port", 22, minimum=1),
        username=reader.string(sftp_table, f"{at}.username", ""),
        key_file=reader.path(reader.string(sftp_table, f"{at}.key_file", "")),
        known_hosts=reader.path(reader.string(sftp_table, f"{at}.known_hosts", "")),
        passphrase_env=passphrase_env,
        connect_timeout=seconds("connect_timeout", 30.0),
        operation_timeout=seconds("operation_timeout", 120.0),
        attempts=reader.integer(sftp_table, f"{at}.attempts", 4, minimum=1),
    )
    return DeliveryConfig("sftp", raw_dir, settings, **ledger)


def _duration(reader: _Reader, where: str, raw: object) -> dt.timedelta:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([hm]?)\s*", str(raw))
    if isinstance(raw, bool) or match is None:
        raise reader.error(where, "a duration such as '26h' or '90m' (a bare number is hours)")
    value = float(match.group(1))
    return dt.timedelta(minutes=value) if match.group(2) == "m" else dt.timedelta(hours=value)


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
        max_expiry_moves=Limit.parse(
            table.get("max_expiry_moves", "100%"), reader.at(f"{where}.max_expiry_moves")
        ),
        max_expiry_cuts=Limit.parse(
            table.get("max_expiry_cuts", "5%"), reader.at(f"{where}.max_expiry_cuts")
        ),
        grace_days=reader.integer(table, f"{where}.grace_days", 0, minimum=0),
        keep_groups=_strings(reader, table, f"{where}.keep_groups"),
        note=_note(reader, table, where),
        note_type=reader.string(table, f"{where}.note_type", "CIRCULATION").strip()
        or "CIRCULATION",
    )


def _strings(reader: _Reader, table: dict[str, Any], where: str) -> tuple[str, ...]:
    value = table.get(where.rsplit(".", 1)[-1], [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise reader.error(where, "must be a list of codes such as ['RETIREE']")
    return tuple(v.strip() for v in value)


def _note(reader: _Reader, table: dict[str, Any], where: str) -> str | None:
    if table.get("note") is None:
        return None
    note = reader.string(table, f"{where}.note", "").strip()
    try:
        longest = note.format(date="2027-01-01Z")
    except (KeyError, IndexError, ValueError):
        raise reader.error(
            f"{where}.note", "may use only {date} (the run's date), e.g. 'Left the SIS on {date}'"
        ) from None
    if not note or len(longest) > NOTE_TEXT_MAX:
        raise reader.error(f"{where}.note", f"must be 1-{NOTE_TEXT_MAX} characters (Alma's limit)")
    return note


def _state_url(raw: str, base: Path, reader: _Reader, *, from_env: bool) -> str:
    where = ENV_STATE_URL if from_env else "state.url"
    try:
        url: URL = make_url(raw)
    except ArgumentError:
        raise reader.error(where, f"not a database URL: {redact(raw)!r}") from None
    in_query = any(name.lower() in SECRET_PARAMETERS for name in url.query)
    if (url.password is not None or in_query) and not from_env:
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

    def __init__(self, path: Path, base: Path | None = None) -> None:
        self.file = path
        self.base = path.parent if base is None else base
        """Relative paths resolve against this folder: the main config file's."""

    def at(self, key: str) -> str:
        return f"{self.file}: {key}"

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.at(key)}: {message}")

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
        return (self.base / Path(raw).expanduser()).resolve()


class _FeedReader(_Reader):
    """Reads one feed's table; errors name the file that defines the feed, or for a value the
    feed inherited, the main file's ``[defaults]`` key."""

    def __init__(self, source: config_sources.FeedSource, main: Path) -> None:
        super().__init__(source.file, base=main.parent)
        self.main = main
        self.name = source.name
        self.inherited = source.inherited

    def at(self, key: str) -> str:
        prefix = f"feeds.{self.name}."
        below = key.removeprefix(prefix)
        if key.startswith(prefix) and below in self.inherited:
            return f"{self.main}: defaults.{below} (for feed {self.name})"
        return super().at(key)
