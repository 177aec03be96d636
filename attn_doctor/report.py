"""A check's result: the facts read and the findings judged from them."""

from __future__ import annotations

from dataclasses import dataclass

from attn_doctor.facts.model import Facts
from attn_doctor.rules.diagnose import diagnose
from attn_doctor.rules.findings import Finding, Severity


@dataclass(frozen=True)
class Report:
    facts: Facts
    findings: tuple[Finding, ...]

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    def fails(self, fail_on: Severity | None) -> bool:
        """True when any finding is at or above `fail_on` (None: never)."""
        return fail_on is not None and any(f.severity >= fail_on for f in self.findings)


def judge(facts: Facts) -> Report:
    return Report(facts, tuple(diagnose(facts)))
