"""Checks on one ``<user>`` record: what Alma would reject, and the safe fixes.

Fixes run first and change the record in place, so the snapshot stores, hashes and sends the
repaired record; the checks then look at what would actually be sent. Messages name fields and
code values, never personal values: findings go to logs and cron mail.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any, cast

from lxml import etree

from ..userxml import FORBIDDEN_MARK, MARKED, parse_alma_date, source_line
from .codes import Policy
from .findings import Finding
from .settings import CODE_FIELDS, CONTACT_FIELDS, CONTACT_PARTS, CheckSettings

DATE_FIELDS = ("birth_date", "expiry_date", "purge_date", "status_date")
CONTROL = re.compile("[\x7f-\x9f]")
REPLACEMENT = "\ufffd"
_SUSPECT = re.compile("[\x7f-\x9f\ufffd\U0010ff00-\U0010ff1f]")
TRUE_VALUES = ("true", "1")


@cache
def alma_schema() -> etree.XMLSchema:
    """Alma's user schema (the 2021 copy shipped in ``deltasync/schema``)."""
    path = resources.files("deltasync.schema") / "rest_users.xsd"
    with resources.as_file(path) as file:
        return etree.XMLSchema(etree.parse(str(file)))


class RecordChecker:
    """Applies one feed's checks to records, one at a time."""

    def __init__(self, settings: CheckSettings, today: dt.date) -> None:
        self.settings = settings
        self.today = today
        self.policy = {code: settings.policy(code) for code in _RECORD_LEVEL}
        self.tables = {
            name: (values, {v.casefold(): v for v in values})
            for name, values in settings.codes.items()
        }
        self.schema = alma_schema() if self.policy["schema-invalid"] != Policy.OFF else None

    def fix(
        self, user: etree._Element, source: str, *, plain: bool = False, line_shift: int = 0
    ) -> _Inspection:
        """Apply the safe fixes to ``user`` in place (every record needs this before its
        digest) and note what they found; :meth:`check` finishes the inspection.

        Findings carry no match ID yet: a fix may change it, so the caller reads it after.
        ``plain`` says the reader saw no byte that could be a suspect character;
        ``line_shift`` is what to add to the element's line numbers to get the file's.
        """
        run = _Inspection(self, user, source, line_shift)
        if not plain:
            run.characters()
        run.empty_dates()
        run.code_values()
        run.preferred()
        return run

    def check(self, run: _Inspection) -> list[Finding]:
        """The checks that only report, for a record about to be sent; every finding."""
        run.dates()
        run.account_type()
        run.repeated_identifiers()
        run.mandatory()
        run.schema()
        return run.findings

    def inspect(self, user: etree._Element, source: str) -> list[Finding]:
        """Fix and check ``user``: every finding."""
        return self.check(self.fix(user, source))


_RECORD_LEVEL = (
    "identifier-repeated",
    "account-not-external",
    "mandatory-missing",
    "email-no-preferred",
    "address-no-preferred",
    "preferred-multiple",
    "date-invalid",
    "date-empty",
    "purge-before-expiry",
    "expired-active",
    "code-unknown",
    "code-case",
    "char-control",
    "char-forbidden",
    "char-replacement",
    "schema-invalid",
)


class _Inspection:
    """The findings of one record, gathered check by check."""

    def __init__(
        self, checker: RecordChecker, user: etree._Element, source: str, line_shift: int = 0
    ) -> None:
        self.checker = checker
        self.user = user
        self.source = source
        self.shift = line_shift
        self.line = self.line_of(user)
        self.findings: list[Finding] = []
        self.flagged: set[str] = set()
        """Paths (as the schema names them) of elements a specific finding covers."""
        self.fields: dict[str, list[etree._Element]] = {}
        """The children of ``<user>`` by name: one walk serves every check (lxml's searches
        cost more than the checks themselves)."""
        for child in user:
            self.fields.setdefault(str(child.tag), []).append(child)
        self.contacts: dict[str, list[etree._Element]] = {}
        self.chosen: dict[str, etree._Element | None] = {}
        self.walked: dict[str, list[etree._Element]] = {}
        self.named: dict[str, dict[str, list[etree._Element]]] = {}

    def line_of(self, element: etree._Element) -> int:
        """The file's line of ``element`` (0 when unknown)."""
        line = source_line(element)
        return line + self.shift if line else 0

    def text(self, name: str) -> str:
        """The text of the first ``<user>`` field called ``name``, stripped."""
        found = self.fields.get(name)
        return (found[0].text or "").strip() if found else ""

    def wants(self, code: str) -> bool:
        return self.checker.policy[code] != Policy.OFF

    def fixes(self, code: str) -> bool:
        return self.checker.policy[code] == Policy.FIX

    def report(
        self, code: str, message: str, at: etree._Element | None = None, *, fixed: bool = False
    ) -> None:
        policy = self.checker.policy[code]
        if policy == Policy.FIX and not fixed:
            policy = Policy.ERROR  # the fix could not be applied to this one
        line = (self.line_of(at) if at is not None else 0) or self.line
        if at is not None:
            self.flagged.add(_path(self.user, at))
        # No match ID yet: the caller reads it after the fixes and fills it in.
        self.findings.append(Finding(code, policy, None, self.source, line, message))

    def characters(self) -> None:
        if not (
            self.wants("char-control")
            or self.wants("char-replacement")
            or self.wants("char-forbidden")
        ):
            return
        if not _SUSPECT.search(etree.tostring(self.user, encoding="unicode")):
            return  # the usual case: one serialisation and one search, no walk
        for element in self.user.iter(tag=etree.Element):
            text = element.text
            if text and _SUSPECT.search(text):
                element.text = self._clean(text, element, _name(element))
            tail = element.tail
            if tail and element is not self.user and _SUSPECT.search(tail):
                cleaned = self._clean(tail, element, f"text after {_name(element)}")
                element.tail = cleaned if cleaned.strip() else None
            for attribute, value in element.attrib.items():
                if _SUSPECT.search(str(value)):
                    where = f"{_name(element)}/@{attribute!s}"
                    element.set(attribute, self._clean(str(value), element, where))

    def _clean(self, text: str, element: etree._Element, where: str) -> str:
        forbidden = MARKED.findall(text)
        if forbidden:
            names = ", ".join(sorted({f"U+{ord(c) - FORBIDDEN_MARK:04X}" for c in forbidden}))
            if self.fixes("char-forbidden"):
                self.report("char-forbidden", f"{where}: removed {names}", element, fixed=True)
                text = MARKED.sub("", text)
            else:  # it cannot be sent, whatever the policy says: the record waits
                self.report("char-forbidden", f"{where} holds {names}, which XML forbids", element)
        if REPLACEMENT in text and self.wants("char-replacement"):
            self.report(
                "char-replacement", f"{where} holds U+FFFD (text damaged upstream)", element
            )
        found = CONTROL.findall(text)
        if not found or not self.wants("char-control"):
            return text
        names = ", ".join(sorted({f"U+{ord(c):04X}" for c in found}))
        if self.fixes("char-control"):
            self.report("char-control", f"{where}: removed {names}", element, fixed=True)
            return CONTROL.sub("", text)
        self.report("char-control", f"{where} holds control character(s) {names}", element)
        return text

    def empty_dates(self) -> None:
        if not self.wants("date-empty"):
            return
        for name in DATE_FIELDS:
            for element in list(self.fields.get(name, ())):
                if (element.text or "").strip() or len(element):
                    continue
                if self.fixes("date-empty"):
                    self.report("date-empty", f"dropped empty <{name}/>", element, fixed=True)
                    self.user.remove(element)
                    self.fields[name].remove(element)
                else:
                    self.report("date-empty", f"<{name}/> is empty", element)

    def code_values(self) -> None:
        for name, (values, folded) in self.checker.tables.items():
            for element in self._find(CODE_FIELDS[name]):
                value = (element.text or "").strip()
                if not value or value in values:
                    continue
                right = folded.get(value.casefold())
                if right is not None:
                    if not self.wants("code-case"):
                        continue
                    if self.fixes("code-case"):
                        element.text = right
                        self.report(
                            "code-case",
                            f"{name} {value!r} written as {right!r}",
                            element,
                            fixed=True,
                        )
                    else:
                        self.report("code-case", f"{name} {value!r} should be {right!r}", element)
                elif self.wants("code-unknown"):
                    self.report(
                        "code-unknown", f"{name} {value!r} is not in the code table", element
                    )

    def _find(self, path: str) -> list[etree._Element]:
        """The elements at ``path`` below ``<user>``, starting from the indexed children.

        Deeper paths are walked once per record: the fixes change texts and attributes, never
        which elements stand below ``contact_info`` or ``user_identifiers``."""
        first, _, rest = path.partition("/")
        if not rest:
            return self.fields.get(first, [])
        walked = self.walked.get(path)
        if walked is None:
            found = _xpath(path)(self.user)
            assert isinstance(found, list)
            walked = self.walked[path] = cast(list[etree._Element], found)
        return walked

    def _children(self, kind: str, contact: etree._Element) -> dict[str, list[etree._Element]]:
        """The children of the chosen contact of ``kind`` by name (built once)."""
        named = self.named.get(kind)
        if named is None:
            named = self.named[kind] = {}
            for child in contact:
                named.setdefault(str(child.tag), []).append(child)
        return named

    def preferred(self) -> None:
        for kind, (path, _field) in CONTACT_FIELDS.items():
            items = self.contacts[kind] = self._find(path)
            chosen = [i for i in items if i.get("preferred", "").strip() in TRUE_VALUES]
            missing_code = f"{kind}-no-preferred"
            if items and not chosen and missing_code in self.checker.policy:
                if not self.wants(missing_code):
                    continue
                if self.fixes(missing_code):
                    items[0].set("preferred", "true")
                    self.report(
                        missing_code, f"marked the first {kind} preferred", items[0], fixed=True
                    )
                else:
                    self.report(missing_code, f"no {kind} is preferred", items[0])
            elif len(chosen) > 1 and self.wants("preferred-multiple"):
                if self.fixes("preferred-multiple"):
                    for extra in chosen[1:]:
                        extra.set("preferred", "false")
                    self.report(
                        "preferred-multiple",
                        f"{len(chosen)} {kind}s were preferred; kept the first",
                        chosen[1],
                        fixed=True,
                    )
                else:
                    self.report(
                        "preferred-multiple", f"{len(chosen)} {kind}s are preferred", chosen[1]
                    )

    def dates(self) -> None:
        parsed: dict[str, dt.date] = {}
        for name in DATE_FIELDS:
            for element in self.fields.get(name, ()):
                text = (element.text or "").strip()
                if not text:
                    continue  # empty: date-empty's business
                value = parse_alma_date(text)
                if value is None:
                    if self.wants("date-invalid"):
                        self.report(
                            "date-invalid",
                            f"{name} is not a date like 2027-06-30Z",
                            element,
                        )
                else:
                    parsed[name] = value
        expiry, purge = parsed.get("expiry_date"), parsed.get("purge_date")
        if expiry and purge and purge < expiry and self.wants("purge-before-expiry"):
            self.report(
                "purge-before-expiry",
                "purge_date is before expiry_date",
                self.fields["purge_date"][0],
            )
        status = (self.text("status") or "ACTIVE").upper()
        if expiry and expiry < self.checker.today and status == "ACTIVE":
            if self.wants("expired-active"):
                self.report(
                    "expired-active",
                    "active, but expiry_date has passed",
                    self.fields["expiry_date"][0],
                )

    def account_type(self) -> None:
        element = self.fields.get("account_type", [None])[0]
        value = self.text("account_type")
        if value and value.upper() != "EXTERNAL" and self.wants("account-not-external"):
            self.report(
                "account-not-external",
                f"account_type is {value!r}; Alma loads only EXTERNAL users from an SIS",
                element,
            )

    def repeated_identifiers(self) -> None:
        if not self.wants("identifier-repeated"):
            return
        seen: dict[str, str] = {}
        primary = self.text("primary_id")
        if primary:
            seen[primary.casefold()] = "the primary ID"
        for identifier in self._find("user_identifiers/user_identifier"):
            value = (identifier.findtext("value") or "").strip()
            id_type = (identifier.findtext("id_type") or "?").strip()
            if not value:
                continue
            earlier = seen.get(value.casefold())
            if earlier is not None:
                self.report(
                    "identifier-repeated",
                    f"identifier of type {id_type} repeats the value of {earlier}",
                    identifier,
                )
            else:
                seen[value.casefold()] = f"the {id_type} identifier"

    def mandatory(self) -> None:
        if not self.wants("mandatory-missing"):
            return
        missing = [name for name in self.checker.settings.mandatory if not self._present(name)]
        # 'address' missing makes every 'address.*' missing: name only the whole.
        gone = {name for name in missing if name in CONTACT_FIELDS}
        for name in missing:
            if "." in name and name.split(".")[0] in gone:
                continue
            self.report("mandatory-missing", f"mandatory field missing: {name}")

    def _present(self, name: str) -> bool:
        if name.startswith("identifier:"):
            id_type = name.split(":", 1)[1]
            return any(
                (i.findtext("id_type") or "").strip() == id_type
                and (i.findtext("value") or "").strip()
                for i in self._find("user_identifiers/user_identifier")
            )
        kind, _, part = name.partition(".")
        if kind in CONTACT_FIELDS:
            contact = self._preferred(kind)
            if contact is None:
                return False
            path = CONTACT_PARTS.get(part, part) if part else CONTACT_FIELDS[kind][1]
            if "/" in path:
                return any((e.text or "").strip() for e in contact.iterfind(path))
            return any((e.text or "").strip() for e in self._children(kind, contact).get(path, ()))
        return any((e.text or "").strip() for e in self.fields.get(name, ()))

    def _preferred(self, kind: str) -> etree._Element | None:
        if kind not in self.chosen:
            items = self.contacts[kind]
            preferred = [i for i in items if i.get("preferred", "").strip() in TRUE_VALUES]
            self.chosen[kind] = preferred[0] if preferred else (items[0] if items else None)
        return self.chosen[kind]

    def schema(self) -> None:
        schema = self.checker.schema
        if schema is None or schema.validate(self.user):
            return
        for error in cast(Iterable[Any], schema.error_log):
            if error.path in self.flagged:
                continue  # a specific finding already names this field
            self.flagged.add(error.path)
            self.findings.append(
                Finding(
                    "schema-invalid",
                    self.checker.policy["schema-invalid"],
                    None,
                    self.source,
                    (error.line + self.shift if error.line else 0) or self.line,
                    redact(error.message),
                )
            )


_VALUES = re.compile(r"'[^']*'(?= is not a valid value)|(?<=The value )'[^']*'")


def redact(message: str) -> str:
    """A schema message without the value it quotes: findings go to logs and mail."""
    return _VALUES.sub("(the value)", message)


@cache
def _xpath(path: str) -> etree.XPath:
    """``path`` (child steps only) compiled: the elements in document order, as walking the
    steps gives them, in a third of the time of ``iterfind``."""
    return etree.XPath(path)


def _name(element: etree._Element) -> str:
    return str(element.tag)


def _path(user: etree._Element, element: etree._Element) -> str:
    """``/user/contact_info/...``: the path lxml's schema errors give for ``element``."""
    return str(etree.ElementTree(user).getpath(element))
