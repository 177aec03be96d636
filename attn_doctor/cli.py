"""The command line: parse, collect or load facts, judge, render, exit. Nothing else lives here.

Exit codes (README): 0 healthy, 1 findings at or above --fail-on, 2 bad usage or bad input,
3 the doctor could not inspect the target.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from attn_doctor import __version__
from attn_doctor.facts.model import FactsError
from attn_doctor.facts.target import TargetError
from attn_doctor.rules.findings import RULES, Severity

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_CANNOT_INSPECT = 0, 1, 2, 3

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Inspect, repair and install the attention backends of LLM training.",
)


class Format(str, enum.Enum):
    text = "text"
    json = "json"
    markdown = "markdown"


class FailOn(str, enum.Enum):
    error = "error"
    warning = "warning"
    info = "info"
    never = "never"

    @property
    def severity(self) -> Severity | None:
        return None if self is FailOn.never else Severity[self.name.upper()]


class Stop(Exception):
    """A clean stop with one line for the user and an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _version(value: bool) -> None:
    if value:
        print(f"attn-doctor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """attn-doctor: a doctor for FlashAttention 2/3/4, SDPA, flex, SageAttention and xFormers."""


@app.command()
def check(
    python: Annotated[
        str | None,
        typer.Option("--python", help="Target interpreter (default: the active venv/conda env, else this one)."),
    ] = None,
    deep: Annotated[
        bool, typer.Option("--deep", help="Also import each backend in a child process and hash large files.")
    ] = False,
    output_format: Annotated[Format, typer.Option("--format", help="text, json or markdown.")] = Format.text,
    facts_file: Annotated[
        Path | None, typer.Option("--facts", help="Judge a saved JSON report instead of this machine.")
    ] = None,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", help="Exit 1 when a finding is at least this severe.")
    ] = FailOn.error,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Show the evidence behind each line.")] = False,
) -> None:
    """Inspect the GPU, the target Python, torch and every attention package; say what is broken."""
    from attn_doctor.report import judge  # the judge and renderers load only when a check runs

    if facts_file is not None and (python is not None or deep):
        raise Stop("--facts judges a saved report: it cannot be combined with --python or --deep", EXIT_USAGE)
    if facts_file is not None:
        from attn_doctor.facts.saved import load_facts

        try:
            facts = load_facts(facts_file)
        except FactsError as error:
            raise Stop(str(error), EXIT_USAGE) from error
    else:
        from attn_doctor.facts.collect import collect

        try:
            facts = collect(python, deep)
        except TargetError as error:
            raise Stop(str(error), EXIT_CANNOT_INSPECT) from error
    report = judge(facts)
    code = EXIT_FINDINGS if report.fails(fail_on.severity) else EXIT_OK
    if output_format is Format.json:
        from attn_doctor.render.json import render_json

        sys.stdout.write(render_json(report, code))
    elif output_format is Format.markdown:
        from attn_doctor.render.markdown import render_markdown

        sys.stdout.write(render_markdown(report, verbose))
    else:
        from rich.console import Console

        from attn_doctor.render.terminal import render_terminal

        render_terminal(report, Console(), verbose)
    raise typer.Exit(code)


@app.command()
def explain(
    code: Annotated[str | None, typer.Argument(help="A finding code; all codes when left out.")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="The catalog as docs/findings.md.")] = False,
) -> None:
    """What a finding code means, how severe it is, and where its rule comes from."""
    from attn_doctor.render.catalog import render_catalog

    chosen = [r for r in RULES if code in (None, r.code)]
    if not chosen:
        raise Stop(f"no finding code {code!r}; `attn-doctor explain` lists them all", EXIT_USAGE)
    sys.stdout.write(render_catalog(chosen, markdown))


@app.command("fix-shadow")
def fix_shadow(
    python: Annotated[
        str | None,
        typer.Option("--python", help="Target interpreter (default: the active venv/conda env, else this one)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan and stop.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before repairing.")] = False,
    wheel_dir: Annotated[
        str | None, typer.Option("--wheel-dir", help="Reinstall FA4 from this folder of wheels (offline clusters).")
    ] = None,
    allow_system: Annotated[
        bool, typer.Option("--allow-system", help="Repair a system Python marked EXTERNALLY-MANAGED (PEP 668).")
    ] = False,
) -> None:
    """Repair the FA2/FA4 collisions: plan, back up, repair, verify. `attn-doctor undo` reverts it."""
    from attn_doctor.actions.runner import RunnerError, carry_out, exclusive, start, undo
    from attn_doctor.actions.shadow import Refusal, plan_fix_shadow, verified_lines, verify
    from attn_doctor.facts.collect import collect
    from attn_doctor.report import judge

    try:
        before = judge(collect(python))
    except TargetError as error:
        raise Stop(str(error), EXIT_CANNOT_INSPECT) from error
    if wheel_dir is not None and not os.path.isdir(wheel_dir):
        raise Stop(f"--wheel-dir {wheel_dir} is not a folder", EXIT_USAGE)
    try:
        plan = plan_fix_shadow(before, wheel_dir and os.path.abspath(wheel_dir), allow_system)
    except Refusal as error:
        raise Stop(str(error), EXIT_USAGE) from error
    if not plan.steps:
        print(f"Nothing to fix: no FA2/FA4 collision in {plan.python}.")
        raise typer.Exit(EXIT_OK)
    print("Found:", *plan.reasons, sep="\n  ")
    print(f"Plan for {plan.python} (backups and journal under {plan.prefix}/.attn-doctor/repairs/):")
    print(*plan.lines(), sep="\n")
    if dry_run:
        raise typer.Exit(EXIT_OK)
    if not yes:
        if not sys.stdin.isatty():
            raise Stop("not a terminal, so nothing was changed: pass --yes to repair without asking", EXIT_USAGE)
        if not typer.confirm("Repair?", default=False):
            print("Nothing changed.")
            raise typer.Exit(EXIT_FINDINGS)
    with exclusive(plan.prefix):
        journal = start(plan)
        try:
            carry_out(journal, plan, print)
            after = judge(collect(python))
            problems = verify(before, after)
        except (RunnerError, TargetError) as error:
            problems = [str(error)]
        if problems:  # a command that failed leaves the machine as it found it
            undo(journal.folder, print)
            raise Stop("repair failed, and was undone: " + "; ".join(problems), EXIT_FINDINGS)
    print("Verified, no FA2/FA4 collision remains:")
    print(*verified_lines(before, after), sep="\n")
    print(f"Undo with: attn-doctor undo --python {plan.python}")


@app.command("undo")
def undo_last(
    python: Annotated[
        str | None,
        typer.Option("--python", help="Target interpreter (default: the active venv/conda env, else this one)."),
    ] = None,
) -> None:
    """Put back the last repair of the target environment, byte for byte, from its journal."""
    from attn_doctor.actions.runner import RunnerError, exclusive, latest, undo
    from attn_doctor.facts.target import target_prefix

    try:
        prefix = target_prefix(python)
    except TargetError as error:
        raise Stop(str(error), EXIT_CANNOT_INSPECT) from error
    folder = latest(prefix)
    if folder is None:
        print(f"Nothing to undo in {prefix}.")
        raise typer.Exit(EXIT_OK)
    try:
        with exclusive(prefix):
            undo(folder, print)
    except RunnerError as error:
        raise Stop(str(error), EXIT_USAGE) from error
    print(f"Undone: {folder.name}")


def main() -> None:
    """Entry point: every failure ends as one line on stderr and a documented exit code."""
    if len(sys.argv) == 1:
        sys.argv.append("--help")  # `attn-doctor` alone shows what it can do
    try:
        code = app(standalone_mode=False)
    except Stop as stop:
        print(f"attn-doctor: {stop}", file=sys.stderr)
        sys.exit(stop.code)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.TyperException as error:  # bad usage: the parser's message, on one line
        print(f"attn-doctor: {error.format_message()}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except typer.Abort:
        sys.exit(130)
    except BrokenPipeError:  # `attn-doctor check | head`
        sys.exit(EXIT_OK)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
