"""Alma user XML, the format itself: safe parsing, layout, dates, identifier values, fields.

The ground floor: every layer reads records with these helpers, and this module imports
nothing of deltasync.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from lxml import etree

SAFE_PARSING: dict[str, Any] = {
    "remove_blank_text": True,
    "remove_comments": True,
    "remove_pis": True,
    "resolve_entities": False,
    "load_dtd": False,
    "no_network": True,
    "huge_tree": False,
}
"""lxml parser options for every XML deltasync reads: no DTD, no entities, no network.

Extracts and stored payloads are parsed alike, so a payload re-parses to the tree it came from.
"""

_PARSER = etree.XMLParser(**SAFE_PARSING)
BIG_LINE = 65535
"""From here on libxml2's line numbers are one too many."""
_BLANK_TEXT = etree.XPath("descendant-or-self::text()[not(normalize-space())]")
_XS_DATE = re.compile(r"\s*(-?\d{4,})-(\d{2})-(\d{2})(Z|[+-](?:0\d|1[0-3]):[0-5]\d|[+-]14:00)?\s*")


FORBIDDEN_MARK = 0x10FF00
"""A character XML 1.0 forbids (C0 control ``U+00NN``) found inside a record is read as
``U+10FFNN`` (private use, plane 16), so the record parses and the checks can name, strip
or hold it: one stray control character in a name must not stop a whole extract."""
MARKED = re.compile("[\U0010ff00-\U0010ff1f]")
_FORBIDDEN_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_FORBIDDEN_REFS = re.compile(
    rb"&#(?:x0*([0-8bcefBCEF]|1[0-9a-fA-F])|0*([0-8]|1[124-9]|2[0-9]|3[01]));"
)


def mark_forbidden(raw: bytes) -> bytes | None:
    """``raw`` (UTF-8 XML) with every C0 control XML forbids, as a byte or as a character
    reference, turned into its marked stand-in; None when it holds none."""
    if _FORBIDDEN_BYTES.search(raw) is None and _FORBIDDEN_REFS.search(raw) is None:
        return None
    marked = _FORBIDDEN_BYTES.sub(lambda m: chr(FORBIDDEN_MARK + m.group()[0]).encode(), raw)

    def reference(match: re.Match[bytes]) -> bytes:
        value = int(match.group(1), 16) if match.group(1) else int(match.group(2))
        return f"&#x{FORBIDDEN_MARK + value:X};".encode()

    return _FORBIDDEN_REFS.sub(reference, marked)


def parse_payload(payload: bytes) -> etree._Element:
    """Parse a stored canonical payload back into a ``<user>`` element."""
    return etree.fromstring(payload, _PARSER)


def strip_formatting(user: etree._Element) -> etree._Element:
    """Drop whitespace-only text (indentation, line ends, ``<phones>\\n</phones>``).

    Alma's record has no mixed content, so whitespace beside a child element is layout, and a
    value of only XML whitespace is an empty value. Text with content keeps its spaces.
    libxml2's ``remove_blank_text`` removes most of it while parsing, but by a heuristic that
    keeps some; this finishes the job.
    """
    found = _BLANK_TEXT(user)
    assert isinstance(found, list)
    for text in found:
        assert isinstance(text, etree._ElementUnicodeResult)
        parent = text.getparent()
        if parent is None:
            continue
        if text.is_tail:
            parent.tail = None
        else:
            parent.text = None
    return user


def source_line(element: etree._Element) -> int:
    """The line ``element`` starts on, 0 when unknown.

    libxml2 skips line 65535 in what it reports (65535 is said to be 65536, and every later
    line one too many); this takes that back.
    """
    line = element.sourceline
    if not isinstance(line, int):
        return 0
    return line - 1 if line > BIG_LINE else line


def c14n(element: etree._Element) -> bytes:
    """Canonical XML of ``element`` (no comments, no tail)."""
    return bytes(etree.tostring(element, method="c14n", with_comments=False, with_tail=False))


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


def set_field(user: etree._Element, name: str, value: str) -> None:
    """Set a ``<user>`` field's text, adding the field if it is missing."""
    element = user.find(name)
    if element is None:
        element = etree.SubElement(user, name)
    elif "desc" in element.attrib:
        # A description of the old code would now be wrong; Alma fills it from the code table.
        del element.attrib["desc"]
    element.text = value


def identifier_values(user: etree._Element) -> list[tuple[str, str]]:
    """``(id_type, value)`` of the primary ID and every additional identifier."""
    found: list[tuple[str, str]] = []
    for child in user:
        if child.tag == "primary_id":
            if (child.text or "").strip():
                found.append(("primary_id", (child.text or "").strip()))
        elif child.tag == "user_identifiers":
            for identifier in child:
                id_type, value = "?", ""
                for part in identifier:
                    if part.tag == "value":
                        value = (part.text or "").strip()
                    elif part.tag == "id_type":
                        id_type = (part.text or "?").strip()
                if value:
                    found.append((id_type, value))
    return found
