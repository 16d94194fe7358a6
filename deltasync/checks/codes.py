"""Every finding deltasync can report: a stable code, what it means, and its default policy.

The codes are a contract: scripts match on them, the config names them, the README lists them
(a test keeps the three in step). File-level codes always stop the run; record-level codes
follow the feed's policy: ``error`` holds the record back, ``warn`` sends it and reports,
``fix`` repairs it safely and reports the repair, ``off`` does not look.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Policy(StrEnum):
    """What a run does with a record that has a finding of some code."""

    ERROR = "error"
    WARN = "warn"
    FIX = "fix"
    OFF = "off"


@dataclass(frozen=True)
class Code:
    """One kind of finding."""

    name: str
    meaning: str
    default: Policy
    allowed: frozenset[Policy]


_ALL = frozenset(Policy)
_NO_FIX = frozenset({Policy.ERROR, Policy.WARN, Policy.OFF})
_ONLY_ERROR = frozenset({Policy.ERROR})

RECORD_CODES: dict[str, Code] = {
    code.name: code
    for code in (
        Code(
            "match-id-missing",
            "the record has no match ID (primary_id, or the feed's identifier type): it cannot "
            "be tracked",
            Policy.ERROR,
            _ONLY_ERROR,
        ),
        Code(
            "match-id-duplicate",
            "the same match ID occurs twice in the extract (primary IDs compare "
            "case-insensitively, as in Alma); neither copy is sent",
            Policy.ERROR,
            _ONLY_ERROR,
        ),
        Code(
            "match-id-ambiguous",
            "two match IDs that another common case folding (lower(), casefold()) takes for "
            "one, such as STRASSE3 and straße3: Alma may load them as one patron; neither is "
            "sent",
            Policy.ERROR,
            _ONLY_ERROR,
        ),
        Code(
            "match-id-too-long",
            "the match ID has more than 255 characters, the most Alma's schema allows for "
            "primary_id and identifier values: it cannot be tracked",
            Policy.ERROR,
            _ONLY_ERROR,
        ),
        Code(
            "identifier-taken",
            "an identifier value (primary or additional) is also held by another patron of the "
            "extract; Alma rejects the second: 'already taken'",
            Policy.ERROR,
            _NO_FIX,
        ),
        Code(
            "identifier-repeated",
            "the same identifier value twice in one record, or an additional identifier equal "
            "to the primary ID; Alma: 'already taken'",
            Policy.ERROR,
            _NO_FIX,
        ),
        Code(
            "account-not-external",
            "account_type is not EXTERNAL; Alma: 'User is not external'",
            Policy.ERROR,
            _NO_FIX,
        ),
        Code(
            "mandatory-missing",
            "a field of the feed's mandatory list is missing or empty (default: CARLI I-Share)",
            Policy.ERROR,
            _NO_FIX,
        ),
        Code(
            "email-no-preferred",
            "the record has emails but none is preferred; fix: mark the first one preferred",
            Policy.FIX,
            _ALL,
        ),
        Code(
            "address-no-preferred",
            "the record has addresses but none is preferred; fix: mark the first one preferred",
            Policy.FIX,
            _ALL,
        ),
        Code(
            "preferred-multiple",
            "more than one email, address or phone is preferred; fix: keep the first preferred",
            Policy.FIX,
            _ALL,
        ),
        Code(
            "date-invalid",
            "a date field (birth, expiry, purge or status date) is not an xs:date such as "
            "2027-06-30Z",
            Policy.ERROR,
            _NO_FIX,
        ),
        Code(
            "date-empty",
            "an empty date element such as <status_date/>, which Alma's schema rejects; fix: "
            "drop it (an absent field means the same to Alma)",
            Policy.FIX,
            _ALL,
        ),
        Code(
            "purge-before-expiry",
            "purge_date is earlier than expiry_date: Alma's purge job would delete the patron "
            "while the account is still meant to be valid",
            Policy.WARN,
            _NO_FIX,
        ),
        Code(
            "expired-active",
            "an active patron whose expiry_date has passed",
            Policy.WARN,
            _NO_FIX,
        ),
        Code(
            "code-unknown",
            "a code value outside the feed's code table for that field",
            Policy.ERROR,
            _NO_FIX,
        ),
        Code(
            "code-case",
            "a code value that matches the code table only when case is ignored ('external' "
            "for EXTERNAL); fix: write it as the table does",
            Policy.FIX,
            _ALL,
        ),
        Code(
            "char-control",
            "a control character (U+007F-U+009F) in a value, usually mis-decoded Windows-1252; "
            "fix: remove it",
            Policy.FIX,
            _ALL,
        ),
        Code(
            "char-forbidden",
            "a character XML 1.0 forbids (a C0 control such as U+0001 or U+001A) inside a "
            "record's text; fix: remove it (error: hold the record back); one outside any "
            "record stops the file (xml-char)",
            Policy.FIX,
            frozenset({Policy.ERROR, Policy.FIX}),
        ),
        Code(
            "char-replacement",
            "U+FFFD, the replacement character: the text was damaged before it reached the "
            "extract and cannot be repaired here",
            Policy.WARN,
            _NO_FIX,
        ),
        Code(
            "row-bad",
            "a CSV row that cannot be read as the header's columns (a wrong number of fields, "
            "an unbalanced quote); its match ID, if it can be read, is held back",
            Policy.ERROR,
            _ONLY_ERROR,
        ),
        Code(
            "map-code-unknown",
            "a value the mapping's code() finds neither in its code table nor as the table's "
            "'*' default; the field is left empty",
            Policy.ERROR,
            _NO_FIX,
        ),
        Code(
            "map-date-invalid",
            "a value the mapping's date() cannot read with its format (or add_days() with no "
            "date); the field is left empty",
            Policy.ERROR,
            _NO_FIX,
        ),
        Code(
            "map-render-error",
            "a mapping expression failed on the row (an undefined column, a refused "
            "operation); the field is left empty",
            Policy.ERROR,
            _NO_FIX,
        ),
        Code(
            "source-merged",
            "a match ID found in more than one source of the feed: the record of the first "
            "source (in the configured order) is taken",
            Policy.WARN,
            frozenset({Policy.WARN, Policy.OFF}),
        ),
        Code(
            "schema-invalid",
            "Alma's published schema (rest_user.xsd) rejects the record; Alma's loader is "
            "more lenient than its schema, so this warns by default",
            Policy.WARN,
            _NO_FIX,
        ),
    )
}

FILE_CODES: dict[str, str] = {
    "file-unreadable": "the file cannot be opened or read",
    "file-empty": "the file is empty",
    "file-bom": "the file starts with a UTF-8 byte-order mark",
    "file-not-utf8": "bytes that are not UTF-8 (the byte offset is named, and a hint when they "
    "look like Windows-1252 or an encoded UTF-16 surrogate)",
    "file-corrupt": "a .gz or .zip member whose compressed data does not decode",
    "file-no-users": "the file holds no <user> records",
    "xml-malformed": "XML that does not parse (line and column named)",
    "xml-truncated": "the XML ends too early: a cut-off transfer",
    "xml-entity": "a DTD entity (XXE, entity expansion): never read, never expanded",
    "xml-char": "a character XML 1.0 forbids (a C0 control, U+FFFE/U+FFFF, a lone "
    "surrogate as a character reference); like Alma, the parser cannot read past it",
    "zip-corrupt": "not a readable zip (for instance 'invalid END header' after a text-mode "
    "transfer)",
    "zip-no-xml": "the zip holds no .xml file",
    "zip-unsafe-name": "a zip entry name with an absolute path, '..' or a backslash path",
    "zip-encrypted": "a zip member is encrypted (password-protected): Alma cannot read it either",
    "zip-duplicate-name": "the zip holds two members of the same name, so one of them could "
    "never be read",
    "zip-too-large": "the zip unpacks to more than Alma's 4 GB, or one entry more than 200 "
    "times its packed size (a zip bomb)",
    "source-columns": "a CSV header or SQL query lacks a column the mapping uses, or names one "
    "twice",
    "sql-failed": "the SQL source's query failed or its database could not be reached",
}
"""File-level codes: the run stops with exit 1 and the store unchanged."""
