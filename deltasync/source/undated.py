"""The undated digest of a record's bytes: its raw digest without the text of its status_date.

Many SIS templates stamp ``status_date`` with the day of the extract. Alma's SIS load ignores
the field, and so does the record's digest (:data:`~deltasync.canonical.SIS_IGNORED`), but the
record's bytes differ every day, so its raw digest never matches and every record is read in
full, every day. The undated digest hashes the bytes with that date's text left out (the tags
stay, so everything else keeps its place): two slices with the same undated digest differ at
most in that text.

That says "unchanged" only where the text is that of the record's own ``status_date`` (a child
of ``<user>``), which the bytes alone cannot tell: ``<status_date>`` could stand inside a
comment, a CDATA section or a note's element. So a pass stores a patron's undated digest only
after reading the record in full and finding it so (:func:`keeps`); a slice whose undated
digest matches one stored is the same bytes around the same element, only its date's text
differs, and that text is plain characters (no markup, no references), so it is the same
record to Alma. Slices without a date of that plain form have no undated digest.

A pass looks a slice up by its undated digest only when its raw digest found no one, and
stores it only for a record found unchanged whose date is within :data:`STAMPED_DAYS` of the
run's: a feed whose dates do not move keeps finding its records by their
raw digests, at no cost, after a day that re-spelled them all.
"""

from __future__ import annotations

import datetime as dt
import re

import xxhash
from lxml import etree

from ..userxml import parse_alma_date

FIELD = "status_date"
"""The field whose text the undated digest leaves out."""
_START = b"<" + FIELD.encode() + b">"
_END = b"</" + FIELD.encode() + b">"
_NAMED = b"<" + FIELD.encode()
"""Where a tag of the field, or of an element whose name starts with it, begins."""
_TEXT = re.compile(rb"[-0-9A-Za-z:.+]{1,40}" + re.escape(_END))
"""The text of a date as SIS templates write it (``2027-01-04``, ``2027-01-04Z``,
``2027-01-04T05:00:00+00:00``), then its end tag: plain characters only, never a line end."""
SEED = 0x5D47ED0A7E
"""Mixed into the document's seed: an undated digest never equals a raw digest."""
STAMPED_DAYS = 7
"""How near the run's day a status_date must be to look stamped with the day of the extract
(one written the evening before, or a weekly extract's)."""


def digest(raw: bytes, seed: int) -> bytes | None:
    """The undated digest of the slice ``raw`` of a document hashed with ``seed``, or None
    when it holds no ``<status_date>`` or more than one, or one whose text is not plain."""
    start = raw.find(_START)
    if start < 0:
        return None
    start += len(_START)
    text = _TEXT.match(raw, start)
    if text is None or raw.find(_START, text.end()) >= 0:
        return None
    end = text.end() - len(_END)
    return xxhash.xxh3_128_digest(raw[:start] + raw[end:], seed=seed ^ SEED)


def keeps(raw: bytes, user: etree._Element, today: dt.date) -> bool:
    """Whether a record read in full from ``raw`` (which has an undated digest) as ``user``
    keeps its undated digest: the only ``<status_date>`` of its bytes is the record's own
    field, and that date looks stamped with the day of the extract.

    Its bytes hold no comment, CDATA section, declaration or processing instruction (where
    the tag could stand as text), so every ``<status_date`` in them starts an element's tag:
    there is one, so the record holds one element of that name, and ``<user>`` has it as a
    child (bytes, not a walk of the record: a walk cost a tenth of a record's reading). Its
    date is within :data:`STAMPED_DAYS` of ``today``: only a guess at what tomorrow brings, so
    that a record whose date does not move is found by its raw digest without a second look-up.
    """
    if _holds(raw, b"!", b"<!") or _holds(raw, b"?", b"<?") or raw.count(_NAMED) != 1:
        return False
    day = parse_alma_date(user.findtext(FIELD))  # None: <user> has no such child
    return day is not None and abs((day - today).days) <= STAMPED_DAYS


def _holds(raw: bytes, mark: bytes, markup: bytes) -> bool:
    """Whether ``raw`` holds ``markup`` (``<`` and ``mark``): a search for a one-byte ``mark``
    first, which most records do not hold at all (0.2 µs against 2 µs for the pair, every
    ``<`` of the record a false start)."""
    return mark in raw and markup in raw
