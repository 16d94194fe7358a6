"""Where a configuration's feeds come from: the main file, ``include`` files and ``[defaults]``.

A consortium keeps one file per member under, say, ``feeds.d/`` and lists it in the main file
with ``include = ["feeds.d/*.toml"]`` (globs relative to the main file). An included file holds
only ``[feeds.NAME...]`` tables. ``[defaults]`` in the main file holds feed keys every feed
shares; a feed's own keys win, and tables (``departure``, ``sftp``, ``checks``) merge key by
key. This module only gathers the tables and remembers where each key was written, so that
config.py's errors can name the file and the key a value came from.
"""

from __future__ import annotations

import glob
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

FEED_PLACEHOLDER = "{feed}"
"""Replaced by the feed's name in [defaults] values of PER_FEED_PATHS."""
PER_FEED_PATHS = ("extract", "outbox", "remote_dir", "report_html")
"""Paths that differ from feed to feed: in [defaults] they take ``{feed}``."""
MUST_DIFFER = ("outbox", "report_html")
"""Two feeds never share an outbox (nor a report page, which each would overwrite), so a
default outbox must contain ``{feed}``."""


@dataclass(frozen=True)
class FeedSource:
    """One feed's table after [defaults] were laid under it, and where its keys were written."""

    name: str
    table: dict[str, Any]
    file: Path
    """The file that defines the feed (the main file, or an included one)."""
    inherited: frozenset[str] = field(default_factory=frozenset)
    """Dotted keys below the feed (``departure.max_departures``) that came from [defaults]."""


def read_toml(path: Path, what: str = "configuration") -> dict[str, Any]:
    """A TOML file's data; a ConfigError naming the file when it cannot be read or parsed."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a {what} file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc.reason}") from exc


def gather(data: Mapping[str, Any], path: Path, allowed_feed_keys: set[str]) -> list[FeedSource]:
    """Every feed of the main file ``data`` (read from ``path``) and of the files it includes,
    in that order (included files by name), with [defaults] merged under each."""
    defaults = _defaults(data, path, allowed_feed_keys)
    found: dict[str, tuple[dict[str, Any], Path]] = {}
    for file, feeds in [(path, _feeds_table(data, path)), *_included(data, path)]:
        for name, table in feeds.items():
            if name in found:
                first = found[name][1]
                raise ConfigError(
                    f"{file}: feeds.{name}: feed {name!r} is defined twice, in {first} and in "
                    f"{file}; one feed, one table"
                )
            found[name] = (table, file)
    sources = []
    for name, (table, file) in found.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: feeds.{name}: must be a table")
        own_defaults = _for_feed(defaults, name)
        merged, inherited = _merge(own_defaults, table)
        if merged.get("transport") != "sftp" and "sftp" not in table:
            # A member that delivers into a folder does not inherit the shared SFTP server.
            merged.pop("sftp", None)
            inherited = [k for k in inherited if k != "sftp" and not k.startswith("sftp.")]
        sources.append(FeedSource(name, merged, file, frozenset(inherited)))
    return sources


def _feeds_table(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    feeds = data.get("feeds", {})
    if not isinstance(feeds, dict):
        raise ConfigError(f"{path}: feeds: must be a table")
    return feeds


def _defaults(data: Mapping[str, Any], path: Path, allowed: set[str]) -> dict[str, Any]:
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: defaults: must be a table of feed keys")
    for key, value in defaults.items():
        if key not in allowed:
            raise ConfigError(
                f"{path}: defaults.{key}: unknown key (feed keys go here: "
                f"{', '.join(sorted(allowed))})"
            )
        if key in MUST_DIFFER and (not isinstance(value, str) or FEED_PLACEHOLDER not in value):
            raise ConfigError(
                f"{path}: defaults.{key}: every feed needs its own {key}; write "
                f"{FEED_PLACEHOLDER} where the feed's name goes, e.g. 'var/outbox/{{feed}}'"
            )
    return defaults


def _for_feed(defaults: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        key: value.replace(FEED_PLACEHOLDER, name)
        if key in PER_FEED_PATHS and isinstance(value, str)
        else value
        for key, value in defaults.items()
    }


def _included(data: Mapping[str, Any], path: Path) -> list[tuple[Path, dict[str, Any]]]:
    patterns = data.get("include", [])
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
        raise ConfigError(
            f"{path}: include: must be a list of paths or globs, such as ['feeds.d/*.toml']"
        )
    files: list[Path] = []
    for pattern in patterns:
        full = Path(pattern).expanduser()
        if not full.is_absolute():
            full = path.parent / full
        matches = sorted(Path(p).resolve() for p in glob.glob(str(full)))
        if not matches:
            # A glob that finds nothing is almost always a wrong folder: every member it should
            # have found would silently stop running.
            raise ConfigError(f"{path}: include: {pattern!r} matches no file ({full})")
        files += [m for m in matches if m not in files and m != path]
    result = []
    for file in files:
        included = read_toml(file, "included configuration")
        for key in included:
            if key != "feeds":
                raise ConfigError(
                    f"{file}: {key}: an included file holds only [feeds.NAME] tables "
                    f"({key} belongs in the main file, {path})"
                )
        result.append((file, _feeds_table(included, file)))
    return result


def _merge(
    base: Mapping[str, Any], own: Mapping[str, Any], prefix: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """``own`` laid over ``base``, tables key by key; the dotted keys taken from ``base``."""
    merged: dict[str, Any] = dict(own)
    inherited: list[str] = []
    for key, value in base.items():
        dotted = f"{prefix}{key}"
        if key not in own:
            merged[key] = value
            inherited.append(dotted)
            if isinstance(value, dict):
                inherited += _all_keys(value, f"{dotted}.")
        elif isinstance(value, dict) and isinstance(own[key], dict):
            merged[key], below = _merge(value, own[key], f"{dotted}.")
            inherited += below
    return merged, inherited


def _all_keys(table: Mapping[str, Any], prefix: str) -> list[str]:
    keys = []
    for key, value in table.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys += _all_keys(value, f"{prefix}{key}.")
    return keys
