"""A row (its columns by name) rendered through a mapping into an Alma ``<user>`` element.

The rules a librarian expects without writing them: values are trimmed (a value of only
spaces is empty) and a line break inside a value is one LF; an empty field is left out; a
segment whose main value is empty is left out (Alma rejects an empty statistic or
identifier); the first kept email, address and phone is ``preferred="true"`` unless the
mapping sets ``preferred``; an identifier equal to the primary ID is left out (Alma rejects
it); characters XML cannot hold (C0 controls) are removed and reported. What an expression
cannot map is a finding with the row and the field's columns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping as MappingType
from dataclasses import dataclass

from lxml import etree

from ..checks.codes import Policy
from ..checks.findings import Finding
from ..checks.settings import CheckSettings
from .jinja import Problem
from .spec import Expression, Mapping, Segment

FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
"""Characters XML 1.0 cannot hold: they are removed (``char-control``)."""
CONTACT = ("address", "email", "phone")
WRAPPERS = {
    "address": "addresses",
    "email": "emails",
    "phone": "phones",
    "identifier": "user_identifiers",
    "statistic": "user_statistics",
    "note": "user_notes",
}
ELEMENTS = {
    "address": "address",
    "email": "email",
    "phone": "phone",
    "identifier": "user_identifier",
    "statistic": "user_statistic",
    "note": "user_note",
}
MAPPING_CODES = ("map-code-unknown", "map-date-invalid", "map-render-error", "char-control")

Row = MappingType[str, object]


@dataclass(frozen=True)
class Where:
    """Where a row stands, for findings."""

    source: str
    line: int
    row: int


class Renderer:
    """Renders rows through one mapping, reporting under one feed's policies."""

    def __init__(self, mapping: Mapping, settings: CheckSettings) -> None:
        self.mapping = mapping
        self.policy = {code: settings.policy(code) for code in MAPPING_CODES}

    def render(self, row: Row, where: Where) -> tuple[etree._Element, list[Finding]]:
        """The ``<user>`` element of ``row`` and what mapping it found."""
        # Columns by name, and all of them as ``row`` for names that are no identifiers
        # ("First Name", "contact/email"): ``row['First Name']``.
        context = dict(row)
        context.setdefault("row", row)
        run = _Run(self, {**self.mapping.globals, **context}, where)
        user = etree.Element("user")
        values = {e.name.removeprefix("user."): run.value(e) for e in self.mapping.user}
        for name, text in values.items():
            if text:
                etree.SubElement(user, name).text = text
        primary = values.get("primary_id", "").casefold()
        kept: dict[str, list[dict[str, str]]] = {kind: [] for kind in WRAPPERS}
        for segment in self.mapping.segments:
            fields = run.segment(segment)
            main = fields.get(segment.kind.main, "")
            if not main:
                continue
            if segment.kind.name == "identifier" and main.casefold() == primary:
                continue
            kept[segment.kind.name].append(fields)
        contact = [kind for kind in CONTACT if kept[kind]]
        if contact:
            info = etree.SubElement(user, "contact_info")
            for kind in contact:
                self._segments(etree.SubElement(info, WRAPPERS[kind]), kind, kept[kind])
        for kind in ("identifier", "note", "statistic"):
            if kept[kind]:
                self._segments(etree.SubElement(user, WRAPPERS[kind]), kind, kept[kind])
        for element in user.iter():
            # Findings of the checks name the row's line: the record shifts line 1 there.
            element.sourceline = 1  # type: ignore[assignment]  # lxml-stubs: read-only
        return user, run.findings

    def _segments(self, parent: etree._Element, kind: str, entries: list[dict[str, str]]) -> None:
        spec = next(s.kind for s in self.mapping.segments if s.kind.name == kind)
        chosen = any("preferred" in e for e in entries)
        for number, fields in enumerate(entries):
            element = etree.SubElement(parent, ELEMENTS[kind])
            for attribute in spec.attributes:
                if attribute in fields:
                    element.set(attribute, fields[attribute].lower())
                elif attribute == "preferred" and spec.preferred and not chosen:
                    element.set("preferred", "true" if number == 0 else "false")
            for name in spec.fields:
                text = fields.get(name)
                if text:
                    etree.SubElement(element, name).text = text
            typed = fields.get(spec.typed or "")
            if spec.typed and typed:
                types = etree.SubElement(element, f"{spec.typed}s")
                etree.SubElement(types, spec.typed).text = typed


class _Run:
    """The rendering of one row: its values and findings."""

    def __init__(self, renderer: Renderer, names: dict[str, object], where: Where) -> None:
        self.policy = renderer.policy
        # What every expression of the row sees: the environment's globals and the columns.
        # One dict for all of them: ``Template.render`` would copy it for each expression.
        self.names = names
        self.where = where
        self.findings: list[Finding] = []

    def segment(self, segment: Segment) -> dict[str, str]:
        found = {name: self.value(e) for name, e in segment.fields.items()}
        return {name: text for name, text in found.items() if text}

    def value(self, expression: Expression) -> str:
        if expression.constant is not None:
            return expression.constant
        template = expression.template
        assert template is not None
        try:
            # ``render`` without its per-call copy of the names; an error is not rewritten
            # into a template traceback, which only the finding's kind is taken from anyway.
            context = template.new_context(self.names, shared=True)
            text = "".join(template.root_render_func(context))
        except Problem as problem:
            self.add(problem.code, expression, str(problem))
            return ""
        except Exception as exc:  # noqa: BLE001 - the expression is the campus's code
            # Only the kind of error: its text may quote a personal value.
            self.add("map-render-error", expression, _described(exc))
            return ""
        text = text.strip()
        if "\r" in text:
            # A line break inside a quoted field, as Windows writes it: one XML line end.
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if FORBIDDEN.search(text):
            found = sorted({f"U+{ord(c):04X}" for c in FORBIDDEN.findall(text)})
            self.add("char-control", expression, f"removed {', '.join(found)}")
            text = FORBIDDEN.sub("", text).strip()
        return text

    def add(self, code: str, expression: Expression, message: str) -> None:
        policy = self.policy[code]
        if policy == Policy.OFF:
            return
        columns = f" (column {', '.join(expression.columns)})" if expression.columns else ""
        self.findings.append(
            Finding(
                code,
                policy,
                None,
                self.where.source,
                self.where.line,
                f"row {self.where.row}, {expression.name}{columns}: {message}",
            )
        )


def _described(exc: Exception) -> str:
    from jinja2 import UndefinedError
    from jinja2.exceptions import SecurityError

    if isinstance(exc, UndefinedError | SecurityError):
        return f"the expression failed: {exc}"
    return f"the expression failed ({type(exc).__name__})"
