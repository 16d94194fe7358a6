"""What a feed checks: the policy per code, the mandatory fields and the code tables.

The defaults suit a CARLI I-Share library: CARLI's mandatory fields, safe fixes on, and
errors only for what Alma would reject or what would leave a patron unusable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from lxml import etree

from .codes import RECORD_CODES, Policy

CARLI_MANDATORY: tuple[str, ...] = (
    "primary_id",
    "last_name",
    "user_group",
    "expiry_date",
    "purge_date",
    "email",
    "address",
    "address.address_type",
    "address.line1",
    "address.city",
    "address.state_province",
    "address.postal_code",
)
"""CARLI I-Share's mandatory fields for public users (see ALMA.md)."""

PRESETS: dict[str, tuple[str, ...]] = {"carli": CARLI_MANDATORY}

CONTACT_FIELDS: dict[str, tuple[str, str]] = {
    # name: (path of the contact elements, the field inside one)
    "email": ("contact_info/emails/email", "email_address"),
    "address": ("contact_info/addresses/address", "line1"),
    "phone": ("contact_info/phones/phone", "phone_number"),
}
CONTACT_PARTS: dict[str, str] = {
    "address_type": "address_types/address_type",
    "email_type": "email_types/email_type",
    "phone_type": "phone_types/phone_type",
}

CODE_FIELDS: dict[str, str] = {
    # Fields whose value is a code from an Alma code table, and where they sit in <user>.
    "record_type": "record_type",
    "user_group": "user_group",
    "campus_code": "campus_code",
    "job_category": "job_category",
    "preferred_language": "preferred_language",
    "user_title": "user_title",
    "gender": "gender",
    "cataloger_level": "cataloger_level",
    "account_type": "account_type",
    "status": "status",
    "address_type": "contact_info/addresses/address/address_types/address_type",
    "country": "contact_info/addresses/address/country",
    "email_type": "contact_info/emails/email/email_types/email_type",
    "phone_type": "contact_info/phones/phone/phone_types/phone_type",
    "id_type": "user_identifiers/user_identifier/id_type",
    "statistic_category": "user_statistics/user_statistic/statistic_category",
    "category_type": "user_statistics/user_statistic/category_type",
    "note_type": "user_notes/user_note/note_type",
    "block_type": "user_blocks/user_block/block_type",
}

BUILT_IN_CODES: dict[str, tuple[str, ...]] = {
    # Fixed by Alma itself; a feed's [checks.codes] replaces a list, never merges into it.
    "account_type": ("EXTERNAL", "INTERNAL"),
    "status": ("ACTIVE", "INACTIVE"),
    "record_type": ("PUBLIC", "STAFF", "CONTACT"),
    "address_type": ("home", "work", "school", "alternative"),
}

_IDENTIFIER = re.compile(r"^identifier:[A-Za-z0-9_.-]+$")
_XS = "{http://www.w3.org/2001/XMLSchema}"


@cache
def schema_fields() -> dict[str, frozenset[str]]:
    """The fields of ``<user>`` and of one address, email and phone in Alma's schema."""
    path = resources.files("deltasync.schema") / "rest_user.xsd"
    with resources.as_file(path) as file:
        tree = etree.parse(str(file))
    fields: dict[str, frozenset[str]] = {}
    for name in ("user", "address", "email", "phone"):
        group = tree.find(f"{_XS}complexType[@name='{name}']/{_XS}all")
        assert group is not None, name
        fields[name] = frozenset(str(e.get("name")) for e in group if e.get("name"))
    return fields


@dataclass(frozen=True)
class CheckSettings:
    """One feed's checks."""

    policies: Mapping[str, Policy] = field(default_factory=dict)
    """Overrides of the default policy, by code."""
    mandatory: tuple[str, ...] = CARLI_MANDATORY
    codes: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(BUILT_IN_CODES))

    def policy(self, code: str) -> Policy:
        """The policy the feed applies to findings of ``code``."""
        return self.policies.get(code, RECORD_CODES[code].default)

    @property
    def fixes(self) -> str:
        """The fixes this feed applies, as a string that changes whenever a fix could give
        a record another form (the code tables count for ``code-case``)."""
        fixing = sorted(c for c in RECORD_CODES if self.policy(c) == Policy.FIX)
        tables = sorted(self.codes.items()) if "code-case" in fixing else []
        return repr((fixing, tables))


KEYS = {"mandatory", "policy", "codes"}


def parse(
    table: Mapping[str, Any], where: str, error: Callable[[str, str], Exception]
) -> CheckSettings:
    """Read a ``checks`` table; ``error(key, message)`` builds the exception to raise."""
    for key in table:
        if key not in KEYS:
            raise error(f"{where}.{key}", f"unknown key (allowed here: {', '.join(sorted(KEYS))})")
    return CheckSettings(
        policies=_policies(table.get("policy", {}), f"{where}.policy", error),
        mandatory=_mandatory(table.get("mandatory", "carli"), f"{where}.mandatory", error),
        codes=_codes(table.get("codes", {}), f"{where}.codes", error),
    )


def merged(shared: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """A feed's ``checks`` table laid over the top-level one, ``policy`` and ``codes`` by key."""
    result = {**shared, **own}
    for key in ("policy", "codes"):
        inner_shared, inner_own = shared.get(key, {}), own.get(key, {})
        if isinstance(inner_shared, dict) and isinstance(inner_own, dict):
            result[key] = {**inner_shared, **inner_own}
    return result


def _policies(raw: object, where: str, error: Callable[[str, str], Exception]) -> dict[str, Policy]:
    if not isinstance(raw, dict):
        raise error(where, "must be a table of code = policy")
    policies: dict[str, Policy] = {}
    for name, value in raw.items():
        code = RECORD_CODES.get(name)
        if code is None:
            raise error(f"{where}.{name}", "unknown check code (the README lists them all)")
        allowed = ", ".join(sorted(p.value for p in code.allowed))
        try:
            policy = Policy(value)
        except ValueError:
            raise error(f"{where}.{name}", f"must be one of {allowed}") from None
        if policy not in code.allowed:
            raise error(f"{where}.{name}", f"{policy.value!r} is not possible here; use {allowed}")
        policies[name] = policy
    return policies


def _mandatory(raw: object, where: str, error: Callable[[str, str], Exception]) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise error(where, "must be a preset name ('carli'), or a list of field names and presets")
    known = schema_fields()
    fields: list[str] = []
    for item in items:
        name = item.strip()
        kind, _, part = name.partition(".")
        if name in PRESETS:
            fields.extend(PRESETS[name])
        elif name == "none":
            continue
        elif (
            _IDENTIFIER.match(name)
            or (not part and (name in known["user"] or name in CONTACT_FIELDS))
            or (kind in CONTACT_FIELDS and (part in known[kind] or part in CONTACT_PARTS))
        ):
            fields.append(name)
        else:
            raise error(
                where,
                f"{name!r} is not a field: use a <user> field such as 'last_name', "
                "'email', 'address', 'phone', a part such as 'address.city' or "
                "'email.email_type', 'identifier:BARCODE', or the preset 'carli'",
            )
    return tuple(dict.fromkeys(fields))


def _codes(
    raw: object, where: str, error: Callable[[str, str], Exception]
) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise error(where, "must be a table of field = [codes]")
    tables = dict(BUILT_IN_CODES)
    for name, values in raw.items():
        if name not in CODE_FIELDS:
            raise error(
                f"{where}.{name}", f"not a code field (known: {', '.join(sorted(CODE_FIELDS))})"
            )
        if (
            not isinstance(values, list)
            or not values
            or not all(isinstance(v, str) and v and v == v.strip() for v in values)
        ):
            raise error(
                f"{where}.{name}",
                "must be a non-empty list of code values without surrounding spaces "
                "(leave the field out to not check it)",
            )
        tables[name] = tuple(values)
    return tables
