"""Each result's renderers by format: the one place where a format meets its renderer. Every format
made for people (text, markdown) and for CI parsers (JUnit) is given the result `cleaned`: no
control character from the target reaches a terminal, a page or an XML document. JSON escapes
them itself.

What only some commands or formats use (rich, JUnit's XML, the trials' and the fleet's tables) is
imported when it renders: `check` imports its own renderers only (15-25 ms less on a 2-core
machine), and `check --format json`, the CI gate's, no rich at all.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from attn_doctor.render import json as report_json
from attn_doctor.render import markdown
from attn_doctor.render.interface import Renderers, View
from attn_doctor.render.safe import cleaned, printable
from attn_doctor.report import Report

if TYPE_CHECKING:
    from rich.console import Console

    from attn_doctor.facts.measured import Measured
    from attn_doctor.rules.fleet import Fleet
    from attn_doctor.trials.verify import Verdict


def _write(text: str) -> None:
    """A machine format goes to standard output as it is: no wrapping, no markup."""
    sys.stdout.write(text)


def _console() -> Console:
    from rich.console import Console

    return Console()


def _check_text(report: Report, view: View) -> None:
    from attn_doctor.render import terminal

    terminal.render_terminal(cleaned(report), _console(), view.verbose)


def _check_junit(report: Report, view: View) -> None:
    from attn_doctor.render import junit

    _write(junit.render_junit(cleaned(report), view.fail_on))


CHECK: Renderers[Report] = Renderers(
    "check",
    text=_check_text,
    json=lambda report, view: _write(report_json.render_json(report, view.code)),
    markdown=lambda report, view: _write(markdown.render_markdown(cleaned(report), view.verbose)),
    junit=_check_junit,
)


def _verify_text(verdicts: list[Verdict], view: View) -> None:
    from attn_doctor.render import trials

    trials.render_verdicts(cleaned(verdicts), printable(view.about), _console(), view.verbose)


def _verify_json(verdicts: list[Verdict], view: View) -> None:
    from attn_doctor.render import trials

    _write(trials.verdicts_json(verdicts, view.about, view.code))


def _verify_junit(verdicts: list[Verdict], view: View) -> None:
    from attn_doctor.render import junit

    _write(junit.verdicts_junit(cleaned(verdicts), printable(view.about)))


VERIFY: Renderers[list[Verdict]] = Renderers("verify", text=_verify_text, json=_verify_json, junit=_verify_junit)


def _bench_text(measured: Measured, view: View) -> None:
    from attn_doctor.render import trials

    trials.render_measured(cleaned(measured), _console())


def _bench_json(measured: Measured, view: View) -> None:
    from attn_doctor.facts.measured import dumps

    _write(dumps(measured))


def _bench_junit(measured: Measured, view: View) -> None:
    from attn_doctor.render import junit

    _write(junit.measured_junit(cleaned(measured)))


BENCH: Renderers[Measured] = Renderers("bench", text=_bench_text, json=_bench_json, junit=_bench_junit)


def _fleet_text(judged: Fleet, view: View) -> None:
    from attn_doctor.render import fleet

    fleet.render_fleet_terminal(cleaned(judged), printable(view.about), _console())


def _fleet_json(judged: Fleet, view: View) -> None:
    from attn_doctor.render import fleet

    _write(fleet.render_fleet_json(judged, view.about, view.code))


def _fleet_markdown(judged: Fleet, view: View) -> None:
    from attn_doctor.render import fleet

    _write(fleet.render_fleet_markdown(cleaned(judged), printable(view.about)))


def _fleet_junit(judged: Fleet, view: View) -> None:
    from attn_doctor.render import fleet

    _write(fleet.render_fleet_junit(cleaned(judged), printable(view.about)))


FLEET: Renderers[Fleet] = Renderers(
    "fleet", text=_fleet_text, json=_fleet_json, markdown=_fleet_markdown, junit=_fleet_junit
)
