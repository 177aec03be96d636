"""The target Python itself: one pip refuses to install into (PEP 668)."""

from __future__ import annotations

import shlex

from attn_doctor.facts.model import Facts
from attn_doctor.registry.findings import PYTHON_EXTERNALLY_MANAGED, Finding, finding


def python_findings(facts: Facts) -> list[Finding]:
    if not facts.python.externally_managed:
        return []
    python = shlex.quote(facts.python.executable)
    return [
        finding(
            PYTHON_EXTERNALLY_MANAGED,
            f"{facts.python.executable} is externally managed (PEP 668): pip will refuse to install into it",
            [f"{python} -m venv .venv && . .venv/bin/activate"],
        )
    ]
