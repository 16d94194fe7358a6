"""How the dates of a record moved against the stored one: later, earlier, or not at all."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from ..canonical import DATES, Recipe
from ..userxml import parse_alma_date, parse_payload


@dataclass(frozen=True)
class DateMove:
    """What a changed record did to its expiry and purge dates."""

    earlier: bool
    """A date both records carry moved earlier (a cut: always a change, sent at once)."""
    later_only: bool
    """Nothing but dates changed, and none of them moved earlier (a rolling date, a term
    rollover)."""


def compare(recipe: Recipe, new_record: bytes | etree._Element, old_payload: bytes) -> DateMove:
    """Compare a record (its payload, or its element: left as it is) with the stored one it
    replaces, field-wise for the dates."""
    new = parse_payload(new_record) if isinstance(new_record, bytes) else new_record
    old = parse_payload(old_payload)
    same = True
    earlier = later = False
    for name in DATES:
        a, b = parse_alma_date(new.findtext(name)), parse_alma_date(old.findtext(name))
        if a is not None and b is not None:
            earlier |= a < b
            later |= a > b
        elif (a is None) != (b is None) or new.findtext(name) != old.findtext(name):
            same = False  # a date added, removed or unreadable: a change like any other
    if earlier or not later or not same:
        return DateMove(earlier, False)
    unchanged_rest = recipe.digest(new, without_dates=True) == recipe.digest(
        old, without_dates=True
    )
    return DateMove(False, unchanged_rest)
