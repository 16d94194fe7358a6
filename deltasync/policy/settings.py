"""``[feeds.NAME.expiry]``: renewal window, rolling refresh and computed-date rules."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

EXPIRY_KEYS = {"renew_within_days", "refresh_days", "rules"}
RULE_KEYS = {"name", "match", "expiry", "terms", "grace_days", "purge_after_days"}
FROM_EXTRACT = "from-extract"
TERM = "term"
EXPIRY_FORMS = "must be 'today+N', a date such as '2099-12-31', 'from-extract' or 'term'"
HEARTBEAT_DAYS = 2
"""A rolling date closer than this is gone before the next nightly run can renew it."""

ErrorAt = Callable[[str, str], ConfigError]


@dataclass(frozen=True)
class ExpiryRule:
    """Dates for the patrons whose fields match: ``expiry`` is ``today+N``, a fixed date,
    ``from-extract`` or ``term``; ``purge_after_days`` sets the purge date from it."""

    name: str
    match: tuple[tuple[str, tuple[str, ...]], ...] = ()
    kind: str = FROM_EXTRACT
    """``today``, ``date``, ``from-extract`` or ``term``."""
    offset_days: int = 0
    fixed: dt.date | None = None
    terms: tuple[tuple[int, int], ...] = ()
    """Term end dates as (month, day)."""
    grace_days: int = 0
    purge_after_days: int | None = None

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Whether a record with these field values falls under the rule."""
        return all(fields.get(name) in values for name, values in self.match)

    def expiry_on(self, today: dt.date) -> dt.date | None:
        """The expiry this rule gives on ``today`` (None: the extract's own)."""
        if self.kind == "today":
            return today + dt.timedelta(days=self.offset_days)
        if self.kind == "date":
            return self.fixed
        if self.kind == TERM:
            return next_term_end(self.terms, today) + dt.timedelta(days=self.grace_days)
        return None

    @property
    def described(self) -> str:
        """The rule as ``show`` names it."""
        if self.kind == "today":
            what = f"today+{self.offset_days}"
        elif self.kind == "date":
            what = str(self.fixed)
        elif self.kind == TERM:
            ends = ", ".join(f"{m:02d}-{d:02d}" for m, d in self.terms)
            what = f"term ({ends}) + {self.grace_days} days"
        else:
            what = FROM_EXTRACT
        purge = "" if self.purge_after_days is None else f", purge +{self.purge_after_days} days"
        return f"{self.name}: expiry {what}{purge}"


@dataclass(frozen=True)
class ExpiryConfig:
    """How a feed treats expiry dates (every part off by default)."""

    renew_within_days: int = 0
    """0: off. Else a later date is not a change; the patron is sent again when Alma's
    confirmed expiry comes within this many days."""
    refresh_days: int = 0
    """0: off. Else each present patron is sent again once every this many days."""
    rules: tuple[ExpiryRule, ...] = field(default_factory=tuple)

    @property
    def fingerprint(self) -> str:
        """What the rules make of records today is part of the raw digests' seed."""
        return ";".join(r.described for r in self.rules)

    def reads(self, name: str) -> bool:
        """Whether a rule picks its patrons by the field ``name``: a record's computed dates
        then depend on that field, whatever the digest leaves out."""
        return any(field == name for rule in self.rules for field, _values in rule.match)

    def rule_for(self, fields: Mapping[str, str]) -> ExpiryRule | None:
        """The first rule whose match the record's fields satisfy."""
        return next((r for r in self.rules if r.matches(fields)), None)

    def warnings(self) -> list[str]:
        """Dates that look like a heartbeat: renewed every run, or gone before the next."""
        found: list[str] = []
        for rule in self.rules:
            if rule.kind != "today":
                continue
            if rule.offset_days < HEARTBEAT_DAYS:
                found.append(
                    f"rule {rule.name!r} sets expiry today+{rule.offset_days}: patrons expire "
                    "before the next nightly run can renew them"
                )
            elif self.renew_within_days and rule.offset_days <= self.renew_within_days:
                found.append(
                    f"rule {rule.name!r} sets expiry today+{rule.offset_days}, within "
                    f"renew_within_days = {self.renew_within_days}: every patron is renewed "
                    "every run"
                )
        return found


def heartbeat(expiry_days: dict[int, int], renew_within_days: int) -> str | None:
    """A warning when most of an extract's expiry dates are a heartbeat: so close that they
    are renewed every run (within ``renew_within_days``) or gone before the next nightly run."""
    total = sum(expiry_days.values())
    if not total:
        return None
    limit = max(renew_within_days, HEARTBEAT_DAYS - 1)
    close = sum(n for days, n in expiry_days.items() if 0 <= days <= limit)
    if close * 2 <= total:
        return None
    if renew_within_days >= HEARTBEAT_DAYS:
        why = f"within renew_within_days = {renew_within_days}: they would be renewed every run"
    else:
        why = "they lapse before the next nightly run can send them again"
    return (
        f"{close} of {total} records expire within {limit} day(s) of today; the dates look "
        f"like a heartbeat ({why})"
    )


def next_term_end(terms: tuple[tuple[int, int], ...], today: dt.date) -> dt.date:
    """The first term end on or after ``today`` (29 February falls back to the 28th)."""
    candidates = []
    for year in (today.year, today.year + 1):
        for month, day in terms:
            try:
                candidates.append(dt.date(year, month, day))
            except ValueError:
                candidates.append(dt.date(year, month, 28))
    return min(d for d in candidates if d >= today)


def parse(table: Mapping[str, Any], where: str, error: ErrorAt) -> ExpiryConfig:
    """Read a feed's ``expiry`` table; errors name ``where`` and the key."""
    for key in table:
        if key not in EXPIRY_KEYS:
            raise error(f"{where}.{key}", f"unknown key (allowed here: {_listed(EXPIRY_KEYS)})")
    renew = _days(table, "renew_within_days", where, error)
    refresh = _days(table, "refresh_days", where, error)
    raw_rules = table.get("rules", [])
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        raise error(f"{where}.rules", "must be an array of tables ([[...expiry.rules]])")
    rules = tuple(_rule(r, f"{where}.rules[{i}]", i, error) for i, r in enumerate(raw_rules))
    return ExpiryConfig(renew_within_days=renew, refresh_days=refresh, rules=rules)


def _days(table: Mapping[str, Any], key: str, where: str, error: ErrorAt) -> int:
    value = table.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise error(f"{where}.{key}", "must be a whole number of days (0: off)")
    return value


def _rule(table: dict[str, Any], where: str, index: int, error: ErrorAt) -> ExpiryRule:
    for key in table:
        if key not in RULE_KEYS:
            raise error(f"{where}.{key}", f"unknown key (allowed here: {_listed(RULE_KEYS)})")
    name = table.get("name", f"rules[{index}]")
    if not isinstance(name, str) or not name.strip():
        raise error(f"{where}.name", "must be a non-empty string")
    match = table.get("match", {})
    if not isinstance(match, dict):
        raise error(f"{where}.match", "must be a table of field = value or [values]")
    pairs: list[tuple[str, tuple[str, ...]]] = []
    for field_name, wanted in match.items():
        values = [wanted] if isinstance(wanted, str) else wanted
        if not (isinstance(values, list) and values and all(isinstance(v, str) for v in values)):
            raise error(f"{where}.match.{field_name}", "must be a string or a list of strings")
        pairs.append((field_name, tuple(values)))
    raw = table.get("expiry")
    if not isinstance(raw, str):
        raise error(f"{where}.expiry", EXPIRY_FORMS)
    text = raw.replace(" ", "")
    kind, offset, fixed = FROM_EXTRACT, 0, None
    terms: tuple[tuple[int, int], ...] = ()
    today = re.fullmatch(r"today(?:\+(\d+))?", text)
    if today is not None:
        kind, offset = "today", int(today.group(1) or 0)
    elif text == TERM:
        kind, terms = TERM, _terms(table.get("terms"), f"{where}.terms", error)
    elif text != FROM_EXTRACT:
        try:
            kind, fixed = "date", dt.date.fromisoformat(text.removesuffix("Z"))
        except ValueError:
            raise error(f"{where}.expiry", EXPIRY_FORMS) from None
    if "terms" in table and kind != TERM:
        raise error(f"{where}.terms", "only for expiry = 'term'")
    grace = _days(table, "grace_days", where, error)
    purge = table.get("purge_after_days")
    if purge is not None and (isinstance(purge, bool) or not isinstance(purge, int) or purge < 0):
        raise error(f"{where}.purge_after_days", "must be a whole number of days")
    return ExpiryRule(
        name=name.strip(),
        match=tuple(pairs),
        kind=kind,
        offset_days=offset,
        fixed=fixed,
        terms=terms,
        grace_days=grace,
        purge_after_days=purge,
    )


def _terms(raw: object, where: str, error: ErrorAt) -> tuple[tuple[int, int], ...]:
    if not isinstance(raw, list) or not raw:
        raise error(where, "expiry = 'term' needs terms = ['MM-DD', ...], the term end dates")
    found: list[tuple[int, int]] = []
    for item in raw:
        match = re.fullmatch(r"(\d{2})-(\d{2})", str(item).strip())
        try:
            if match is None:
                raise ValueError
            month, day = int(match.group(1)), int(match.group(2))
            dt.date(2024, month, day)  # a leap year: 02-29 is a date
        except ValueError:
            raise error(where, f"{item!r} is not a month and day such as '08-31'") from None
        found.append((month, day))
    return tuple(sorted(set(found)))


def _listed(keys: set[str]) -> str:
    return ", ".join(sorted(keys))
