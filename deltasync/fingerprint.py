"""A fingerprint of an extract's content that ignores its bytes and the order of its records.

Two exports of the same patrons with the same records have the same fingerprint, whatever
their line ends, layout or record order: that is how a copy of an earlier extract is
recognised without keeping any extract. It is the number of records and the sum of one term
per record, the first 40 bits of its canonical digest (a sum, not an XOR, so two equal records
do not cancel out). The digest covers the whole record, match ID included; a record read
unchanged by its bytes adds the term of the digest the snapshot holds for it, which is its
digest. Digests depend on the recipe and the fixes, so :meth:`ContentFingerprint.value` mixes
those in: fingerprints made under different recipes never compare equal.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

SCHEME = "terms40"
"""Named in every fingerprint: one made another way never compares equal to it."""


def term_of(digest: bytes) -> int:
    """A record's term: the first 40 bits of its digest."""
    return int.from_bytes(digest[:5], "big")


LEAD_SHIFT = 24
"""A digest's lead (:func:`leads_of`) shifted right by this is its term."""


def leads_of(digests: Sequence[bytes]) -> array[int]:
    """The first 64 bits of each of many 16-byte digests, in one step instead of a call
    each (the terms of 100,000 present patrons took 40-70 ms one by one): a digest's term is
    its lead shifted right by :data:`LEAD_SHIFT`."""
    joined = b"".join(digests)
    if len(joined) != 16 * len(digests):  # not all 16 bytes long: one at a time
        return array("Q", (term_of(d) << LEAD_SHIFT for d in digests))
    halves = array("Q", joined)
    if sys.byteorder == "little":
        halves.byteswap()  # the digest's bytes read as a big-endian number, as term_of does
    return halves[::2]


@dataclass
class ContentFingerprint:
    """Accumulates the records of one extract, in any order."""

    total: int = 0
    count: int = 0

    def add(self, term: int, *, count: int = 1) -> None:
        """Count ``count`` records whose terms sum to ``term``."""
        self.total += term
        self.count += count

    def value(self, context: str) -> str:
        """The fingerprint as 32 hex digits; ``context`` names the recipe and the fixes."""
        data = f"{SCHEME};{context}\n{self.count}\n{self.total}".encode()
        return xxhash.xxh3_128_hexdigest(data)
