"""GitHub Actions workflow commands (`::error title=…::…`), printed when GITHUB_ACTIONS=true, so
each problem shows on the run's summary page."""

from __future__ import annotations

from attn_doctor.registry.findings import Severity
from attn_doctor.report import Report

_COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def render_annotations(report: Report) -> str:
    lines = [
        f"::{_COMMAND[f.severity]} title={_property('attn-doctor ' + f.code)}::" + _data("\n".join((f.title, *f.fix)))
        for f in report.findings
    ]
    lines += [
        f"::error title={_property('attn-doctor --require ' + r.text)}::" + _data("\n".join((*r.reasons, *r.fix)))
        for r in report.requirements
        if not r.met
    ]
    return "".join(line + "\n" for line in lines)
