"""The sandboxed Jinja2 environment a mapping's expressions run in, with its filters.

A mapping file comes from the campus, but the rows come from the SIS: the sandbox keeps an
expression from reaching anything but the row's values. Besides Jinja's own filters (``lower``,
``upper``, ``trim``, ``replace``, ``default`` ...) there are three:

- ``code('table')``: the value looked up in the mapping's code table (``"*"`` is the default);
- ``date('%m/%d/%Y')``: the value read with that format, written as Alma's ``2027-06-30Z``;
- ``add_days(n)``: a date ``n`` days later (or earlier, for a negative ``n``).

A value these cannot handle raises :class:`Problem`, which the renderer turns into a record
finding (row and column named) under the feed's policy for its code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

DEFAULT_CODE = "*"


class Problem(Exception):
    """A value an expression cannot map: ``code`` is the finding's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AlmaDate(dt.date):
    """A date that renders as Alma writes dates: ``2027-06-30Z``."""

    def __str__(self) -> str:
        return self.isoformat() + "Z"

    @classmethod
    def of(cls, value: dt.date) -> AlmaDate:
        return cls(value.year, value.month, value.day)


def environment(tables: Mapping[str, Mapping[str, str]]) -> SandboxedEnvironment:
    """A sandboxed environment whose ``code`` filter reads these code tables."""
    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )

    def code(value: object, table: str) -> str:
        text = "" if value is None else str(value).strip()
        if not text:
            return ""
        try:
            entries = tables[table]
        except KeyError:
            raise Problem(
                "map-render-error", f"code table {table!r} is not in the mapping"
            ) from None
        found = entries.get(text)
        if found is None:
            found = entries.get(DEFAULT_CODE)
        if found is None:
            raise Problem("map-code-unknown", f"code {text!r} is not in table {table!r}")
        return found

    env.filters["code"] = code
    env.filters["date"] = parse_date
    env.filters["add_days"] = add_days
    return env


def parse_date(value: object, fmt: str = "%Y-%m-%d") -> AlmaDate | str:
    """``value`` read with the ``strptime`` format ``fmt``; an empty value stays empty."""
    if isinstance(value, dt.datetime):
        return AlmaDate.of(value.date())
    if isinstance(value, dt.date):
        return AlmaDate.of(value)
    text = "" if value is None else str(value).strip()
    if not text:
        return ""
    try:
        return AlmaDate.of(dt.datetime.strptime(text, fmt).date())
    except ValueError:
        # The value itself is not named: a birth date is personal data.
        raise Problem("map-date-invalid", f"not a date of the form {fmt!r}") from None


def add_days(value: object, days: int) -> AlmaDate | str:
    """The date ``days`` later; an empty value stays empty."""
    if isinstance(value, str):
        text = value.strip().removesuffix("Z")
        if not text:
            return ""
        try:
            value = dt.date.fromisoformat(text)
        except ValueError:
            raise Problem("map-date-invalid", "add_days: not a date (use date() first)") from None
    if not isinstance(value, dt.date):
        raise Problem("map-date-invalid", "add_days: the value is not a date (use date() first)")
    if isinstance(value, dt.datetime):
        value = value.date()
    try:
        return AlmaDate.of(value + dt.timedelta(days=int(days)))
    except OverflowError:
        raise Problem("map-date-invalid", "add_days: the date is out of range") from None
