"""Computed dates: the first ``[[expiry.rules]]`` entry a record matches sets its dates."""

from __future__ import annotations

import datetime as dt

from lxml import etree

from ..userxml import format_alma_date, record_expiry, set_field
from .settings import ExpiryConfig, ExpiryRule


def fields_of(user: etree._Element) -> dict[str, str]:
    """The record's plain fields (``user_group``, ``campus_code``, …) that rules match on."""
    return {str(child.tag): (child.text or "").strip() for child in user if len(child) == 0}


def apply_rules(user: etree._Element, policy: ExpiryConfig, today: dt.date) -> ExpiryRule | None:
    """Set the record's expiry and purge dates by the first matching rule; the rule, if any."""
    if not policy.rules:
        return None
    rule = policy.rule_for(fields_of(user))
    if rule is None:
        return None
    expiry = rule.expiry_on(today)
    if expiry is not None:
        set_field(user, "expiry_date", format_alma_date(expiry))
    if rule.purge_after_days is not None:
        base = expiry or record_expiry(user)
        if base is not None:
            purge = base + dt.timedelta(days=rule.purge_after_days)
            set_field(user, "purge_date", format_alma_date(purge))
    return rule


def seed_part(policy: ExpiryConfig, today: dt.date) -> str:
    """What the rules make of a record today, for the raw digests' seed: a record read by
    its bytes is unchanged only while the dates the rules give are unchanged too."""
    if not policy.rules:
        return ""
    dates = ",".join(str(rule.expiry_on(today)) for rule in policy.rules)
    return f"rules={policy.fingerprint};dates={dates}"
