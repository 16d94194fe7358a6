"""Match IDs: which value of a record identifies the patron, and how values compare.

Alma compares primary IDs case-insensitively. It runs on Java, whose
``String.equalsIgnoreCase`` takes two characters for one when their upper cases, or the lower
cases of their upper cases, are the same, one character at a time (``Character.toUpperCase``,
``Character.toLowerCase``: the simple, one-to-one Unicode mappings). :func:`alma_fold` is that
comparison as a key. Python's ``lower()`` differs for a few letters (``µ``/``μ``, ``ı``/``I``,
``İ``/``i``, ``ς``/``σ``) and ``casefold()`` for more (``ß``/``ss``), so IDs that any of them
would merge are held back rather than guessed at (:meth:`MatchIdRule.folds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from lxml import etree

PRIMARY_ID = "primary_id"
IDENTIFIER_PREFIX = "identifier:"
MAX_LENGTH = 255
"""The longest match ID deltasync tracks: Alma's schema (rest_user.xsd) allows primary_id and
identifier values of at most 255 characters."""
SHOWN_LENGTH = 40
"""How much of a longer match ID messages show."""


def shown(match_id: str) -> str:
    """The match ID as messages give it: one over :data:`MAX_LENGTH` is cut short."""
    return match_id if len(match_id) <= MAX_LENGTH else match_id[:SHOWN_LENGTH] + "…"


def alma_fold(value: str) -> str:
    """``value`` as Java's ``equalsIgnoreCase`` sees it: every character lower(upper(c)) by the
    simple case mappings, so the result has as many characters as ``value``."""
    if value.isascii():
        return value.lower()  # the usual case, and there all foldings agree
    return "".join(_fold_char(c) for c in value)


@cache
def _fold_char(char: str) -> str:
    return _simple_lower(_simple_upper(char))


def _simple_upper(char: str) -> str:
    # Python's upper() applies the full mappings (ß → SS); where it gives more than one
    # character, the simple mapping is the titlecase letter (ᾳ → ᾼ) or none at all (ß).
    for mapped in (char.upper(), char.title()):
        if len(mapped) == 1:
            return mapped
    return char


def _simple_lower(char: str) -> str:
    if char == "\u0130":  # İ: the only letter whose full lower case has two characters
        return "i"
    mapped = char.lower()
    return mapped if len(mapped) == 1 else char


@dataclass(frozen=True)
class MatchIdRule:
    """``primary_id`` or the value of one user identifier type (``identifier:UNIV_ID``)."""

    id_type: str | None = None

    @classmethod
    def parse(cls, text: str) -> MatchIdRule:
        """Read the ``match_id`` setting of a feed."""
        text = text.strip()
        if text == PRIMARY_ID:
            return cls(None)
        if text.startswith(IDENTIFIER_PREFIX) and text[len(IDENTIFIER_PREFIX) :].strip():
            return cls(text[len(IDENTIFIER_PREFIX) :].strip())
        raise ValueError(f"expected 'primary_id' or 'identifier:TYPE', not {text!r}")

    def __str__(self) -> str:
        return PRIMARY_ID if self.id_type is None else f"{IDENTIFIER_PREFIX}{self.id_type}"

    def value(self, user: etree._Element) -> str | None:
        """The match ID of a ``<user>`` record as written in it, or None when it has none."""
        if self.id_type is None:
            text = user.findtext("primary_id")
        else:
            text = None
            for identifier in user.iterfind("user_identifiers/user_identifier"):
                if (identifier.findtext("id_type") or "").strip() == self.id_type:
                    text = identifier.findtext("value")
                    break
        text = (text or "").strip()
        return text or None

    def key(self, value: str) -> str:
        """The form under which values compare: Alma treats primary IDs case-insensitively."""
        return alma_fold(value) if self.id_type is None else value

    def folds(self, value: str) -> dict[str, str]:
        """The forms other common case-insensitive comparisons reduce ``value`` to, by name,
        where they differ from its key: two IDs sharing a form may be one patron to Alma."""
        if self.id_type is not None or value.isascii():
            return {}  # exact, or every folding agrees with the key
        key = alma_fold(value)
        forms = {"lower()": value.lower(), "casefold()": value.casefold()}
        return {name: form for name, form in forms.items() if form != key}
