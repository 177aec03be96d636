"""The report for people, in the terminal: sections, one line per fact, every problem with its fix."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from attn_doctor.registry.findings import Severity
from attn_doctor.render.sections import ABSENT, ERROR, NOTE, OK, WARNING, sections
from attn_doctor.report import Report

_MARKS = {
    OK: "[green]✓[/]",
    ERROR: "[red]✗[/]",
    WARNING: "[yellow]![/]",
    NOTE: "[dim]·[/]",
    ABSENT: "[dim]–[/]",
}
_SEVERITY = {
    Severity.ERROR: "[bold red]✗ error[/]",
    Severity.WARNING: "[bold yellow]! warning[/]",
    Severity.INFO: "[cyan]i info[/]",
}


def render_terminal(report: Report, console: Console, verbose: bool = False) -> None:
    for section in sections(report):
        console.print(f"[bold]{escape(section.title)}[/]")
        for line in section.lines:
            text = escape(line.text) if line.mark != ABSENT else f"[dim]{escape(line.text)}[/]"
            console.print(f"  {_MARKS[line.mark]} {text}", highlight=False)
            if verbose:
                for item in line.evidence:
                    console.print(f"      [dim]{escape(item)}[/]", highlight=False)
        console.print()
    if report.findings:
        console.print("[bold]Findings[/]")
    for f in report.findings:
        console.print(f"  {_SEVERITY[f.severity]} [dim]\\[{f.code}][/] {escape(f.title)}", highlight=False)
        for command in f.fix:
            console.print(f"      [bold]$[/] {escape(command)}", highlight=False, soft_wrap=True)
        if verbose:
            for item in f.evidence:
                console.print(f"      [dim]{escape(item)}[/]", highlight=False)
    if report.recommendation is not None:
        _recommendation(report, console, verbose)
    elif report.facts.torch is None:
        console.print("\n[bold]No backend can run here until torch is installed[/] (see torch-missing)")
    if report.requirements:
        console.print("[bold]Required[/]")
    for requirement in report.requirements:
        mark = "[green]✓[/]" if requirement.met else "[red]✗[/]"
        console.print(f"  {mark} {escape(requirement.text)}", highlight=False)
        for reason in requirement.reasons:
            console.print(f"      {escape(reason)}", highlight=False)
        for command in requirement.fix:
            console.print(f"      [bold]$[/] {escape(command)}", highlight=False, soft_wrap=True)
    if report.ignored:
        codes = ", ".join(sorted({f.code for f in report.ignored}))
        console.print(f"[dim]ignored: {len(report.ignored)} finding(s) ({escape(codes)})[/]", highlight=False)
    errors, warnings, info = (report.count(s) for s in (Severity.ERROR, Severity.WARNING, Severity.INFO))
    unmet = sum(1 for r in report.requirements if not r.met)
    chosen = report.recommendation
    runs = chosen is not None and chosen.runs_now
    verdict = "[red]problems found[/]" if errors or unmet else "[green]healthy[/]" if runs else "[yellow]not ready[/]"
    console.print(f"\n{verdict}: {errors} error(s), {warnings} warning(s), {info} note(s)", highlight=False)


def _recommendation(report: Report, console: Console, verbose: bool) -> None:
    chosen = report.recommendation
    assert chosen is not None
    if not chosen.runs_now:  # never "Use X" for a backend that cannot run: what to fix, first
        console.print(
            f"\n[bold red]No backend can run here yet.[/] Once fixed, use [bold]{escape(chosen.backend)}[/]:",
            highlight=False,
        )
        console.print(f"      [bold]$[/] {escape(chosen.better_how)}", highlight=False, soft_wrap=True)
        return
    console.print(
        f"\n[bold]Use[/] [bold green]{escape(chosen.backend)}[/]: {escape(chosen.reasons[1])}", highlight=False
    )
    for line in chosen.config.splitlines():
        console.print(f"      [dim]axolotl:[/] {escape(line)}", highlight=False)
    if chosen.runner_up:
        console.print(f"  runner-up: {escape(chosen.runner_up)}", highlight=False)
    if chosen.better:  # the command on a line of its own, never wrapped: it must paste whole
        console.print(f"  [yellow]{escape(chosen.better)} would be better here:[/]", highlight=False)
        console.print(f"      [bold]$[/] {escape(chosen.better_how)}", highlight=False, soft_wrap=True)
    shown = chosen.reasons if verbose else chosen.reasons[2:4]
    for reason in shown:
        console.print(f"      [dim]{escape(reason)}[/]", highlight=False)
