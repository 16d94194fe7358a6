"""The templates of the HTML report and the e-mail: Jinja2, autoescaped.

Every value a template prints is escaped, so a match ID or a file name can never add markup;
only the charts, which :mod:`svg` builds with every value escaped, are marked safe.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jinja2 import Environment


@cache
def environment() -> Environment:
    """The shared template environment (templates ship inside the package)."""
    # Imported here: every command starts faster without it, and only reports need it.
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("deltasync.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["local"] = local_time
    env.filters["duration"] = duration
    env.filters["basename"] = lambda path: str(path).replace("\\", "/").rsplit("/", 1)[-1]
    return env


def local_time(moment: dt.datetime | None, timezone: dt.tzinfo = dt.UTC) -> str:
    """``2027-01-05 05:00 CST``: the feed's own clock, which is what staff read."""
    if moment is None:
        return "never"
    return moment.astimezone(timezone).strftime("%Y-%m-%d %H:%M %Z").strip()


def duration(delta: dt.timedelta | None) -> str:
    """``2d 4h``, ``5h 07m``; empty for None."""
    if delta is None:
        return ""
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return f"{days}d {hours}h" if days else f"{hours}h {minutes:02d}m"
