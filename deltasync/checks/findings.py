"""Findings and the report that tallies them, the way Alma's job report would."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .codes import Policy

DETAIL_LIMIT = 10_000
"""Findings kept in full per report; beyond it only the counts grow (memory stays bounded)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one record: its code, what was done about it, and where it is."""

    code: str
    policy: Policy
    match_id: str | None
    source: str
    line: int
    message: str

    @property
    def where(self) -> str:
        """``file, line N`` for messages."""
        return f"{self.source}, line {self.line}"

    def as_json(self) -> dict[str, Any]:
        """The finding as the ``--json`` outputs give it."""
        return {
            "code": self.code,
            "policy": self.policy.value,
            "match_id": self.match_id,
            "source": self.source,
            "line": self.line,
            "message": self.message,
        }


@dataclass
class Report:
    """The findings of one run or one ``check``: exact counts, details up to a limit."""

    findings: list[Finding] = field(default_factory=list)
    counts: Counter[tuple[str, Policy]] = field(default_factory=Counter)
    limit: int = DETAIL_LIMIT

    def add(self, findings: Iterable[Finding]) -> None:
        """Count these findings and keep their details while under the limit."""
        for finding in findings:
            self.counts[(finding.code, finding.policy)] += 1
            if len(self.findings) < self.limit:
                self.findings.append(finding)

    @property
    def total(self) -> int:
        """How many findings there were, kept or not."""
        return sum(self.counts.values())

    @property
    def truncated(self) -> bool:
        """Whether some findings were counted but not kept."""
        return self.total > len(self.findings)

    def count(self, policy: Policy) -> int:
        """How many findings had this policy applied."""
        return sum(n for (_code, p), n in self.counts.items() if p == policy)

    def by_code(self) -> list[tuple[str, Policy, int]]:
        """``(code, policy, count)`` rows, most frequent first."""
        rows = [(code, policy, n) for (code, policy), n in self.counts.items()]
        return sorted(rows, key=lambda row: (-row[2], row[0], row[1].value))

    def as_json(self) -> dict[str, Any]:
        """The findings part of ``run --json`` and ``check --json``."""
        return {
            "counts": [
                {"code": code, "policy": policy.value, "count": n}
                for code, policy, n in self.by_code()
            ],
            "errors": self.count(Policy.ERROR),
            "warnings": self.count(Policy.WARN),
            "fixed": self.count(Policy.FIX),
            "findings": [f.as_json() for f in self.findings],
            "truncated": self.truncated,
        }


def summary_lines(report: Report, *, details: int | None = None) -> list[str]:
    """The report as text: totals, counts per code, then each finding (up to ``details``)."""
    if not report.total:
        return ["checks: no findings"]
    lines = [
        f"checks: {report.count(Policy.ERROR)} error(s), held back; "
        f"{report.count(Policy.WARN)} warning(s), sent; {report.count(Policy.FIX)} fixed"
    ]
    width = max(len(code) for code, _policy, _n in report.by_code())
    lines += [
        f"  {code:<{width}}  {policy.value:<5}  {n:>7,}" for code, policy, n in report.by_code()
    ]
    shown = report.findings if details is None else report.findings[:details]
    for finding in shown:
        who = finding.match_id or "(no match ID)"
        lines.append(
            f"  {finding.policy.value:<5} {finding.code} {who} ({finding.where}): {finding.message}"
        )
    hidden = report.total - len(shown)
    if hidden > 0:
        lines.append(f"  … and {hidden:,} more (--json lists up to {report.limit:,})")
    return lines


def errors(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that hold their record back."""
    return [f for f in findings if f.policy == Policy.ERROR]
