"""Secrets out of messages: passwords in URLs and in text that quotes them.

A database URL can carry its password as ``user:password@`` or as a ``password=`` query
parameter, and driver errors may quote a URL or a connection string. Everything deltasync
prints about a store or a URL goes through :func:`redact` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
MIN_SECRET = 4
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^@/?#\s]*(?=@)")
_USERINFO_BARE = re.compile(r"(?P<head>^\s*[^:/?#@\s]+:)[^@/?#\s]+(?=@)")
"""``user:password@host`` without a scheme, at the start: what an unparsable URL looks like."""
_PARAMETER = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|apikey|api_key)\s*=\s*)(?P<value>'[^']*'|[^&\s;'\"]+)",
    re.IGNORECASE,
)
SECRET_PARAMETERS = frozenset({"password", "passwd", "pwd", "apikey", "api_key"})
"""Query parameters that hold secrets (``password`` is libpq's, ``apikey`` Alma's)."""


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every URL password, secret parameter and given secret value masked."""
    for secret in secrets:
        # Shorter values would mask ordinary words; where they stand in a URL or a
        # parameter, the patterns below still mask them.
        if secret and len(secret) >= MIN_SECRET:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(rf"\g<head>{MASK}", text)
    text = _USERINFO_BARE.sub(rf"\g<head>{MASK}", text)
    return _PARAMETER.sub(rf"\g<head>{MASK}", text)
