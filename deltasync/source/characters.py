"""A byte-level test for the characters that need the record checks' character walk."""

from __future__ import annotations

import re

_C1_BYTES = re.compile(rb"\xc2[\x80-\x9f]")


def suspect(data: bytes) -> bool:
    """Whether ``data`` may hold a control character, U+FFFD or a character reference (the
    records that need the character checks)."""
    # Separate searches: each is a memchr-speed scan, where one alternation is not.
    return (
        b"\x7f" in data
        or b"&#" in data
        or b"\xef\xbf\xbd" in data
        or _C1_BYTES.search(data) is not None
    )
