"""Expiration records for departed patrons.

Alma never expires a user who is simply missing from a file, and it replaces the whole external
record with what a file carries (swap-all). So a departure is sent as the last complete record
sent for the patron, with a new expiry and purge date and optionally a status and user group.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from lxml import etree

from ..matchid import MatchIdRule
from ..userxml import format_alma_date, parse_payload, set_field

if TYPE_CHECKING:  # config imports the checks, which parse dates with this module
    from ..config import DepartureConfig


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
    last_sent_payload: bytes,
    policy: DepartureConfig,
    expiry: dt.date,
    today: dt.date | None = None,
) -> etree._Element:
    """The last-sent record turned into the expiration record for a departure on ``expiry``
    (``today``: the run's date, for the departure note)."""
    user = parse_payload(last_sent_payload)
    purge = expiry + dt.timedelta(days=policy.purge_after_days)
    set_field(user, "expiry_date", format_alma_date(expiry))
    set_field(user, "purge_date", format_alma_date(purge))
    if policy.status is not None:
        set_field(user, "status", policy.status)
    if policy.user_group is not None:
        set_field(user, "user_group", policy.user_group)
    if policy.note is not None:
        add_note(user, policy.note.format(date=format_alma_date(today or expiry)), policy.note_type)
    return user


def add_note(user: etree._Element, text: str, note_type: str) -> None:
    """Add an external user note (Alma's ``user_note``: type, text, not viewable, no popup),
    unless the record holds one with this text. The record's own notes stay: swap-all would
    delete every external note the file leaves out."""
    notes = user.find("user_notes")
    if notes is None:
        notes = etree.SubElement(user, "user_notes")
    if any((n.findtext("note_text") or "") == text for n in notes.iter("user_note")):
        return
    note = etree.SubElement(notes, "user_note", segment_type="External")
    etree.SubElement(note, "note_type").text = note_type
    etree.SubElement(note, "note_text").text = text
    etree.SubElement(note, "user_viewable").text = "false"
    etree.SubElement(note, "popup_note").text = "false"
