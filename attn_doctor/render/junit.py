"""JUnit XML for CI systems. check: one test case per finding code of the catalog and per --require;
verify: one per backend and case; bench: one per backend and shape.

A code passes when no finding of it reaches --fail-on; below that level its findings are kept
as the case's output; codes silenced with --ignore (or --no-gpu-ok) are skipped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from attn_doctor.facts.measured import Measured
from attn_doctor.registry.findings import RULES, Severity
from attn_doctor.report import Report
from attn_doctor.trials.verify import Verdict


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
    suite.set("skipped", str(skipped))
    return document(suite, failures)


def document(suite: ET.Element, failures: int) -> str:
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", suite.get("skipped", "0"))
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def verdicts_junit(verdicts: list[Verdict], where: str) -> str:
    """verify: a test case per backend and case; a case fails unless it passed."""
    suite = ET.Element("testsuite", name=f"attn-doctor verify on {where}")
    failures = 0
    for verdict in verdicts:
        for outcome in verdict.outcomes:
            case = ET.SubElement(
                suite, "testcase", classname=f"attn-doctor.verify.{verdict.backend.name}", name=outcome.case
            )
            if outcome.status != "passed":
                failures += 1
                errors = ", ".join(f"{name} {value:.1e}" for name, value in outcome.errors)
                ET.SubElement(case, "failure", message=outcome.message or errors or outcome.status, type=outcome.status)
    return document(suite, failures)


def measured_junit(measured: Measured) -> str:
    """bench: a test case per backend and shape, its TFLOP/s as the output; a backend that could
    not be timed is a failed case."""
    suite = ET.Element("testsuite", name=f"attn-doctor bench on {measured.gpu}")
    for timing in measured.timings:
        case = ET.SubElement(
            suite, "testcase", classname=f"attn-doctor.bench.{timing.backend}", name=f"{timing.shape} {timing.mode}"
        )
        ET.SubElement(case, "system-out").text = f"{timing.ms:.3f} ms, {timing.tflops:.1f} TFLOP/s"
    for backend, why in measured.failed:
        case = ET.SubElement(suite, "testcase", classname=f"attn-doctor.bench.{backend}", name="timed")
        ET.SubElement(case, "failure", message=why, type="not timed")
    return document(suite, len(measured.failed))
