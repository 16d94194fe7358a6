"""A patron record as fields: what changed between two versions, and the record as JSON.

Single fields of ``<user>`` compare by value (``user_group: UGRD → GRAD``). Lists (addresses,
emails, phones, identifiers, statistics, notes, blocks) compare as sets of entries: entries in
both are unchanged; a removed and an added entry of the same kind pair up and show the fields
that differ (``email_address: a@x → b@x``); what is left is an entry added or removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lxml import etree

from ..userxml import parse_payload

LISTS: dict[str, str] = {
    # path of the entries in <user> → the name a change is reported under
    "contact_info/addresses/address": "address",
    "contact_info/emails/email": "email",
    "contact_info/phones/phone": "phone",
    "user_identifiers/user_identifier": "identifier",
    "user_statistics/user_statistic": "statistic",
    "user_notes/user_note": "note",
    "user_blocks/user_block": "block",
    "user_roles/user_role": "role",
}
_LIST_PARENTS = {path.split("/")[0] for path in LISTS}
ALWAYS_LISTS = {
    # Containers whose children are a list in JSON, even when there is one.
    "addresses",
    "emails",
    "phones",
    "user_identifiers",
    "user_statistics",
    "user_notes",
    "user_blocks",
    "user_roles",
    "address_types",
    "email_types",
    "phone_types",
    "proxy_for_users",
    "rs_libraries",
    "scope",
}

Entry = tuple[tuple[str, str], ...]
"""A list entry as ``(field, value)`` pairs in document order (compared sorted)."""


@dataclass(frozen=True)
class FieldChange:
    """One difference between two versions of a record."""

    field: str
    old: str | None
    """None when the field or entry was added."""
    new: str | None
    """None when the field or entry was removed."""

    def __str__(self) -> str:
        if self.old is None:
            return f"{self.field} added: {self.new}"
        if self.new is None:
            return f"{self.field} removed: {self.old}"
        return f"{self.field}: {self.old} → {self.new}"


def flatten(user: etree._Element) -> tuple[dict[str, str], dict[str, list[Entry]]]:
    """The single fields of a record (name → value) and its list entries by kind."""
    single: dict[str, str] = {}
    for child in user:
        tag = str(child.tag)
        if tag in _LIST_PARENTS:
            continue
        pairs = _leaves(child, tag) if len(child) else [(tag, (child.text or "").strip())]
        for leaf, value in pairs:
            # A repeated child (two rs_library, two proxy_for_user) keeps every value.
            single[leaf] = f"{single[leaf]}; {value}" if leaf in single else value
    lists: dict[str, list[Entry]] = {}
    for path, kind in LISTS.items():
        entries = [tuple(_leaves(item, "")) for item in user.iterfind(path)]
        if entries:
            lists[kind] = entries
    return single, lists


def changes(old: etree._Element | None, new: etree._Element) -> list[FieldChange]:
    """What differs from ``old`` to ``new`` (everything is added when ``old`` is None)."""
    old_single, old_lists = flatten(old) if old is not None else ({}, {})
    new_single, new_lists = flatten(new)
    found: list[FieldChange] = []
    for name in sorted(old_single.keys() | new_single.keys()):
        before, after = old_single.get(name), new_single.get(name)
        if before != after:
            found.append(FieldChange(name, before, after))
    for kind in LISTS.values():
        found.extend(_list_changes(kind, old_lists.get(kind, []), new_lists.get(kind, [])))
    return found


def payload_changes(old: bytes, new: bytes | None) -> list[FieldChange] | None:
    """:func:`changes` between two stored payloads; None when the newer was pruned."""
    if new is None:
        return None
    return changes(parse_payload(old), parse_payload(new))


def as_dict(element: etree._Element) -> Any:
    """A record as JSON-ready data: elements → objects, repeated elements → lists,
    attributes as ``@name``, the text of an element with attributes as ``#text``."""
    children = list(element)
    attributes = {f"@{key!s}": str(value) for key, value in element.attrib.items()}
    text = (element.text or "").strip()
    if not children:
        if not attributes:
            return text
        return {**attributes, "#text": text} if text else attributes
    data: dict[str, Any] = dict(attributes)
    as_list = str(element.tag) in ALWAYS_LISTS
    for child in children:
        tag = str(child.tag)
        value = as_dict(child)
        if as_list:
            data.setdefault(tag, []).append(value)
        elif tag in data:
            existing = data[tag]
            data[tag] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            data[tag] = value
    return data


def _leaves(element: etree._Element, prefix: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for key, value in element.attrib.items():
        if key in ("desc", "segment_type"):
            continue  # labels, not data
        found.append((f"{prefix}@{key!s}" if prefix else f"@{key!s}", str(value)))
    for child in element:
        name = f"{prefix}/{child.tag}" if prefix else str(child.tag)
        if len(child):
            found.extend(_leaves(child, name))
        else:
            found.append((name, (child.text or "").strip()))
    return found


def _list_changes(kind: str, old: list[Entry], new: list[Entry]) -> list[FieldChange]:
    old_keys = [tuple(sorted(entry)) for entry in old]
    new_keys = [tuple(sorted(entry)) for entry in new]
    removed = [entry for entry in old if tuple(sorted(entry)) not in new_keys]
    added = [entry for entry in new if tuple(sorted(entry)) not in old_keys]
    found: list[FieldChange] = []
    for before, after in zip(removed, added, strict=False):
        # A changed entry: name the fields that differ within it (a part may repeat, as
        # two address types do, so parts compare as lists of values).
        a, b = _parts(before), _parts(after)
        for name in sorted(a.keys() | b.keys()):
            if sorted(a.get(name, [])) != sorted(b.get(name, [])):
                was = "; ".join(a[name]) if name in a else None
                now = "; ".join(b[name]) if name in b else None
                found.append(FieldChange(_entry_field(kind, name), was, now))
    paired = min(len(removed), len(added))
    found += [FieldChange(kind, _describe(entry), None) for entry in removed[paired:]]
    found += [FieldChange(kind, None, _describe(entry)) for entry in added[paired:]]
    return found


def _parts(entry: Entry) -> dict[str, list[str]]:
    parts: dict[str, list[str]] = {}
    for name, value in entry:
        parts.setdefault(name, []).append(value)
    return parts


def matches(change_field: str, wanted: str) -> bool:
    """Whether a change's field answers ``--field wanted``: the whole name
    (``email.email_address``), the part (``email_address``, ``preferred``) or the list
    (``email``, ``address``)."""
    kind, _, part = change_field.replace("@", ".").partition(".")
    return wanted in (change_field, kind, part, part.rsplit(".", 1)[-1])


def _entry_field(kind: str, name: str) -> str:
    # email_address, line1, value … read well alone; flags and types need their kind.
    leaf = name.rsplit("/", 1)[-1]
    return f"{kind}{leaf}" if leaf.startswith("@") else f"{kind}.{leaf}"


def _describe(entry: Entry) -> str:
    values = [value for name, value in entry if value and not name.startswith("@")]
    flags = [name[1:] for name, value in entry if name.startswith("@") and value == "true"]
    text = ", ".join(values)
    return f"{text} ({', '.join(flags)})" if flags else text
