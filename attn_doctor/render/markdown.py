"""The report as markdown, to paste into a bug report or an issue."""

from __future__ import annotations

from attn_doctor.registry.findings import Severity
from attn_doctor.render.sections import ABSENT, ERROR, NOTE, OK, WARNING, sections
from attn_doctor.report import Report

_MARKS = {OK: "✓", ERROR: "✗", WARNING: "!", NOTE: "·", ABSENT: "–"}
_SEVERITY_MARKS = {Severity.ERROR: "✗", Severity.WARNING: "!", Severity.INFO: "i"}


def render_markdown(report: Report, verbose: bool = False) -> str:
    facts = report.facts
    out = [
        f"## attn-doctor check ({facts.hostname}, {facts.collected_at}, attn-doctor {facts.doctor_version})",
        "",
    ]
    for section in sections(report):
        out += [f"### {section.title}", ""]
        for line in section.lines:
            out.append(f"- {_MARKS[line.mark]} {line.text}")
            if verbose:
                out += [f"  - `{e}`" for e in line.evidence]
        out.append("")
    out += ["### Findings", ""]
    if not report.findings:
        out += ["No problems found.", ""]
    for f in report.findings:
        out.append(f"- {_SEVERITY_MARKS[f.severity]} **{f.severity.label}** `{f.code}`: {f.title}")
        if f.fix:
            out += ["  ```sh", *(f"  {command}" for command in f.fix), "  ```"]
        if verbose:
            out += [f"  - evidence: `{e}`" for e in f.evidence]
    chosen = report.recommendation
    if chosen is None and report.facts.torch is None:
        out += ["", "### Recommendation", "", "No backend can run here until torch is installed."]
    if chosen is not None:
        out += [
            "",
            "### Recommendation",
            "",
            f"Use **{chosen.backend}** ({chosen.reasons[1]})"
            if chosen.runs_now
            else f"No backend can run here yet. Once fixed (`{chosen.better_how}`), use **{chosen.backend}**",
            "",
            "```yaml",
            chosen.config,
            "```",
        ]
        out += [f"- {reason}" for reason in chosen.reasons[2:]]
        if chosen.better:
            out.append(f"- {chosen.better} would be better: `{chosen.better_how}`")
    if report.requirements:
        out += ["", "### Required", ""]
    for requirement in report.requirements:
        out.append(
            f"- {'✓' if requirement.met else '✗'} `{requirement.text}`"
            + "".join(f"\n  - {reason}" for reason in requirement.reasons)
        )
    out.append("")
    return "\n".join(out)
