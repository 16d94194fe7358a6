"""The report's charts as inline SVG: drawn here, no script and nothing fetched.

Every value that reaches the markup is escaped. Each bar and mark carries its numbers as
``data-*`` attributes and a ``<title>`` (the browser's tooltip), so the numbers can be read
back from the page, by a person hovering and by the tests.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from .jinja import duration as _duration
from .period import CodeDay, Day, Span

SERIES = (
    ("new", "new", "#4c78a8"),
    ("changed", "changed", "#9d75c7"),
    ("returned", "returned", "#54a24b"),
    ("departed", "departed", "#f58518"),
    ("held_back", "held back", "#e45756"),
)
LIMITS = (
    ("max_changes", "max_changes (guard)", "#6a3d9a"),
    ("max_departures", "max_departures (guard)", "#b35806"),
)
STAGES = {
    "built": ("built, not yet uploaded", "#bab0ac"),
    "waiting": ("uploaded, waiting for Alma's pickup", "#eeca3b"),
    "picked": ("picked up, awaiting Alma's result", "#72b7b2"),
}
MARKS = {
    "confirmed": ("confirmed", "#2e7d32"),
    "failed": ("failed", "#d62728"),
    "superseded": ("taken back unread", "#7f7f7f"),
    "attempt": ("failed attempt", "#d62728"),
}
CODE_COLOURS = (
    "#8c6d31",
    "#e7ba52",
    "#ad494a",
    "#a55194",
    "#6b6ecf",
    "#637939",
    "#bd9e39",
    "#843c39",
)
WIDTH = 900
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 14, 34


def _attrs(**values: object) -> str:
    return "".join(
        f' {name.rstrip("_").replace("_", "-")}="{escape(str(value), quote=True)}"'
        for name, value in values.items()
        if value is not None
    )


def _tag(name: str, body: str = "", **values: object) -> str:
    return f"<{name}{_attrs(**values)}>{body}</{name}>"


def _title(text: str) -> str:
    return _tag("title", escape(text))


@dataclass(frozen=True)
class _Axis:
    """A linear scale from values to pixels."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        if self.high == self.low:
            return self.start
        return self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start)


def nice_ceiling(value: float) -> int:
    """The smallest 1, 2, 2.5 or 5 × 10ⁿ at least ``value`` (at least 1)."""
    if value <= 1:
        return 1
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exponent:
            return max(1, int(math.ceil(step * exponent)))
    return math.ceil(value)


def daily_bars(days: Sequence[Day], *, height: int = 240) -> Markup:
    """Stacked bars of each day's new, changed, returned, departed and held-back patrons, with
    the guard limits drawn as dashed lines (a limit far above the bars is named, not drawn)."""
    tallest = max((sum(d.count(k) for k, _l, _c in SERIES) for d in days), default=0)
    limits = [v for d in days for v in (d.max_changes, d.max_departures) if v is not None]
    # A limit within twice the tallest bar is worth the scale; one far above would flatten
    # every bar, so it is only named in the legend.
    shown = [v for v in limits if v <= 2 * max(tallest, 1)]
    top = nice_ceiling(max([tallest, *shown, 1]))
    plot = _Plot(len(days), height, top)
    parts = [plot.grid()]
    for index, day in enumerate(days):
        base = 0
        for kind, label, colour in SERIES:
            count = day.count(kind)
            if not count:
                continue
            y0, y1 = plot.y(base), plot.y(base + count)
            parts.append(
                _tag(
                    "rect",
                    _title(f"{day.date}: {count} {label}"),
                    class_="bar",
                    x=f"{plot.x(index) + 1:.1f}",
                    y=f"{y1:.1f}",
                    width=f"{max(plot.band - 2, 1):.1f}",
                    height=f"{max(y0 - y1, 1):.1f}",
                    fill=colour,
                    data_date=day.date.isoformat(),
                    data_kind=kind,
                    data_count=count,
                )
            )
            base += count
    off_scale: list[str] = []
    for key, label, colour in LIMITS:
        points = [(i, getattr(d, key)) for i, d in enumerate(days) if getattr(d, key) is not None]
        visible = [(i, v) for i, v in points if v <= top]
        if points and len(visible) < len(points):
            off_scale.append(f"{label} {max(v for _i, v in points)}: above the scale")
        for i, value in visible:
            y = plot.y(value)
            parts.append(
                _tag(
                    "line",
                    _title(f"{days[i].date}: {label} {value}"),
                    class_="limit",
                    x1=f"{plot.x(i):.1f}",
                    x2=f"{plot.x(i) + plot.band:.1f}",
                    y1=f"{y:.1f}",
                    y2=f"{y:.1f}",
                    stroke=colour,
                    stroke_width=2,
                    stroke_dasharray="5 3",
                    data_date=days[i].date.isoformat(),
                    data_limit=key,
                    data_value=value,
                )
            )
    parts.append(plot.date_labels([d.date for d in days]))
    legend = [(label, colour, "bar") for _k, label, colour in SERIES]
    legend += [(label, colour, "line") for _k, label, colour in LIMITS]
    return _svg(
        "daily",
        f"Patrons per day: {', '.join(label for _k, label, _c in SERIES)}",
        height,
        parts,
        legend,
        notes=off_scale,
    )


def code_bars(days: Sequence[dt.date], codes: Sequence[CodeDay], *, height: int = 200) -> Markup:
    """Stacked bars per day of records held back by each check code and of patrons Alma
    rejected for each reason."""
    names = list(dict.fromkeys(f"{c.kind}: {c.code}" for c in codes))
    colours = {name: CODE_COLOURS[i % len(CODE_COLOURS)] for i, name in enumerate(names)}
    per_day: dict[dt.date, list[CodeDay]] = {}
    for code in codes:
        per_day.setdefault(code.date, []).append(code)
    tallest = max((sum(c.count for c in rows) for rows in per_day.values()), default=0)
    plot = _Plot(len(days), height, nice_ceiling(max(tallest, 1)))
    parts = [plot.grid()]
    for index, day in enumerate(days):
        base = 0
        for code in per_day.get(day, []):
            name = f"{code.kind}: {code.code}"
            y0, y1 = plot.y(base), plot.y(base + code.count)
            parts.append(
                _tag(
                    "rect",
                    _title(f"{day}: {code.count} {name}"),
                    class_="bar",
                    x=f"{plot.x(index) + 1:.1f}",
                    y=f"{y1:.1f}",
                    width=f"{max(plot.band - 2, 1):.1f}",
                    height=f"{max(y0 - y1, 1):.1f}",
                    fill=colours[name],
                    data_date=day.isoformat(),
                    data_kind=code.kind,
                    data_code=code.code,
                    data_count=code.count,
                )
            )
            base += code.count
    parts.append(plot.date_labels(list(days)))
    legend = [(name, colours[name], "bar") for name in names]
    notes = [] if names else ["nothing held back or rejected in this period"]
    return _svg(
        "codes", "Held back and rejected records by code, per day", height, parts, legend, notes
    )


def timeline(spans: Sequence[Span], start: dt.datetime, end: dt.datetime) -> Markup:
    """One row per batch: built → uploaded → picked up → confirmed on a time axis, with the
    waiting time, failed attempts, failures and take-backs marked."""
    row = 22
    height = TOP + BOTTOM + row * max(len(spans), 1)
    left = 120
    axis = _Axis(start.timestamp(), end.timestamp(), left, WIDTH - RIGHT - 70)
    parts: list[str] = [_time_grid(axis, start, end, height)]
    for index, span in enumerate(spans):
        y = TOP + index * row + 4
        mid = y + (row - 8) / 2
        parts.append(
            _tag(
                "text",
                escape(f"batch {span.seq} ({span.records})"),
                x=left - 8,
                y=f"{mid + 4:.1f}",
                text_anchor="end",
                class_="label",
            )
        )
        for stage, begin, finish in _stages(span, end):
            label, colour = STAGES[stage]
            x0, x1 = axis(max(begin, start).timestamp()), axis(min(finish, end).timestamp())
            parts.append(
                _tag(
                    "rect",
                    _title(f"batch {span.seq}: {label}, {_duration(finish - begin)}"),
                    class_="stage",
                    x=f"{x0:.1f}",
                    y=f"{y:.1f}",
                    width=f"{max(x1 - x0, 3):.1f}",
                    height=row - 8,
                    fill=colour,
                    data_batch=span.seq,
                    data_stage=stage,
                )
            )
        parts += _marks(span, axis, start, end, mid)
        waited = span.waited
        if waited is not None:
            parts.append(
                _tag(
                    "text",
                    escape(f"waited {_duration(waited)}"),
                    x=WIDTH - RIGHT,
                    y=f"{mid + 4:.1f}",
                    text_anchor="end",
                    class_="label",
                    data_batch=span.seq,
                    data_waited=int(waited.total_seconds()),
                )
            )
    legend = [(label, colour, "bar") for label, colour in STAGES.values()]
    legend += [(label, colour, f"mark {name}") for name, (label, colour) in MARKS.items()]
    notes = [] if spans else ["no batch in this period"]
    return _svg(
        "batches", "Batches: built, uploaded, picked up, confirmed", height, parts, legend, notes
    )


def _stages(span: Span, now: dt.datetime) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """The stretches of a batch's life: (stage, from, to)."""
    ends = span.resolved_at or now
    found: list[tuple[str, dt.datetime, dt.datetime]] = []
    uploaded = span.uploaded_at
    found.append(("built", span.created_at, uploaded or ends))
    if uploaded is not None:
        found.append(("waiting", uploaded, span.picked_up_at or ends))
    if span.picked_up_at is not None:
        found.append(("picked", span.picked_up_at, ends))
    return [(stage, a, b) for stage, a, b in found if b >= a]


def _marks(span: Span, axis: _Axis, start: dt.datetime, end: dt.datetime, y: float) -> list[str]:
    marks: list[str] = []
    for at in span.failed_attempts:
        if start <= at <= end:
            x = axis(at.timestamp())
            marks.append(
                _tag(
                    "line",
                    _title(f"batch {span.seq}: failed attempt at {at:%Y-%m-%d %H:%M}Z"),
                    class_="mark",
                    x1=f"{x:.1f}",
                    x2=f"{x:.1f}",
                    y1=f"{y - 9:.1f}",
                    y2=f"{y + 9:.1f}",
                    stroke=MARKS["attempt"][1],
                    stroke_width=2,
                    data_batch=span.seq,
                    data_mark="attempt",
                )
            )
    if span.resolved_at is None or span.status not in MARKS:
        return marks
    label, colour = MARKS[span.status]
    x = axis(min(max(span.resolved_at, start), end).timestamp())
    title = _title(f"batch {span.seq}: {label} at {span.resolved_at:%Y-%m-%d %H:%M}Z")
    common = {"class_": "mark", "data_batch": span.seq, "data_mark": span.status}
    if span.status == "failed":
        a, b = f"{x - 6:.1f}", f"{x + 6:.1f}"
        d = f"M{a},{y - 6:.1f} L{b},{y + 6:.1f} M{b},{y - 6:.1f} L{a},{y + 6:.1f}"
        marks.append(_tag("path", title, d=d, stroke=colour, stroke_width=3, **common))
    elif span.status == "superseded":
        marks.append(
            _tag("rect", title, x=f"{x - 5:.1f}", y=f"{y - 5:.1f}", width=10, height=10,
                 fill="none", stroke=colour, stroke_width=3, **common)
        )  # fmt: skip
    else:
        marks.append(
            _tag("circle", title, cx=f"{x:.1f}", cy=f"{y:.1f}", r=6, fill=colour, **common)
        )
    return marks


class _Plot:
    """The frame of a bar chart: ``bands`` equal columns under a count axis up to ``top``."""

    def __init__(self, bands: int, height: int, top: int) -> None:
        self.height = height
        self.top = top
        self.band = (WIDTH - LEFT - RIGHT) / max(bands, 1)
        self.y = _Axis(0, top, height - BOTTOM, TOP)

    def x(self, index: int) -> float:
        return LEFT + index * self.band

    def grid(self) -> str:
        lines: list[str] = []
        for value in sorted({0, self.top // 2 if self.top >= 2 else 0, self.top}):
            y = self.y(value)
            lines.append(
                _tag("line", x1=LEFT, x2=WIDTH - RIGHT, y1=f"{y:.1f}", y2=f"{y:.1f}", class_="grid")
            )
            lines.append(
                _tag(
                    "text",
                    str(value),
                    x=LEFT - 6,
                    y=f"{y + 4:.1f}",
                    text_anchor="end",
                    class_="label",
                )
            )
        return "".join(lines)

    def date_labels(self, dates: list[dt.date]) -> str:
        if not dates:
            return ""
        step = max(1, math.ceil(len(dates) / 8))
        last = len(dates) - 1
        # The last day is labelled too, unless it would run into the label before it.
        shown = {i for i in range(0, len(dates), step)}
        if last - max(shown) >= step / 2:
            shown.add(last)
        labels = [
            _tag(
                "text",
                escape(day.strftime("%b %d")),
                x=f"{self.x(i) + self.band / 2:.1f}",
                y=self.height - BOTTOM + 18,
                text_anchor="middle",
                class_="label",
            )
            for i, day in enumerate(dates)
            if i in shown
        ]
        return "".join(labels)


def _time_grid(axis: _Axis, start: dt.datetime, end: dt.datetime, height: int) -> str:
    parts: list[str] = []
    day = dt.datetime.combine(start.date(), dt.time(), start.tzinfo) + dt.timedelta(days=1)
    total = max(1, (end - start).days)
    step = max(1, math.ceil(total / 10))
    n = 0
    while day <= end:
        x = axis(day.timestamp())
        parts.append(
            _tag("line", x1=f"{x:.1f}", x2=f"{x:.1f}", y1=TOP, y2=height - BOTTOM, class_="grid")
        )
        if n % step == 0:
            parts.append(
                _tag("text", escape(day.strftime("%b %d")), x=f"{x:.1f}", y=height - BOTTOM + 18,
                     text_anchor="middle", class_="label")
            )  # fmt: skip
        day += dt.timedelta(days=1)
        n += 1
    return "".join(parts)


def _svg(
    name: str,
    title: str,
    height: int,
    parts: Iterable[str],
    legend: Sequence[tuple[str, str, str]],
    notes: Sequence[str] = (),
) -> Markup:
    keys: list[str] = []
    for label, colour, shape in legend:
        if shape == "bar":
            swatch = f'<span class="swatch" style="background: {escape(colour)}"></span>'
        else:  # a dashed line, or a mark of the timeline (its shape is the CSS class's)
            swatch = f'<span class="swatch {escape(shape)}" style="color: {escape(colour)}"></span>'
        keys.append(f"<li>{swatch}{escape(label)}</li>")
    notes_html = "".join(f'<p class="note">{escape(note)}</p>' for note in notes)
    body = "".join(parts)
    return Markup(
        f'<figure class="chart" data-chart="{escape(name)}">'
        f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        f'aria-label="{escape(title, quote=True)}">{_title(title)}{body}</svg>'
        f'<ul class="legend">{"".join(keys)}</ul>{notes_html}</figure>'
    )
