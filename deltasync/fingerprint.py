"""A fingerprint of an extract's content that ignores its bytes and the order of its records.

Two exports of the same patrons with the same records (by match key and digest) have the same
fingerprint, whatever their line ends, layout or record order: that is how a copy of an
earlier extract is recognised without keeping any extract. It is the sum, modulo 2**128, of an
xxh3-128 hash of each (match key, digest): a sum, not an XOR, so that two equal records do not
cancel out. Digests depend on the recipe and the fixes, so :meth:`ContentFingerprint.value`
mixes those in: fingerprints made under different recipes never compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import xxhash

_MODULUS = 1 << 128


@dataclass
class ContentFingerprint:
    """Accumulates the records of one extract, in any order."""

    total: int = 0
    count: int = 0

    def add(self, key: str, digest: bytes) -> None:
        """Count one record: its match key and digest."""
        encoded = key.encode("utf-8")
        # Length-prefixed, so no key and digest can run into each other.
        item = len(encoded).to_bytes(4, "big") + encoded + digest
        self.total = (self.total + xxhash.xxh3_128_intdigest(item)) % _MODULUS
        self.count += 1

    def value(self, context: str) -> str:
        """The fingerprint as 32 hex digits; ``context`` names the recipe and the fixes."""
        data = b"%s\n%d\n%s" % (context.encode("utf-8"), self.count, self.total.to_bytes(16))
        return xxhash.xxh3_128_hexdigest(data)
