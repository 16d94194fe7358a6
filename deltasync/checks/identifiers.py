"""How identifier values compare: case-insensitively, as Alma compares primary IDs, by a
64-bit hash (the value itself is not kept where it need not be)."""

from __future__ import annotations

import xxhash

_SIGN = 1 << 63


def value_hash(value: str) -> int:
    """A value's hash: case-insensitive, 64 bits, signed (it fits a database BIGINT)."""
    hashed = xxhash.xxh3_64_intdigest(value.casefold().encode())
    return hashed - (1 << 64) if hashed >= _SIGN else hashed
