#!/usr/bin/env python3
"""Generate deterministic synthetic SIS patron extracts (Alma user XML) with churn between days.

Day 0 holds patrons 0..N-1. Every later day changes, removes, brings back and adds patrons, all
decided by ``random.Random`` instances seeded with strings, so the same arguments always give the
same bytes. A patron's record is a pure function of (seed, patron number, version); by default
only ``status_date`` (the day's date) differs between days for an unchanged patron. With
``status_date="version"`` it is the day the patron's current version started, so an unchanged
patron's record is byte-for-byte the same as the day before. ``reformat=True`` writes the same
records with tab indentation and the children of each ``<user>`` in another order (a "reformat
day": every record differs in bytes, none in content).

Usable as a CLI (see ``--help``) and as a module: ``write_extract``, ``truth``, ``records``,
``present_ids`` and ``user_xml``.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import gzip
import io
import itertools
import json
import random
import re
import sys
import unicodedata
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Literal, TypedDict, TypeVar, get_args

DEFAULT_CHANGE_RATE = 0.03
DEFAULT_DEPART_RATE = 0.005
DEFAULT_RETURN_RATE = 0.2
DEFAULT_NEW_RATE = 0.006

BASE_DATE = date(2027, 1, 4)
LATEST_DATE = date(2036, 12, 31)
_LATEST_ORDINAL = LATEST_DATE.toordinal()
# Large members get zip64 headers; below this size plain zip is kept for the widest compatibility.
_ZIP64_THRESHOLD = 1 << 30
_BATCH = 256
_ROOT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")

T = TypeVar("T")

StatusDate = Literal["daily", "version"]
"""What ``status_date`` holds: the extract's day, or the day the patron's version started."""
STATUS_DATES: tuple[str, ...] = get_args(StatusDate)


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

FIRST_NAMES = (
    "José", "Zoë", "Ngọc", "Renée", "Søren", "Siobhán", "Björn", "François", "Chloé", "Anaïs",
    "Aoife", "Łukasz", "Mateo", "Olivia", "Liam", "Emma", "Noah", "Aaliyah", "Wei", "Priya",
    "Mohammed", "Fatima", "Yuki", "Hyun-woo", "Jean-Luc", "Mary-Kate", "Ana", "Thảo", "Jürgen",
    "Inés", "Nikolaj", "Dvora", "Ayşe", "Kwame", "Chiamaka", "Sean", "Margaret", "James",
    "Sofía", "Élodie", "Øystein", "Maëlle", "Raúl", "Björk", "Michael", "Jennifer", "David",
    "Sarah", "Daniel", "Laura", "Christopher", "Jessica", "Matthew", "Ashley", "Joshua", "Emily",
)  # fmt: skip
LAST_NAMES = (
    "O'Brien", "D'Angelo", "Müller", "Ñúñez", "García", "Nguyễn", "Smith", "Johnson", "Kowalski",
    "Dvořák", "Østergaard", "Van der Berg", "MacDonald", "Lefèvre", "Çelik", "Papadopoulos",
    "Kim", "Patel", "Okafor", "Al-Sayed", "Schröder", "Brontë", "St. John", "O'Neill",
    "Fernández", "Jørgensen", "Williams", "Brown", "Jones", "Miller", "Davis", "Rodríguez",
    "Martínez", "Hernández", "López", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
    "Jackson", "Lee", "Pérez", "Thompson", "White", "Harris", "Sánchez", "Clark", "Ramírez",
    "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Trần", "Lê",
    "Phạm", "Wójcik", "Nowak", "Kovačević", "Horváth", "Byrne", "Ó Súilleabháin", "Dubois",
)  # fmt: skip

GROUPS = {"UGRD": "Undergraduate", "GRAD": "Graduate", "FAC": "Faculty", "STAFF": "Staff"}
_GROUP_CODES = tuple(GROUPS)
_GROUP_CUM = (0.6, 0.8, 0.9, 1.0)
_BIRTH_YEARS = {"UGRD": (1998, 2009), "GRAD": (1980, 2003), "FAC": (1950, 1995)}

LANGUAGES = {"en": "English", "es": "Spanish", "fr": "French", "de": "German", "vi": "Vietnamese"}
_LANGUAGE_CODES = tuple(LANGUAGES)
_LANGUAGE_CUM = (0.85, 0.91, 0.95, 0.98, 1.0)

_TERM_ENDS = ((5, 31), (6, 30), (8, 31), (9, 1), (12, 31))

ADDRESS_TYPES = {"home": "Home", "school": "School", "work": "Work", "alternative": "Alternative"}
COUNTRIES = {
    "USA": "United States",
    "CAN": "Canada",
    "DEU": "Germany",
    "MEX": "Mexico",
    "VNM": "Viet Nam",
    "DNK": "Denmark",
    "BRA": "Brazil",
    "IRL": "Ireland",
}
# (city, state/province, postal code, country); weighted towards the campus region.
CITIES = (
    ("Chestnut Hill", "MA", "02467", "USA"),
    ("Chestnut Hill", "MA", "02467", "USA"),
    ("Boston", "MA", "02115", "USA"),
    ("Boston", "MA", "02215", "USA"),
    ("Cambridge", "MA", "02139", "USA"),
    ("Somerville", "MA", "02144", "USA"),
    ("Newton", "MA", "02458", "USA"),
    ("Brookline", "MA", "02446", "USA"),
    ("Providence", "RI", "02906", "USA"),
    ("Hartford", "CT", "06106", "USA"),
    ("Brooklyn", "NY", "11215", "USA"),
    ("Philadelphia", "PA", "19104", "USA"),
    ("Chicago", "IL", "60637", "USA"),
    ("Austin", "TX", "78705", "USA"),
    ("San Juan", "PR", "00901", "USA"),
    ("Berkeley", "CA", "94704", "USA"),
    ("Coeur d'Alene", "ID", "83814", "USA"),
    ("Española", "NM", "87532", "USA"),
    ("Montréal", "QC", "H3A 0G4", "CAN"),
    ("Toronto", "ON", "M5S 1A1", "CAN"),
    ("München", "BY", "80331", "DEU"),
    ("Köln", "NW", "50667", "DEU"),
    ("Ciudad de México", "CDMX", "06700", "MEX"),
    ("Hà Nội", "HN", "100000", "VNM"),
    ("København", "84", "1050", "DNK"),
    ("São Paulo", "SP", "01310-100", "BRA"),
    ("Dublin", "D", "D02 X285", "IRL"),
)
STREETS = (
    "Commonwealth Ave", "Beacon St", "Main Street", "O'Neill Way", "Massachusetts Ave",
    "Rue Saint-Denis", "Calle Ñandú", "Königstraße", "Elm St", "College Rd", "St. Mary's Rd",
    "Harvard St", "Washington St", "Lake Shore Dr", "Avenida Paulista", "Phố Huế",
)  # fmt: skip
_ADDRESS_ORDERS = tuple(itertools.permutations(ADDRESS_TYPES))
LINE2 = ("Apt {n}", "Apt {n}B", "Unit {n}", "Room {n}", "Box {n}", "Suite {n}", "Floor {n}")

EMAIL_TYPES = {"school": "School", "personal": "Personal", "work": "Work"}
_PERSONAL_DOMAINS = ("example.com", "example.org", "mail.example.net")
PHONE_TYPES = {"mobile": "Mobile", "home": "Home", "office": "Office"}
_PHONE_ORDERS = tuple(itertools.permutations(PHONE_TYPES))
_AREA_CODES = ("617", "857", "781", "508", "212", "312", "415")

IDENTIFIER_TYPES = {"UNIV_ID": "University ID", "BARCODE": "Barcode"}

# statistic code -> (description, category type code)
STATISTICS = {
    "ARTSCI": ("College of Arts & Sciences", "SCHOOL"),
    "ENG": ("School of Engineering", "SCHOOL"),
    "BUS": ("Carroll School of Management", "SCHOOL"),
    "LAW": ("Law School", "SCHOOL"),
    "NURS": ("Connell School of Nursing", "SCHOOL"),
    "ATH": ("Student-Athlete", "COHORT"),
    "INTL": ("International Student", "COHORT"),
    "ONLINE": ("Online / Distance Program", "COHORT"),
    "HONORS": ("Honors Program", "COHORT"),
}
CATEGORY_TYPES = {"SCHOOL": "School", "COHORT": "Cohort"}
_STAT_CODES = tuple(STATISTICS)
_STAT_PAIRS = tuple(itertools.permutations(_STAT_CODES, 2))

NOTE_TYPES = {
    "GENERAL": "General",
    "CIRCULATION": "Circulation",
    "REGISTAR": "Registrar",
    "ADDRESS": "Address",
}
# Texts deliberately hold characters that must be escaped (&, <, >, quotes).
_NOTE_TEMPLATES = (
    ("REGISTAR", "Enrollment verified by Registrar & Bursar (ticket #{t})"),
    ("CIRCULATION", 'Fines < $25 waived per "Library Amnesty" policy, ref {t}'),
    ("ADDRESS", "Mail returned as <undeliverable>; verify address, ref {t}"),
    ("GENERAL", "Prefers pickup at O'Neill Library & notices by e-mail (#{t})"),
    ("GENERAL", 'Name on ID card reads "{first} {last}" (#{t})'),
    ("CIRCULATION", "Proxy borrowing approved -> Arts & Sciences dept., ref {t}"),
)

_FOLD = str.maketrans({"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "ß": "ss", "æ": "ae", "đ": "d"})


# --------------------------------------------------------------------------------------------
# Population
# --------------------------------------------------------------------------------------------


class Truth(TypedDict):
    """What changed on ``day`` compared with the day before (lists sorted by primary id)."""

    day: int
    new: list[str]
    changed: list[str]
    departed: list[str]
    returned: list[str]
    unchanged: int
    present: int


@dataclass(frozen=True)
class Rates:
    """Daily churn probabilities; ``new_rate`` is a fraction of the day-0 population per day."""

    change_rate: float = DEFAULT_CHANGE_RATE
    depart_rate: float = DEFAULT_DEPART_RATE
    return_rate: float = DEFAULT_RETURN_RATE
    new_rate: float = DEFAULT_NEW_RATE

    def check(self) -> None:
        """Raise ValueError unless every rate is a probability."""
        for name, value in vars(self).items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")


@dataclass(slots=True)
class _State:
    versions: list[int]
    since: list[int]
    """The day each patron's current version started (its first day for version 0)."""
    present: bytearray
    new: list[int]
    changed: list[int]
    departed: list[int]
    returned: list[int]

    def present_numbers(self) -> list[int]:
        return [n for n, here in enumerate(self.present) if here]


def _simulate(patrons: int, day: int, seed: int, rates: Rates) -> _State:
    if patrons < 0 or day < 0:
        raise ValueError("patrons and day must not be negative")
    rates.check()
    versions = [0] * patrons
    since = [0] * patrons
    present = bytearray(b"\x01") * patrons
    state = _State(versions, since, present, list(range(patrons)), [], [], [])
    per_day = round(patrons * rates.new_rate)
    change = rates.change_rate
    # One draw per patron: P(depart | not changed) == depart_rate.
    depart = change + (1.0 - change) * rates.depart_rate
    ret = rates.return_rate
    for d in range(1, day + 1):
        rand = random.Random(f"{seed}:day:{d}").random
        changed: list[int] = []
        departed: list[int] = []
        returned: list[int] = []
        for n in range(len(versions)):
            r = rand()
            if present[n]:
                if r < change:
                    versions[n] += 1
                    since[n] = d
                    changed.append(n)
                elif r < depart:
                    present[n] = 0
                    departed.append(n)
            elif r < ret:
                present[n] = 1
                returned.append(n)
        start = len(versions)
        versions.extend([0] * per_day)
        since.extend([d] * per_day)
        present.extend(b"\x01" * per_day)
        state.new = list(range(start, start + per_day))
        state.changed, state.departed, state.returned = changed, departed, returned
    return state


def primary_id(number: int) -> str:
    """Primary id of patron ``number``."""
    return f"S{number:07d}"


def univ_id(number: int) -> str:
    """UNIV_ID of patron ``number``: '9' + 8 digits, unique for numbers below 10**8."""
    # 48271 is coprime with 10**8, so this is a permutation of 0..10**8-1.
    return f"9{(number * 48271 + 10007) % 100_000_000:08d}"


def _luhn_sum(digits: str) -> int:
    """Luhn sum of ``digits`` when a check digit is to follow them."""
    doubled = sum(_LUHN_DOUBLE[int(ch)] for ch in digits[-1::-2])
    return doubled + sum(int(ch) for ch in digits[-2::-2])


_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
# Sums of 4-digit blocks: a barcode is built per record, and digit loops cost microseconds.
_LUHN_BLOCK = tuple(_luhn_sum(f"{i:04d}") for i in range(10_000))
_BARCODE_PREFIX = "21357"
_BARCODE_PREFIX_SUM = _luhn_sum(_BARCODE_PREFIX + "0" * 8)


def barcode(number: int) -> str:
    """14-digit library barcode of patron ``number`` with a Luhn check digit."""
    # 69069 is coprime with 10**8, so serials are unique for numbers below 10**8.
    serial = (number * 69069 + 31337) % 100_000_000
    total = _BARCODE_PREFIX_SUM + _LUHN_BLOCK[serial % 10_000] + _LUHN_BLOCK[serial // 10_000]
    return f"{_BARCODE_PREFIX}{serial:08d}{-total % 10}"


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Address:
    type: str
    line1: str
    line2: str | None
    city: str
    state: str
    postal: str
    country: str


@dataclass(slots=True)
class _Email:
    address: str
    type: str


@dataclass(slots=True)
class _Phone:
    number: str
    type: str
    sms: bool


@dataclass(slots=True)
class _Person:
    number: int
    first: str
    middle: str | None
    last: str
    group: str
    language: str
    birth: date | None
    expiry: date
    purge: date
    addresses: list[_Address]
    pref_address: int
    emails: list[_Email]
    pref_email: int
    phones: list[_Phone]
    pref_phone: int
    stats: list[str]
    notes: list[tuple[str, str]]


@functools.cache
def _fold(text: str) -> str:
    """Lower-case ASCII letters and digits of ``text`` (for e-mail local parts)."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(ch for ch in decomposed if ch.isascii() and ch.isalnum()).lower() or "user"


# Helpers over rng.random() only: Random.choice/randint/choices cost several times more, and
# they run dozens of times for each of hundreds of thousands of records.
def _pick(rng: random.Random, seq: Sequence[T]) -> T:
    return seq[int(rng.random() * len(seq))]


def _int(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low + 1))


def _weighted(rng: random.Random, seq: Sequence[T], cum_weights: Sequence[float]) -> T:
    return seq[bisect.bisect(cum_weights, rng.random())]


def _fresh(rng: random.Random, make: Callable[[random.Random], str], old: str) -> str:
    while True:
        value = make(rng)
        if value != old:
            return value


def _new_address(rng: random.Random, type_: str) -> _Address:
    city, state, postal, country = _pick(rng, CITIES)
    line1 = f"{_int(rng, 1, 2999)} {_pick(rng, STREETS)}"
    line2 = _pick(rng, LINE2).format(n=_int(rng, 1, 999)) if rng.random() < 0.4 else None
    return _Address(type_, line1, line2, city, state, postal, country)


def _phone_number(rng: random.Random) -> str:
    area = _pick(rng, _AREA_CODES)
    line = f"{_int(rng, 100, 199):04d}"  # 555-0100..0199 are reserved for fiction
    style = rng.random()
    if style < 0.5:
        return f"{area}-555-{line}"
    if style < 0.8:
        return f"({area}) 555-{line}"
    return f"+1 {area} 555 {line}"


def _email_address(rng: random.Random, p: _Person, type_: str) -> str:
    first, last = _fold(p.first), _fold(p.last)
    local = _pick(rng, (f"{first}.{last}", f"{first[0]}{last}", f"{last}.{first}"))
    domain = "example.edu" if type_ == "school" else _pick(rng, _PERSONAL_DOMAINS)
    return f"{local}{_int(rng, 1, 999)}@{domain}"


def _base(seed: int, n: int) -> _Person:
    rng = random.Random(f"{seed}:{n}:base")
    group = _weighted(rng, _GROUP_CODES, _GROUP_CUM)
    first = _pick(rng, FIRST_NAMES)
    middle = _pick(rng, FIRST_NAMES) if rng.random() < 0.4 else None
    last = _pick(rng, LAST_NAMES)
    language = _weighted(rng, _LANGUAGE_CODES, _LANGUAGE_CUM)
    birth = None
    if rng.random() < 0.7:
        low, high = _BIRTH_YEARS.get(group, (1955, 2000))
        birth = date.fromordinal(date(_int(rng, low, high), 1, 1).toordinal() + _int(rng, 0, 364))
    expiry = date(_int(rng, 2031, 2034), *_pick(rng, _TERM_ENDS))
    gap = _pick(rng, (0, 365, 730)) if rng.random() < 0.8 else _int(rng, 1, 730)
    purge = date.fromordinal(min(expiry.toordinal() + gap, _LATEST_ORDINAL))

    count = _weighted(rng, (1, 2, 3), (0.6, 0.9, 1.0))
    addresses = [_new_address(rng, t) for t in _pick(rng, _ADDRESS_ORDERS)[:count]]
    emails = [_Email(f"{_fold(first)}.{_fold(last)}{n}@example.edu", "school")]
    p = _Person(
        n, first, middle, last, group, language, birth, expiry, purge,
        addresses, _int(rng, 0, count - 1), emails, 0, [], 0, [], [],
    )  # fmt: skip
    if rng.random() < 0.4:
        emails.append(_Email(_email_address(rng, p, "personal"), "personal"))
        p.pref_email = 1 if rng.random() < 0.25 else 0
    count = _weighted(rng, (0, 1, 2), (0.2, 0.7, 1.0))
    for type_ in _pick(rng, _PHONE_ORDERS)[:count]:
        sms = type_ == "mobile" and rng.random() < 0.5
        p.phones.append(_Phone(_phone_number(rng), type_, sms))
    p.pref_phone = _int(rng, 0, count - 1) if count else 0
    count = _weighted(rng, (0, 1, 2), (0.3, 0.8, 1.0))
    p.stats = list(_pick(rng, _STAT_PAIRS)[:count]) if count else []
    if rng.random() < 0.15:
        _add_note(p, rng)
    return p


def _change_email(p: _Person, rng: random.Random) -> None:
    email = p.emails[p.pref_email]
    email.address = _fresh(rng, lambda r: _email_address(r, p, email.type), email.address)


def _change_address(p: _Person, rng: random.Random) -> None:
    old = p.addresses[p.pref_address]
    while True:
        new = _new_address(rng, old.type)
        if new.line1 != old.line1:
            p.addresses[p.pref_address] = new
            return


def _change_phone(p: _Person, rng: random.Random) -> None:
    if not p.phones:
        p.phones.append(_Phone(_phone_number(rng), "mobile", rng.random() < 0.5))
        p.pref_phone = 0
        return
    phone = p.phones[p.pref_phone]
    phone.number = _fresh(rng, _phone_number, phone.number)


def _change_group(p: _Person, rng: random.Random) -> None:
    p.group = rng.choice([g for g in _GROUP_CODES if g != p.group])


def _change_last_name(p: _Person, rng: random.Random) -> None:
    other = rng.choice([n for n in LAST_NAMES if n != p.last])
    p.last = f"{p.last}-{other}" if "-" not in p.last and rng.random() < 0.3 else other


def _change_statistic(p: _Person, rng: random.Random) -> None:
    if p.stats and (len(p.stats) >= 3 or rng.random() < 0.4):
        del p.stats[rng.randrange(len(p.stats))]
    else:
        p.stats.append(rng.choice([c for c in _STAT_CODES if c not in p.stats]))


def _add_note(p: _Person, rng: random.Random) -> None:
    note_type, template = rng.choice(_NOTE_TEMPLATES)
    text = template.format(t=rng.randint(10000, 99999), first=p.first, last=p.last)
    p.notes.append((note_type, text))


def _push_expiry(p: _Person, rng: random.Random) -> None:
    delta = timedelta(days=rng.randint(1, min(400, (LATEST_DATE - p.purge).days)))
    p.expiry += delta
    p.purge += delta


_MODIFIERS: dict[str, Callable[[_Person, random.Random], None]] = {
    "email": _change_email,
    "address": _change_address,
    "phone": _change_phone,
    "user_group": _change_group,
    "last_name": _change_last_name,
    "statistic": _change_statistic,
    "note": _add_note,
    "expiry": _push_expiry,
}


def _person(seed: int, n: int, version: int) -> _Person:
    p = _base(seed, n)
    for v in range(1, version + 1):
        rng = random.Random(f"{seed}:{n}:{v}")
        kinds = [k for k in _MODIFIERS if k != "expiry" or p.purge < LATEST_DATE]
        for kind in rng.sample(kinds, 1 if rng.random() < 0.7 else 2):
            _MODIFIERS[kind](p, rng)
    return p


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: str) -> str:
    return '"' + _esc(value).replace('"', "&quot;") + '"'


def _code(tag: str, code: str, desc: str) -> str:
    return f"<{tag} desc={_attr(desc)}>{_esc(code)}</{tag}>"


# Code elements with their descriptions, rendered once.
_RECORD_TYPE = _code("record_type", "PUBLIC", "Public")
_ACCOUNT_TYPE = _code("account_type", "EXTERNAL", "External")
_STATUS = _code("status", "ACTIVE", "Active")
_GROUP_XML = {c: _code("user_group", c, d) for c, d in GROUPS.items()}
_LANGUAGE_XML = {c: _code("preferred_language", c, d) for c, d in LANGUAGES.items()}
_COUNTRY_XML = {c: _code("country", c, d) for c, d in COUNTRIES.items()}
_ADDRESS_TYPE_XML = {c: _code("address_type", c, d) for c, d in ADDRESS_TYPES.items()}
_EMAIL_TYPE_XML = {c: _code("email_type", c, d) for c, d in EMAIL_TYPES.items()}
_PHONE_TYPE_XML = {c: _code("phone_type", c, d) for c, d in PHONE_TYPES.items()}
_ID_TYPE_XML = {c: _code("id_type", c, d) for c, d in IDENTIFIER_TYPES.items()}
_STAT_XML = {c: _code("statistic_category", c, d) for c, (d, _) in STATISTICS.items()}
_CATEGORY_XML = {
    c: _code("category_type", t, CATEGORY_TYPES[t]) for c, (_, t) in STATISTICS.items()
}
_NOTE_TYPE_XML = {c: _code("note_type", c, d) for c, d in NOTE_TYPES.items()}
_BOOL = {True: "true", False: "false"}


def _render(
    p: _Person, when: str, nl: str, base: str, step: str, shuffle: random.Random | None = None
) -> str:
    """The ``<user>`` element: starts with ``base``, lines joined by ``nl``, no final newline.

    With ``shuffle`` the children of ``<user>`` come in an order drawn from it (never the usual
    one): Alma's schema declares them an ``xs:all``. Everything inside a child keeps its order.
    """
    fields = _fields(p, when, nl + base + step, step)
    if shuffle is not None:
        usual = list(fields)
        shuffle.shuffle(fields)
        if fields == usual:
            fields.reverse()
    return f"{base}<user>{''.join(fields)}{nl}{base}</user>"


def _fields(p: _Person, when: str, n1: str, step: str) -> list[str]:
    """The children of ``<user>``, each one string starting with its line break ``n1``."""
    n2, n3, n4, n5 = n1 + step, n1 + 2 * step, n1 + 3 * step, n1 + 4 * step
    out = [
        f"{n1}{_RECORD_TYPE}",
        f"{n1}<primary_id>{primary_id(p.number)}</primary_id>",
        f"{n1}<first_name>{_esc(p.first)}</first_name>",
    ]
    add = out.append
    if p.middle is not None:
        add(f"{n1}<middle_name>{_esc(p.middle)}</middle_name>")
    add(f"{n1}<last_name>{_esc(p.last)}</last_name>")
    add(f"{n1}{_GROUP_XML[p.group]}")
    add(f"{n1}{_LANGUAGE_XML[p.language]}")
    if p.birth is not None:
        add(f"{n1}<birth_date>{p.birth.isoformat()}Z</birth_date>")
    add(f"{n1}<expiry_date>{p.expiry.isoformat()}Z</expiry_date>")
    add(f"{n1}<purge_date>{p.purge.isoformat()}Z</purge_date>")
    add(f"{n1}{_ACCOUNT_TYPE}")
    add(f"{n1}<external_id>SIS</external_id>")
    add(f"{n1}{_STATUS}")
    add(f"{n1}<status_date>{when}</status_date>")
    # contact_info is one field: the schema fixes the order of what is inside it.
    contact = [f"{n1}<contact_info>{n2}<addresses>"]
    for i, a in enumerate(p.addresses):
        line2 = "" if a.line2 is None else f"{n4}<line2>{_esc(a.line2)}</line2>"
        contact.append(
            f'{n3}<address preferred="{_BOOL[i == p.pref_address]}" segment_type="External">'
            f"{n4}<line1>{_esc(a.line1)}</line1>{line2}{n4}<city>{_esc(a.city)}</city>"
            f"{n4}<state_province>{_esc(a.state)}</state_province>"
            f"{n4}<postal_code>{_esc(a.postal)}</postal_code>{n4}{_COUNTRY_XML[a.country]}"
            f"{n4}<address_types>{n5}{_ADDRESS_TYPE_XML[a.type]}{n4}</address_types>"
            f"{n3}</address>"
        )
    contact.append(f"{n2}</addresses>{n2}<emails>")
    for i, e in enumerate(p.emails):
        contact.append(
            f'{n3}<email preferred="{_BOOL[i == p.pref_email]}" segment_type="External">'
            f"{n4}<email_address>{_esc(e.address)}</email_address>"
            f"{n4}<email_types>{n5}{_EMAIL_TYPE_XML[e.type]}{n4}</email_types>{n3}</email>"
        )
    contact.append(f"{n2}</emails>")
    if p.phones:
        contact.append(f"{n2}<phones>")
        for i, ph in enumerate(p.phones):
            contact.append(
                f'{n3}<phone preferred="{_BOOL[i == p.pref_phone]}" '
                f'preferred_sms="{_BOOL[ph.sms]}" segment_type="External">'
                f"{n4}<phone_number>{_esc(ph.number)}</phone_number>"
                f"{n4}<phone_types>{n5}{_PHONE_TYPE_XML[ph.type]}{n4}</phone_types>{n3}</phone>"
            )
        contact.append(f"{n2}</phones>")
    contact.append(f"{n1}</contact_info>")
    add("".join(contact))
    ids = "".join(
        f'{n2}<user_identifier segment_type="External">{n3}{_ID_TYPE_XML[id_type]}'
        f"{n3}<value>{value}</value>{n3}<status>ACTIVE</status>{n2}</user_identifier>"
        for id_type, value in (("UNIV_ID", univ_id(p.number)), ("BARCODE", barcode(p.number)))
    )
    add(f"{n1}<user_identifiers>{ids}{n1}</user_identifiers>")
    if p.stats:
        stats = "".join(
            f'{n2}<user_statistic segment_type="External">{n3}{_STAT_XML[code]}'
            f"{n3}{_CATEGORY_XML[code]}{n2}</user_statistic>"
            for code in p.stats
        )
        add(f"{n1}<user_statistics>{stats}{n1}</user_statistics>")
    if p.notes:
        notes = "".join(
            f'{n2}<user_note segment_type="External">{n3}{_NOTE_TYPE_XML[note_type]}'
            f"{n3}<note_text>{_esc(text)}</note_text>{n3}<user_viewable>false</user_viewable>"
            f"{n3}<popup_note>false</popup_note>{n2}</user_note>"
            for note_type, text in p.notes
        )
        add(f"{n1}<user_notes>{notes}{n1}</user_notes>")
    return out


def status_date(day: int) -> str:
    """The ``status_date`` value written on ``day``."""
    return f"{(BASE_DATE + timedelta(days=day)).isoformat()}Z"


@dataclass(frozen=True)
class _Layout:
    """How the records of one extract are written (never what they say)."""

    seed: int
    day: int
    status_date: str
    reformat: bool
    stamped: date | None = None

    def __post_init__(self) -> None:
        if self.status_date not in STATUS_DATES:
            raise ValueError(f"status_date must be one of {', '.join(STATUS_DATES)}")

    def dates(self, state: _State) -> Callable[[int], str]:
        """The ``status_date`` of patron ``n`` in this extract."""
        if self.stamped is not None:
            stamp = f"{self.stamped.isoformat()}Z"
            return lambda n: stamp
        if self.status_date == "daily":
            when = status_date(self.day)
            return lambda n: when
        # Days are few: render each date once, not once per record.
        days = [status_date(d) for d in range(self.day + 1)]
        since = state.since
        return lambda n: days[since[n]]

    def shuffle(self, n: int) -> random.Random | None:
        """The random source that orders patron ``n``'s fields, if they are to be reordered."""
        return random.Random(f"{self.seed}:{n}:layout") if self.reformat else None

    def step(self, indent: bool) -> str:
        """One level of indentation."""
        if not indent:
            return ""
        return "\t" if self.reformat else "  "


def user_xml(number: int, version: int, *, seed: int = 1, day: int = 0, indent: bool = True) -> str:
    """The ``<user>`` element of patron ``number`` at ``version`` as written on ``day``."""
    person = _person(seed, number, version)
    if indent:
        return _render(person, status_date(day), "\n", "", "  ")
    return _render(person, status_date(day), "", "", "")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _order(state: _State, seed: int, day: int, shuffle: bool) -> list[int]:
    numbers = state.present_numbers()
    if shuffle:
        random.Random(f"{seed}:shuffle:{day}").shuffle(numbers)
    return numbers


def present_ids(
    *,
    patrons: int,
    day: int,
    seed: int = 1,
    change_rate: float = DEFAULT_CHANGE_RATE,
    depart_rate: float = DEFAULT_DEPART_RATE,
    return_rate: float = DEFAULT_RETURN_RATE,
    new_rate: float = DEFAULT_NEW_RATE,
) -> list[str]:
    """Primary ids in the extract of ``day``, in ascending patron order."""
    rates = Rates(change_rate, depart_rate, return_rate, new_rate)
    return [primary_id(n) for n in _simulate(patrons, day, seed, rates).present_numbers()]


def records(
    *,
    patrons: int,
    day: int,
    seed: int = 1,
    shuffle: bool = False,
    status_date: StatusDate = "daily",
    reformat: bool = False,
    change_rate: float = DEFAULT_CHANGE_RATE,
    depart_rate: float = DEFAULT_DEPART_RATE,
    return_rate: float = DEFAULT_RETURN_RATE,
    new_rate: float = DEFAULT_NEW_RATE,
) -> Iterator[tuple[str, str]]:
    """``(primary_id, user_xml)`` for every patron in the extract of ``day``, lazily built.

    ``status_date`` and ``reformat`` are as for :func:`write_extract`.
    """
    layout = _Layout(seed, day, status_date, reformat)
    state = _simulate(patrons, day, seed, Rates(change_rate, depart_rate, return_rate, new_rate))
    return _records(state, _order(state, seed, day, shuffle), layout)


def _records(state: _State, numbers: list[int], layout: _Layout) -> Iterator[tuple[str, str]]:
    when, step, seed = layout.dates(state), layout.step(True), layout.seed
    for n in numbers:
        person = _person(seed, n, state.versions[n])
        yield primary_id(n), _render(person, when(n), "\n", "", step, layout.shuffle(n))


def truth(
    *,
    patrons: int,
    day: int,
    seed: int = 1,
    change_rate: float = DEFAULT_CHANGE_RATE,
    depart_rate: float = DEFAULT_DEPART_RATE,
    return_rate: float = DEFAULT_RETURN_RATE,
    new_rate: float = DEFAULT_NEW_RATE,
) -> Truth:
    """Describe the extract of ``day`` against the one of ``day - 1`` (day 0: all new).

    ``status_date`` does not count as a change (by default it moves for everybody every day).
    """
    state = _simulate(patrons, day, seed, Rates(change_rate, depart_rate, return_rate, new_rate))
    present = state.present.count(1)
    changed = len(state.changed)
    return Truth(
        day=day,
        new=sorted(primary_id(n) for n in state.new),
        changed=sorted(primary_id(n) for n in state.changed),
        departed=sorted(primary_id(n) for n in state.departed),
        returned=sorted(primary_id(n) for n in state.returned),
        unchanged=present - len(state.new) - changed - len(state.returned),
        present=present,
    )


def _write_document(
    out: IO[str], numbers: Sequence[int], state: _State, layout: _Layout, root: str, step: str
) -> None:
    when, shuffle, seed = layout.dates(state), layout.shuffle, layout.seed
    nl = "\n" if step else ""
    out.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}>')
    versions = state.versions
    # Records go out in batches: one write call per record costs more than rendering some.
    for start in range(0, len(numbers), _BATCH):
        batch = numbers[start : start + _BATCH]
        out.write(nl)
        out.write(
            nl.join(
                [
                    _render(_person(seed, n, versions[n]), when(n), nl, step, step, shuffle(n))
                    for n in batch
                ]
            )
        )
    out.write(f"{nl}</{root}>\n")


def _split(numbers: list[int], parts: int) -> list[list[int]]:
    size, extra = divmod(len(numbers), parts)
    chunks: list[list[int]] = []
    start = 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        chunks.append(numbers[start:end])
        start = end
    return chunks


def write_extract(
    path: str | Path,
    *,
    patrons: int,
    day: int,
    seed: int = 1,
    root: str = "users",
    crlf: bool = False,
    shuffle: bool = False,
    indent: bool = True,
    members: int = 1,
    status_date: StatusDate = "daily",
    reformat: bool = False,
    stamped: date | None = None,
    change_rate: float = DEFAULT_CHANGE_RATE,
    depart_rate: float = DEFAULT_DEPART_RATE,
    return_rate: float = DEFAULT_RETURN_RATE,
    new_rate: float = DEFAULT_NEW_RATE,
) -> int:
    """Write the full extract of ``day`` to ``path`` and return the number of records.

    The suffix picks the format: ``.xml``, ``.xml.gz`` or ``.zip`` (``members`` XML files,
    records split into contiguous runs). ``indent=False`` writes no whitespace between elements.
    ``status_date="version"`` writes the day each patron's current version started instead of
    ``day``, so unchanged records repeat byte for byte. ``reformat=True`` indents with tabs and
    puts the children of every ``<user>`` in another order (``contact_info`` and every other
    child keep their insides); the content is the same. ``stamped`` writes that date as every
    record's ``status_date`` (an SIS that stamps the day of the extract, near the day of the
    run), whatever ``status_date`` says.
    """
    path = Path(path)
    layout = _Layout(seed, day, status_date, reformat, stamped)
    if not _ROOT_RE.match(root):
        raise ValueError(f"invalid root element name: {root!r}")
    if members < 1:
        raise ValueError("members must be at least 1")
    name = path.name.lower()
    if members != 1 and not name.endswith(".zip"):
        raise ValueError("members applies to .zip output only")
    state = _simulate(patrons, day, seed, Rates(change_rate, depart_rate, return_rate, new_rate))
    numbers = _order(state, seed, day, shuffle)
    newline = "\r\n" if crlf else "\n"
    step = layout.step(indent)
    when = BASE_DATE + timedelta(days=day)
    stamp = datetime(when.year, when.month, when.day, 2, 0, 0, tzinfo=UTC)

    if name.endswith(".zip"):
        stem = path.name[: -len(".zip")]
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for i, chunk in enumerate(_split(numbers, members)):
                member = f"{stem}.xml" if members == 1 else f"{stem}_{i + 1:02d}.xml"
                info = zipfile.ZipInfo(member, date_time=(when.year, when.month, when.day, 2, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                big = len(chunk) * 4096 > _ZIP64_THRESHOLD
                raw = archive.open(info, "w", force_zip64=big)
                with io.TextIOWrapper(raw, encoding="utf-8", newline=newline) as text:
                    _write_document(text, chunk, state, layout, root, step)
    elif name.endswith(".xml.gz"):
        with (
            open(path, "wb") as raw_file,
            gzip.GzipFile(
                filename="", mode="wb", fileobj=raw_file, compresslevel=6, mtime=stamp.timestamp()
            ) as gz,
            io.TextIOWrapper(gz, encoding="utf-8", newline=newline) as text,
        ):
            _write_document(text, numbers, state, layout, root, step)
    elif name.endswith(".xml"):
        with open(path, "w", encoding="utf-8", newline=newline) as text:
            _write_document(text, numbers, state, layout, root, step)
    else:
        raise ValueError(f"unsupported output suffix (use .xml, .xml.gz or .zip): {path}")
    return len(numbers)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description="Generate a deterministic synthetic Alma SIS extract for one day."
    )
    parser.add_argument("--patrons", type=int, required=True, help="population on day 0")
    parser.add_argument("--day", type=int, required=True, help="day to generate (0 = first)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--root", choices=("users", "userRecords"), default="users")
    parser.add_argument("--crlf", action="store_true", help="write CRLF line ends")
    parser.add_argument("--shuffle", action="store_true", help="shuffle record order")
    parser.add_argument("--no-indent", action="store_true", help="no whitespace between elements")
    parser.add_argument("--members", type=int, default=1, help="XML files inside a .zip")
    parser.add_argument(
        "--status-date",
        choices=STATUS_DATES,
        default="daily",
        help="status_date: the day of the extract (daily, the default) or the day the patron's "
        "current version started (version: unchanged records repeat byte for byte)",
    )
    parser.add_argument(
        "--reformat",
        action="store_true",
        help="same records, tab-indented and with the fields of each <user> in another order",
    )
    parser.add_argument("--change-rate", type=float, default=DEFAULT_CHANGE_RATE)
    parser.add_argument("--depart-rate", type=float, default=DEFAULT_DEPART_RATE)
    parser.add_argument("--return-rate", type=float, default=DEFAULT_RETURN_RATE)
    parser.add_argument("--new-rate", type=float, default=DEFAULT_NEW_RATE)
    parser.add_argument("--out", type=Path, help="write the extract (.xml, .xml.gz or .zip)")
    parser.add_argument("--truth", action="store_true", help="print the day's truth as JSON")
    args = parser.parse_args(argv)
    if args.out is None and not args.truth:
        parser.error("give --out PATH, --truth, or both")
    rates = {
        "change_rate": args.change_rate,
        "depart_rate": args.depart_rate,
        "return_rate": args.return_rate,
        "new_rate": args.new_rate,
    }
    try:
        if args.out is not None:
            write_extract(
                args.out,
                patrons=args.patrons,
                day=args.day,
                seed=args.seed,
                root=args.root,
                crlf=args.crlf,
                shuffle=args.shuffle,
                indent=not args.no_indent,
                members=args.members,
                status_date=args.status_date,
                reformat=args.reformat,
                **rates,
            )
        if args.truth:
            result = truth(patrons=args.patrons, day=args.day, seed=args.seed, **rates)
            json.dump(result, sys.stdout, ensure_ascii=False, indent=2)
            sys.stdout.write("\n")
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
