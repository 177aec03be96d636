"""A repair or install of attn-doctor's own that was killed half-way."""

from __future__ import annotations

import shlex
from pathlib import Path

from attn_doctor.facts.model import Facts
from attn_doctor.registry.findings import REPAIR_UNFINISHED, Finding, finding


def repair_findings(facts: Facts) -> list[Finding]:
    """A repair or install killed half-way leaves the environment between before and planned."""
    return [
        finding(
            REPAIR_UNFINISHED,
            f"a repair of this environment was interrupted and is half-done: {Path(folder).name}",
            [f"attn-doctor undo --python {shlex.quote(facts.python.executable)}  # puts back what it had changed"],
            [f"journal: {folder}/journal.json"],
        )
        for folder in facts.unfinished_repairs
    ]
