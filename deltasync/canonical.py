"""The canonical form of a patron record and its hash: what "changed" means.

The *payload* is the whole record in Canonical XML (attributes sorted, no comments, no
whitespace between elements): what the store keeps and what a delta file carries. The *digest*
is an xxh3-128 hash of the payload minus the feed's ignored fields, with the children of
``<user>`` in a fixed order, because Alma's schema declares them an ``xs:all`` whose order
carries no meaning. The recipe string names all of that; it is stored with the snapshot so a
changed recipe re-hashes the snapshot instead of reporting every patron as changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import xxhash
from lxml import etree

RECIPE_VERSION = 1
ALGORITHM = "xxh3_128"

# The same settings as the extract reader, so a stored payload re-parses to the same tree.
_PARSER = etree.XMLParser(
    remove_comments=True,
    remove_pis=True,
    resolve_entities=False,
    load_dtd=False,
    no_network=True,
)


@dataclass(frozen=True)
class Recipe:
    """How records of one feed are canonicalised and hashed."""

    ignore: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        """A string that changes whenever the digest of some record could change."""
        ignored = ",".join(sorted(set(self.ignore)))
        return f"v{RECIPE_VERSION};{ALGORITHM};ignore={ignored}"

    def payload(self, user: etree._Element) -> bytes:
        """The canonical serialisation of the whole record (ignored fields included)."""
        return bytes(etree.tostring(user, method="c14n", with_comments=False, with_tail=False))

    def digest(self, user: etree._Element) -> bytes:
        """The 16-byte hash of the record without its ignored fields; ``user`` is left as is."""
        top_level = {path for path in self.ignore if "/" not in path}
        nested = [path for path in self.ignore if "/" in path]
        if not nested:
            return _hash_children(user, top_level)
        # Take nested ignored elements out for the hash, then put each back where it stood.
        removed: list[tuple[etree._Element, int, etree._Element]] = []
        for path in nested:
            for found in user.findall(path):
                parent = found.getparent()
                if parent is not None:
                    removed.append((parent, parent.index(found), found))
                    parent.remove(found)
        try:
            return _hash_children(user, top_level)
        finally:
            for parent, index, element in reversed(removed):
                parent.insert(index, element)

    def digest_payload(self, payload: bytes) -> bytes:
        """The digest of a stored payload, as :meth:`digest` gave it for the parsed record."""
        return self.digest(parse_payload(payload))


def strip_formatting(user: etree._Element) -> etree._Element:
    """Drop whitespace-only text (indentation, line ends, ``<phones>\n</phones>``).

    Done by hand because libxml2's ``remove_blank_text`` is a heuristic that keeps some.
    Alma's record has no mixed content, so whitespace beside a child element is layout, and a
    value of only whitespace is an empty value. Text with content keeps its spaces.
    """
    for element in user.iter():
        if element.text is not None and not element.text.strip():
            element.text = None
        if element.tail is not None and not element.tail.strip():
            element.tail = None
    return user


def parse_payload(payload: bytes) -> etree._Element:
    """Parse a stored canonical payload back into a ``<user>`` element."""
    return etree.fromstring(payload, _PARSER)


def _hash_children(user: etree._Element, skip: set[str]) -> bytes:
    hasher = xxhash.xxh3_128()
    for name, value in sorted(user.attrib.items()):
        hasher.update(f"@{str(name)}={str(value)}\x00".encode())
    children: Sequence[etree._Element] = [
        c for c in user if isinstance(c.tag, str) and c.tag not in skip
    ]
    # sorted() is stable: repeated elements keep their relative order.
    for child in sorted(children, key=lambda c: str(c.tag)):
        hasher.update(etree.tostring(child, method="c14n", with_comments=False, with_tail=False))
    return hasher.digest()
