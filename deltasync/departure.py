"""Expiration records for departed patrons.

Alma never expires a user who is simply missing from a file, and it replaces the whole external
record with what a file carries (swap-all). So a departure is sent as the last complete record
sent for the patron, with a new expiry and purge date and optionally a status and user group.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

from lxml import etree

from .canonical import parse_payload
from .matchid import MatchIdRule

if TYPE_CHECKING:  # config imports the checks, which parse dates with this module
    from .config import DepartureConfig

_XS_DATE = re.compile(r"\s*(-?\d{4,})-(\d{2})-(\d{2})(Z|[+-](?:0\d|1[0-3]):[0-5]\d|[+-]14:00)?\s*")


def parse_alma_date(text: str | None) -> dt.date | None:
    """The calendar date of an ``xs:date`` value (``2027-06-30Z``, ``2027-06-30``), or None."""
    if not text:
        return None
    match = _XS_DATE.fullmatch(text)
    if match is None:
        return None
    try:
        return dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return None


def format_alma_date(day: dt.date) -> str:
    """A date the way Ex Libris recommends: UTC form, ``YYYY-MM-DDZ``."""
    return f"{day.isoformat()}Z"


def record_expiry(user: etree._Element) -> dt.date | None:
    """The expiry date a ``<user>`` record carries, if it has a readable one."""
    return parse_alma_date(user.findtext("expiry_date"))


def needs_expiration(last_sent_expiry: dt.date | None, policy_date: dt.date) -> bool:
    """False when Alma already holds an expiry on or before the policy date."""
    return last_sent_expiry is None or last_sent_expiry > policy_date


def is_record_of(payload: bytes, rule: MatchIdRule, match_key: str) -> bool:
    """Whether a stored payload reads as a ``<user>`` record of the patron ``match_key``
    (a damaged one does not, and an expiration record built from it would wipe fields)."""
    try:
        user = parse_payload(payload)
    except etree.XMLSyntaxError:
        return False
    value = rule.value(user) if user.tag == "user" else None
    return value is not None and rule.key(value) == match_key


def expiration_record(
    last_sent_payload: bytes, policy: DepartureConfig, expiry: dt.date
) -> etree._Element:
    """The last-sent record turned into the expiration record for a departure on ``expiry``."""
    user = parse_payload(last_sent_payload)
    purge = expiry + dt.timedelta(days=policy.purge_after_days)
    _set_field(user, "expiry_date", format_alma_date(expiry))
    _set_field(user, "purge_date", format_alma_date(purge))
    if policy.status is not None:
        _set_field(user, "status", policy.status)
    if policy.user_group is not None:
        _set_field(user, "user_group", policy.user_group)
    return user


def _set_field(user: etree._Element, name: str, value: str) -> None:
    element = user.find(name)
    if element is None:
        element = etree.SubElement(user, name)
    elif "desc" in element.attrib:
        # A description of the old code would now be wrong; Alma fills it from the code table.
        del element.attrib["desc"]
    element.text = value
