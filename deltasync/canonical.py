"""The canonical form of a patron record and its hash: what "changed" means.

The *payload* is the whole record in Canonical XML (attributes sorted, no comments, no
whitespace between elements): what the store keeps and what a delta file carries. The *digest*
is an xxh3-128 hash of the payload minus the feed's ignored fields, with the children of
``<user>`` in a fixed order, because Alma's schema declares them an ``xs:all`` whose order
carries no meaning. The recipe string names all of that; it is stored with the snapshot so a
changed recipe re-hashes the snapshot instead of reporting every patron as changed.

Since recipe version 2 the fields Alma's SIS load ignores (:data:`SIS_IGNORED`, and the
``segment_type`` attribute) are left out of the digest too: a template that stamps
``status_date`` with today or emits roles changes nothing in Alma, so it must not make a
patron "changed". They are still sent as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import xxhash
from lxml import etree

from .userxml import c14n, parse_payload

RECIPE_VERSION = 2
ALGORITHM = "xxh3_128"
SIS_IGNORED = (
    "user_roles",
    "status_date",
    "full_name",
    "proxy_for_users",
    "record_type",
    "external_id",
)
"""Fields of ``<user>`` that Alma's user schema marks as not part of the SIS load."""
SIS_IGNORED_ATTRIBUTE = "segment_type"
"""An attribute that is "relevant only for User API" (on addresses, emails, notes, …)."""
DATES = ("expiry_date", "purge_date")
"""The dates an expiry policy compares apart from the rest of the record."""


@dataclass(frozen=True)
class Recipe:
    """How records of one feed are canonicalised and hashed."""

    ignore: tuple[str, ...] = ()
    sis_ignored: bool = True
    """Leave the fields Alma's SIS load ignores out of the digest (the default)."""

    @property
    def fingerprint(self) -> str:
        """A string that changes whenever the digest of some record could change."""
        ignored = ",".join(sorted(set(self.ignore)))
        sis = "" if self.sis_ignored else ";sis-fields=counted"
        return f"v{RECIPE_VERSION};{ALGORITHM};ignore={ignored}{sis}"

    def leaves_out(self, field: str) -> bool:
        """Whether the digest leaves out ``field`` of ``<user>``: two records that differ only
        in it have the same digest."""
        return field in self.ignore or (self.sis_ignored and field in SIS_IGNORED)

    def payload(self, user: etree._Element) -> bytes:
        """The canonical serialisation of the whole record (ignored fields included)."""
        return c14n(user)

    def digest(self, user: etree._Element, *, without_dates: bool = False) -> bytes:
        """The 16-byte hash of the record without its ignored fields; ``user`` is left as is.

        ``without_dates`` leaves out the expiry and purge dates as well: two records with
        the same such digest differ at most in their dates.
        """
        # Take the ignored elements out and put the fields of <user> in name order for the
        # hash, then restore the record exactly: its payload keeps the order it came in.
        removed: list[tuple[etree._Element, int, etree._Element]] = []
        attributes: list[tuple[etree._Element, str]] = []
        if self.sis_ignored:
            carriers = _WITH_SIS_ATTRIBUTE(user)
            assert isinstance(carriers, list)
            for element in carriers:
                assert isinstance(element, etree._Element)
                value = element.get(SIS_IGNORED_ATTRIBUTE)
                if value is not None:
                    del element.attrib[SIS_IGNORED_ATTRIBUTE]
                    attributes.append((element, value))
        for path in self.ignore:
            if "/" in path:
                for found in user.findall(path):
                    parent = found.getparent()
                    if parent is not None:
                        removed.append((parent, parent.index(found), found))
                        parent.remove(found)
        original = list(user)
        ignored = {path for path in self.ignore if "/" not in path}
        if self.sis_ignored:
            ignored.update(SIS_IGNORED)
        if without_dates:
            ignored.update(DATES)
        ordered = sorted((c for c in original if c.tag not in ignored), key=_tag)
        reordered = ordered != original
        if reordered:
            user[:] = ordered
        try:
            return bytes(xxhash.xxh3_128_digest(c14n(user)))
        finally:
            if reordered:
                user[:] = original
            for parent, index, element in reversed(removed):
                parent.insert(index, element)
            for element, value in attributes:
                element.set(SIS_IGNORED_ATTRIBUTE, value)

    def digest_payload(self, payload: bytes) -> bytes:
        """The digest of a stored payload, as :meth:`digest` gave it for the parsed record."""
        return self.digest(parse_payload(payload))


_WITH_SIS_ATTRIBUTE = etree.XPath(f"descendant-or-self::*[@{SIS_IGNORED_ATTRIBUTE}]")
"""The elements that carry the attribute: most records have none, and visiting every element
to ask cost a quarter of the digest."""


def _tag(element: etree._Element) -> str:
    return str(element.tag)
