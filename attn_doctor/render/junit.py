"""JUnit XML for CI systems: one test case per finding code of the catalog and per --require.

A code passes when no finding of it reaches --fail-on; below that level its findings are kept
as the case's output; codes silenced with --ignore (or --no-gpu-ok) are skipped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from attn_doctor.report import Report
from attn_doctor.rules.findings import RULES, Severity


def render_junit(report: Report, fail_on: Severity | None) -> str:
    suite = ET.Element(
        "testsuite", name="attn-doctor check", hostname=report.facts.hostname, timestamp=report.facts.collected_at
    )
    failures = skipped = 0
    ignored = {f.code for f in report.ignored}
    for rule in RULES:
        case = ET.SubElement(suite, "testcase", classname="attn-doctor.findings", name=rule.code)
        found = [f for f in report.findings if f.code == rule.code]
        failing = [f for f in found if fail_on is not None and f.severity >= fail_on]
        if failing:
            failures += 1
            failure = ET.SubElement(case, "failure", message=failing[0].title, type=failing[0].severity.label)
            failure.text = "\n\n".join("\n".join((f.title, *f.fix, *f.evidence)) for f in failing)
        elif rule.code in ignored:
            skipped += 1
            ET.SubElement(case, "skipped", message="ignored by --ignore / --no-gpu-ok")
        elif found:
            ET.SubElement(case, "system-out").text = "\n".join(f"{f.severity.label}: {f.title}" for f in found)
    for requirement in report.requirements:
        case = ET.SubElement(suite, "testcase", classname="attn-doctor.require", name=requirement.text)
        if not requirement.met:
            failures += 1
            failure = ET.SubElement(case, "failure", message="; ".join(requirement.reasons), type="require")
            failure.text = "\n".join((*requirement.reasons, *requirement.fix))
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
