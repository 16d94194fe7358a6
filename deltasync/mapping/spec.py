"""A mapping file (TOML): which Alma field takes which Jinja2 expression over a row's columns.

The file is read and every expression compiled once, when the feed's source is opened; an
error names the file and the key. The mapping's fingerprint (its bytes, and the version of
the rules that render it) is part of the feed's raw seed: editing the mapping makes every row
unread, and a row whose output changed is then a change, sent once.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping as MappingType
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash
from jinja2 import Template, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from ..errors import ConfigError
from .jinja import environment

RULES_VERSION = "1"
"""The version of the rendering rules below (what an empty value means, preferred, ...):
part of the fingerprint, so a change of the rules re-reads every row."""

USER_FIELDS = (
    "record_type",
    "primary_id",
    "first_name",
    "middle_name",
    "last_name",
    "pin_number",
    "user_title",
    "job_category",
    "job_description",
    "gender",
    "user_group",
    "campus_code",
    "web_site_url",
    "cataloger_level",
    "preferred_language",
    "birth_date",
    "expiry_date",
    "purge_date",
    "account_type",
    "external_id",
    "status",
    "pref_first_name",
    "pref_middle_name",
    "pref_last_name",
    "pref_name_suffix",
)
"""Simple fields of ``<user>`` a mapping may fill, in the order they are written."""


@dataclass(frozen=True)
class SegmentKind:
    """A repeated segment (``[[email]]`` ...): its fields, its main field and where it goes."""

    name: str
    main: str
    fields: tuple[str, ...]
    """Fields written as child elements, in this order."""
    typed: str | None = None
    """The field written inside its ``<X_types>`` wrapper (``email_type``), if any."""
    attributes: tuple[str, ...] = ()
    """Fields written as attributes (``preferred``)."""
    preferred: bool = False
    """Whether the first kept one is preferred unless the mapping says otherwise."""


SEGMENTS: dict[str, SegmentKind] = {
    kind.name: kind
    for kind in (
        SegmentKind(
            "address",
            "line1",
            (
                "line1",
                "line2",
                "line3",
                "line4",
                "line5",
                "city",
                "state_province",
                "postal_code",
                "country",
                "address_note",
                "start_date",
                "end_date",
            ),
            "address_type",
            ("preferred",),
            preferred=True,
        ),
        SegmentKind(
            "email",
            "email_address",
            ("email_address", "description"),
            "email_type",
            ("preferred",),
            preferred=True,
        ),
        SegmentKind(
            "phone",
            "phone_number",
            ("phone_number",),
            "phone_type",
            ("preferred", "preferred_sms"),
            preferred=True,
        ),
        SegmentKind("identifier", "value", ("id_type", "value", "note", "status")),
        SegmentKind(
            "statistic",
            "statistic_category",
            ("statistic_category", "category_type", "statistic_note"),
        ),
        SegmentKind("note", "note_text", ("note_type", "note_text", "user_viewable", "popup_note")),
    )
}


@dataclass(frozen=True)
class Expression:
    """One field's value: a compiled Jinja2 expression, or a constant."""

    name: str
    """Where it stands, for messages: ``user.first_name``, ``email[2].email_address``."""
    constant: str | None
    template: Template | None
    columns: tuple[str, ...]
    """The columns it reads (for messages and for checking them against the header)."""


@dataclass(frozen=True)
class Segment:
    """One ``[[email]]`` (etc.) table of the mapping."""

    kind: SegmentKind
    number: int
    fields: dict[str, Expression]


@dataclass(frozen=True)
class CsvOptions:
    """The mapping's ``[csv]`` table."""

    delimiter: str = ","
    encoding: str = "utf-8"


@dataclass(frozen=True)
class SqlOptions:
    """The mapping's ``[sql]`` table; the password only ever comes from ``password_env``."""

    url: str
    query: str
    password_env: str | None = None


@dataclass(frozen=True)
class Mapping:
    """A whole mapping file, compiled."""

    path: Path
    fingerprint: str
    user: list[Expression]
    segments: list[Segment]
    tables: dict[str, dict[str, str]]
    csv: CsvOptions = field(default_factory=CsvOptions)
    sql: SqlOptions | None = None
    globals: dict[str, Any] = field(default_factory=dict)
    """What every expression sees besides the row's columns: its environment's globals."""

    @property
    def columns(self) -> set[str]:
        """Every column some expression reads."""
        found = {c for e in self.user for c in e.columns}
        for segment in self.segments:
            found.update(c for e in segment.fields.values() for c in e.columns)
        return found


ENCODINGS = ("utf-8", "cp1252", "latin-1")


def fingerprint_of(path: Path) -> str:
    """The fingerprint of the mapping file at ``path`` (as :func:`load` gives it), without
    compiling it; ConfigError when it cannot be read."""
    try:
        return fingerprint(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the mapping file: {exc.strerror}") from exc


def fingerprint(raw: bytes) -> str:
    """A mapping's fingerprint: its bytes and the version of the rules that render it."""
    return xxhash.xxh3_128_hexdigest(RULES_VERSION.encode() + b"\x00" + raw)


def load(path: Path) -> Mapping:
    """Read and compile the mapping file at ``path``; ConfigError names the file and key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the mapping file: {exc.strerror}") from exc
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid TOML mapping file: {exc}") from exc
    return _Compiler(path).compile(table, data)


class _Compiler:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.env: SandboxedEnvironment = environment({})

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {message}")

    def compile(self, data: MappingType[str, Any], raw: bytes) -> Mapping:
        allowed = {"user", "tables", "csv", "sql", *SEGMENTS}
        for key in data:
            if key not in allowed:
                raise self.error(key, f"unknown key (allowed here: {', '.join(sorted(allowed))})")
        tables = self.tables(data.get("tables", {}))
        self.env = environment(tables)
        user_table = data.get("user")
        if not isinstance(user_table, dict) or "primary_id" not in user_table:
            raise self.error("user", "a [user] table with at least primary_id is required")
        user = []
        for name, value in user_table.items():
            if name not in USER_FIELDS:
                raise self.error(
                    f"user.{name}",
                    f"not a field of Alma's <user> that a mapping fills "
                    f"(allowed: {', '.join(USER_FIELDS)})",
                )
            user.append(self.expression(f"user.{name}", value))
        user.sort(key=lambda e: USER_FIELDS.index(e.name.removeprefix("user.")))
        segments = []
        for kind in SEGMENTS.values():
            entries = data.get(kind.name, [])
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise self.error(kind.name, f"write each one as a [[{kind.name}]] table")
            for number, entry in enumerate(entries, 1):
                segments.append(self.segment(kind, number, entry))
        return Mapping(
            path=self.path,
            fingerprint=fingerprint(raw),
            user=user,
            segments=segments,
            tables=tables,
            csv=self.csv(data.get("csv", {})),
            sql=self.sql(data.get("sql")),
            globals=dict(self.env.globals),
        )

    def segment(self, kind: SegmentKind, number: int, entry: dict[str, Any]) -> Segment:
        where = f"{kind.name}[{number}]"
        allowed = {*kind.fields, *kind.attributes, *((kind.typed,) if kind.typed else ())}
        for key in entry:
            if key not in allowed:
                raise self.error(
                    f"{where}.{key}", f"unknown key (allowed here: {', '.join(sorted(allowed))})"
                )
        if kind.main not in entry:
            raise self.error(where, f"{kind.main} is required")
        fields = {key: self.expression(f"{where}.{key}", value) for key, value in entry.items()}
        return Segment(kind, number, fields)

    def expression(self, where: str, value: object) -> Expression:
        if isinstance(value, bool):
            value = "true" if value else "false"
        if isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str):
            raise self.error(where, "must be a string: a value or a Jinja2 expression")
        if "{{" not in value and "{%" not in value:
            return Expression(where, value.strip(), None, ())
        try:
            parsed = self.env.parse(value)
            template = self.env.from_string(value)
        except TemplateSyntaxError as exc:
            raise self.error(where, f"not a valid Jinja2 expression: {exc.message}") from None
        columns = tuple(sorted(meta.find_undeclared_variables(parsed) - {"row"}))
        return Expression(where, None, template, columns)

    def tables(self, raw: object) -> dict[str, dict[str, str]]:
        if not isinstance(raw, dict):
            raise self.error("tables", "must be a table of code tables")
        tables: dict[str, dict[str, str]] = {}
        for name, entries in raw.items():
            if not isinstance(entries, dict) or not all(
                isinstance(v, str) for v in entries.values()
            ):
                raise self.error(f"tables.{name}", 'must map codes to strings: FR = "UGRD"')
            tables[name] = dict(entries)
        return tables

    def csv(self, raw: object) -> CsvOptions:
        if not isinstance(raw, dict):
            raise self.error("csv", "must be a table")
        for key in raw:
            if key not in ("delimiter", "encoding"):
                raise self.error(f"csv.{key}", "unknown key (allowed here: delimiter, encoding)")
        delimiter = raw.get("delimiter", ",")
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
            raise self.error("csv.delimiter", "one character such as ',', '\\t' or '|'")
        encoding = raw.get("encoding", "utf-8")
        if not isinstance(encoding, str) or encoding.lower() not in ENCODINGS:
            raise self.error("csv.encoding", f"one of {', '.join(ENCODINGS)}")
        return CsvOptions(delimiter, encoding.lower())

    def sql(self, raw: object) -> SqlOptions | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise self.error("sql", "must be a table")
        allowed = {"url", "query", "query_file", "password_env"}
        for key in raw:
            if key not in allowed:
                raise self.error(
                    f"sql.{key}", f"unknown key (allowed here: {', '.join(sorted(allowed))})"
                )
        url = raw.get("url")
        if not isinstance(url, str) or not url.strip():
            raise self.error(
                "sql.url", "a SQLAlchemy URL such as 'oracle+oracledb://loader@dwh/sis'"
            )
        if ("query" in raw) == ("query_file" in raw):
            raise self.error("sql", "set one of query and query_file")
        if "query" in raw:
            query = raw["query"]
            if not isinstance(query, str) or not query.strip():
                raise self.error("sql.query", "a SELECT statement")
        else:
            name = raw["query_file"]
            if not isinstance(name, str):
                raise self.error("sql.query_file", "a file name, relative to the mapping file")
            file = (self.path.parent / name).resolve()
            try:
                query = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise self.error("sql.query_file", f"cannot read {file}: {exc}") from None
        password_env = raw.get("password_env")
        if password_env is not None and (
            not isinstance(password_env, str) or not password_env.isidentifier()
        ):
            raise self.error("sql.password_env", "the name of an environment variable")
        return SqlOptions(url, query, password_env)
