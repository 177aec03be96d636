"""The machine-readable report: the facts (readable again by `check --facts`) plus the findings.

Layout (schema "attn-doctor/report-1", documented in docs/report-schema.md): every field of
`Facts` at the top level, then `findings[]` and `summary`.
"""

from __future__ import annotations

import json
from typing import Any

from attn_doctor.facts.model import SCHEMA, to_data
from attn_doctor.registry.backends import RULES_CHECKED
from attn_doctor.registry.findings import Severity
from attn_doctor.report import Report


def report_data(report: Report, exit_code: int) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        **to_data(report.facts),
        "rules_checked": RULES_CHECKED,
        "findings": [
            {
                "code": f.code,
                "severity": f.severity.label,
                "title": f.title,
                "fix": list(f.fix),
                "evidence": list(f.evidence),
                "subject": f.subject.name if f.subject else "",
                "subject_kind": f.subject.kind.value if f.subject else "",
            }
            for f in report.findings
        ],
        "requirements": [
            {"require": r.text, "met": r.met, "reasons": list(r.reasons), "fix": list(r.fix)}
            for r in report.requirements
        ],
        "ignored": sorted({f.code for f in report.ignored}),
        "recommendation": to_data(report.recommendation),
        "summary": {
            "errors": report.count(Severity.ERROR),
            "warnings": report.count(Severity.WARNING),
            "info": report.count(Severity.INFO),
            "exit_code": exit_code,
        },
    }


def render_json(report: Report, exit_code: int) -> str:
    return json.dumps(report_data(report, exit_code), indent=2) + "\n"
