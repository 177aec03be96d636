"""Each result's renderers by format: the one place where a format meets its renderer. Every format
made for people (text, markdown) and for CI parsers (JUnit) is given the result `cleaned`: no
control character from the target reaches a terminal, a page or an XML document. JSON escapes
them itself."""

from __future__ import annotations

import sys

from rich.console import Console

from attn_doctor.facts.measured import Measured, dumps
from attn_doctor.render import fleet, junit, markdown, terminal, trials
from attn_doctor.render import json as report_json
from attn_doctor.render.interface import Renderers
from attn_doctor.render.safe import cleaned, printable
from attn_doctor.report import Report
from attn_doctor.rules.fleet import Fleet
from attn_doctor.trials.verify import Verdict


def _write(text: str) -> None:
    """A machine format goes to standard output as it is: no wrapping, no markup."""
    sys.stdout.write(text)


CHECK: Renderers[Report] = Renderers(
    "check",
    text=lambda report, view: terminal.render_terminal(cleaned(report), Console(), view.verbose),
    json=lambda report, view: _write(report_json.render_json(report, view.code)),
    markdown=lambda report, view: _write(markdown.render_markdown(cleaned(report), view.verbose)),
    junit=lambda report, view: _write(junit.render_junit(cleaned(report), view.fail_on)),
)

VERIFY: Renderers[list[Verdict]] = Renderers(
    "verify",
    text=lambda verdicts, view: trials.render_verdicts(
        cleaned(verdicts), printable(view.about), Console(), view.verbose
    ),
    json=lambda verdicts, view: _write(trials.verdicts_json(verdicts, view.about, view.code)),
    junit=lambda verdicts, view: _write(junit.verdicts_junit(cleaned(verdicts), printable(view.about))),
)

BENCH: Renderers[Measured] = Renderers(
    "bench",
    text=lambda measured, view: trials.render_measured(cleaned(measured), Console()),
    json=lambda measured, view: _write(dumps(measured)),
    junit=lambda measured, view: _write(junit.measured_junit(cleaned(measured))),
)

FLEET: Renderers[Fleet] = Renderers(
    "fleet",
    text=lambda judged, view: fleet.render_fleet_terminal(cleaned(judged), printable(view.about), Console()),
    json=lambda judged, view: _write(fleet.render_fleet_json(judged, view.about, view.code)),
    markdown=lambda judged, view: _write(fleet.render_fleet_markdown(cleaned(judged), printable(view.about))),
    junit=lambda judged, view: _write(fleet.render_fleet_junit(cleaned(judged), printable(view.about))),
)
