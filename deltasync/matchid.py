"""Match IDs: which value of a record identifies the patron, and how values compare."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

PRIMARY_ID = "primary_id"
IDENTIFIER_PREFIX = "identifier:"


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
        return value.lower() if self.id_type is None else value
