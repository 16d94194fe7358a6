"""A deterministic Banner-style population as CSV (and as SQL rows), with churn between days.

Day 0 holds people 0..N-1 at version 0. Every later day changes some (each change alters what
the mapping renders: last name, address, home e-mail, term end or department), removes some
and adds some; the rows come shuffled. ``truth`` says exactly what changed on a day.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import count_calls

from deltasync.mapping.render import Renderer

COLUMNS = [
    "NETID",
    "FIRST",
    "PREF_FIRST",
    "LAST",
    "CLASS",
    "TERM_END",
    "CAMPUS_EMAIL",
    "HOME_EMAIL",
    "ADDR1",
    "ADDR2",
    "CITY",
    "STATE",
    "ZIP",
    "PHONE",
    "BARCODE",
    "DEPT",
]
FIRST = ["Jane", "María", "François", "Zoë", "Søren", "Œdipe", "Šárka", "Željko", "Amir", "Li"]
LAST = ["Doe", "Núñez", "Bjørk", "Müller", "O'Brien", "Ågård", "Dvorák", "Smith", "García"]
CLASSES = ["FR", "SO", "JR", "SR", "GR"]
DEPTS = ["HIST", "MATH", "CHEM", "ENGL"]
STREETS = ["Elm St", "Green St", "Oak Ave, Apt 3", 'Lincoln "Old" Sq', "Main St"]


def netid(number: int) -> str:
    return f"S{number:06d}"


def row(number: int, version: int) -> list[str]:
    """The row of person ``number`` at ``version``: every version renders differently."""
    rng = random.Random(f"person-{number}")
    first = rng.choice(FIRST)
    last = rng.choice(LAST)
    pref = rng.choice(["", "", "Sam"])
    klass = rng.choice(CLASSES)
    dept = rng.choice(DEPTS)
    street = rng.choice(STREETS)
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    phone = rng.choice(["", f"217-555-{number % 10000:04d}"])
    home = f"{first.lower()}.{number}@example.com" if rng.random() < 0.7 else ""
    aspect = version % 5
    if version:
        # Each version changes one thing the mapping renders.
        if aspect == 1:
            last = f"{last}-{version}"
        elif aspect == 2:
            street = f"{street} {version}"
        elif aspect == 3:
            home = f"v{version}.{number}@example.org"
        elif aspect == 4:
            day = day + 1
        else:
            dept = DEPTS[(DEPTS.index(dept) + version) % len(DEPTS)]
            last = f"{last}+{version}"
    line2 = "" if number % 3 else f"Room {number % 50}\nNorth wing"
    return [
        netid(number),
        first,
        pref,
        last,
        klass,
        f"{month:02d}/{day:02d}/2031",
        f"{netid(number).lower()}@example.edu",
        home,
        f"{number} {street}",
        line2,
        "Urbana",
        "IL",
        f"618{number % 100:02d}",
        phone,
        f"2123400{number:07d}",
        dept,
    ]


@dataclass
class Day:
    """Who is present on a day, at which version; and what changed against the day before."""

    versions: dict[int, int]
    new: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    departed: set[str] = field(default_factory=set)


def simulate(people: int, days: int, *, seed: int = 1) -> list[Day]:
    """Day 0 .. days-1 of a population of ``people``."""
    state = Day({n: 0 for n in range(people)}, new={netid(n).lower() for n in range(people)})
    out = [state]
    next_number = people
    for day in range(1, days):
        rng = random.Random(f"{seed}-day-{day}")
        versions = dict(state.versions)
        present = sorted(versions)
        leaving = set(rng.sample(present, max(1, people // 20)))
        staying = [n for n in present if n not in leaving]
        changing = set(rng.sample(staying, max(1, people // 10)))
        for n in leaving:
            del versions[n]
        for n in changing:
            versions[n] += 1
        arriving = list(range(next_number, next_number + max(1, people // 15)))
        next_number += len(arriving)
        for n in arriving:
            versions[n] = 0
        state = Day(
            versions,
            new={netid(n).lower() for n in arriving},
            changed={netid(n).lower() for n in changing},
            departed={netid(n).lower() for n in leaving},
        )
        out.append(state)
    return out


def rows_of(day: Day, *, shuffle: int | None = None) -> list[list[str]]:
    """The day's rows, in a shuffled order (drawn from ``shuffle``) or by number."""
    rows = [row(n, v) for n, v in sorted(day.versions.items())]
    if shuffle is not None:
        random.Random(shuffle).shuffle(rows)
    return rows


def write_csv(
    path: Path,
    rows: list[list[str]],
    *,
    encoding: str = "cp1252",
    quoting: int = csv.QUOTE_MINIMAL,
    delimiter: str = ",",
    end: str = "\r\n",
) -> Path:
    """Write a header and ``rows`` the way Banner's export would (CRLF line ends, unless
    ``end`` says otherwise)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, quoting=quoting, lineterminator=end)
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


MAPPING = Path(__file__).resolve().parent.parent / "examples" / "banner" / "mapping.toml"


def csv_config(write_config: Callable[..., Path], url: str, **feed: object) -> Path:
    """A configuration of one CSV feed with the Banner mapping (``feed`` overrides)."""
    return write_config(
        url,
        feed={
            "source": "csv",
            "mapping": str(MAPPING),
            "timezone": "UTC",
            "departure": {"max_departures": "100%", "max_changes": "100%"},
            **feed,
        },
    )


def count_renders(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one each time a row is rendered through a mapping."""
    return count_calls(monkeypatch, Renderer, "render")
