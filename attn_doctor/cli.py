"""The command line: parse, collect or load facts, judge, render, exit. Nothing else lives here.

Exit codes (README): 0 healthy, 1 findings at or above --fail-on or an unmet --require,
2 bad usage or bad input, 3 the doctor could not inspect the target (or an internal error).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from attn_doctor import __version__
from attn_doctor.facts.locate import TargetError
from attn_doctor.facts.model import Facts, FactsError
from attn_doctor.registry.findings import RULES, Group, Severity, rule
from attn_doctor.render.interface import Format, Renderers, UnsupportedFormat

if TYPE_CHECKING:
    from attn_doctor.actions.install import Install
    from attn_doctor.actions.recipes.context import InstallRequest
    from attn_doctor.facts.measured import Measured
    from attn_doctor.registry.backends import Backend
    from attn_doctor.render.interface import Renderer
    from attn_doctor.report import CheckRequest, Report
    from attn_doctor.rules.assess import Assessment
    from attn_doctor.workload import Workload

R = TypeVar("R")

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_CANNOT_INSPECT = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

EXIT_CODES = (
    "Exit codes: 0 healthy; 1 a finding at or above --fail-on, an unmet --require, or drift from --against; "
    "2 bad usage or bad input; 3 the target could not be inspected (or an internal error); 130 interrupted."
)
FLEET_EXIT_CODES = (
    "Exit codes: 0 every node healthy and alike; 1 a node failing, or nodes that differ where --allow-drift "
    "does not allow it; 2 bad usage or bad input; 3 the cluster could not be asked; 130 interrupted."
)
ACTION_EXIT_CODES = (
    "Exit codes: 0 done, or nothing to do; 1 it failed and was undone, or was declined; 2 bad usage, or "
    "refused before anything changed; 3 the target could not be inspected, or putting it back failed; "
    "130 interrupted (Ctrl-C), everything it had changed put back first."
)
TRIAL_EXIT_CODES = (
    "Exit codes: 0 done; 1 a backend that check calls usable failed; 2 bad usage or bad input; 3 the target "
    "could not be inspected (or an internal error); 130 interrupted."
)
PLAIN_EXIT_CODES = "Exit codes: 0 done; 2 bad usage or bad input; 3 the target could not be inspected; 130 interrupted."
VARIABLES = (
    "Settings, where the command line gives none: ATTN_DOCTOR_FAIL_ON, ATTN_DOCTOR_IGNORE, "
    "ATTN_DOCTOR_REQUIRE (parted by ';' or spaces), ATTN_DOCTOR_NO_GPU_OK, else [tool.attn-doctor] "
    "in ./pyproject.toml. The target: --python (an interpreter or an environment's folder), else "
    "$VIRTUAL_ENV, else $CONDA_PREFIX (not conda's base), else a .venv here or above, else this Python."
)

app = typer.Typer(
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Inspect, install, repair, verify and time the attention backends of LLM training; say which to use.",
    epilog="Each command's --help gives its exit codes.",
)


PythonOption = Annotated[
    str | None,
    typer.Option("--python", help="Target interpreter (default: the active venv/conda env, else this one)."),
]


class FailOn(str, enum.Enum):
    error = "error"
    warning = "warning"
    info = "info"
    never = "never"

    @property
    def severity(self) -> Severity | None:
        return None if self is FailOn.never else Severity[self.name.upper()]


# Options that several commands take, declared once.
FactsOption = Annotated[
    Path | None,
    typer.Option("--facts", help="Judge (or, with install --dry-run, plan for) a saved JSON report's machine."),
]
GpuOption = Annotated[
    str | None, typer.Option("--gpu", help="Judge or plan for this GPU instead (H100, sm_90, 9.0, gfx942).")
]
TorchOption = Annotated[
    str | None, typer.Option("--torch", help="Judge or plan for this torch version instead, e.g. 2.8.0.")
]
CudaOption = Annotated[str | None, typer.Option("--cuda", help="…and this CUDA build of it, e.g. 12.8.")]
FailOnOption = Annotated[
    FailOn | None,
    typer.Option("--fail-on", help="Exit 1 on a finding (on any node) at least this severe [default: error]."),
]
RequireOption = Annotated[
    list[str] | None,
    typer.Option(
        "--require", help="A backend that must be usable (on every node), e.g. fa4 or 'fa2>=2.7' (repeatable)."
    ),
]
IgnoreOption = Annotated[list[str] | None, typer.Option("--ignore", help="A finding code not to judge (repeatable).")]
NoGpuOkOption = Annotated[
    bool | None,
    typer.Option("--no-gpu-ok", help="A machine (node) without a GPU is not a failure (CPU CI runners)."),
]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Seconds per backend.", min=1)]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show the plan and stop.")]
FindLinksOption = Annotated[
    Path | None,
    typer.Option("--find-links", "--wheel-dir", help="Also look for packages in this folder of wheels (a wheelhouse)."),
]
OfflineOption = Annotated[
    bool, typer.Option("--offline", help="Use no package index, only --find-links (or --source).")
]
SourceOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--source",
        help="Build fa2/fa3/sage from this local tree or archive (checked against the pinned "
        "commit/version), no network; repeat for a submodule (FA3's csrc/cutlass).",
    ),
]
BuildHeadDimOption = Annotated[
    list[str] | None,
    typer.Option("--head-dim", help="FA3: build only this head dim's kernels (N or Q,V); repeat for more."),
]


class InstallerChoice(str, enum.Enum):
    pip = "pip"
    uv = "uv"


def _registry_names(installable: bool = False, verifiable: bool = False) -> list[str]:
    from attn_doctor.registry.backends import backend_names

    return backend_names(installable=installable, verifiable=verifiable)


def _complete_installable(incomplete: str) -> list[str]:
    return [n for n in _registry_names(installable=True) if n.startswith(incomplete)]


def _complete_verifiable(incomplete: str) -> list[str]:
    return [n for n in _registry_names(verifiable=True) if n.startswith(incomplete)]


def _complete_any(incomplete: str) -> list[str]:
    from attn_doctor.registry.findings import RULES

    return [n for n in [*_registry_names(), *(r.code for r in RULES)] if n.startswith(incomplete)]


class Training(str, enum.Enum):
    full = "full"
    lora = "lora"
    inference = "inference"


class Stop(Exception):
    """A clean stop with one line for the user and an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _version(value: bool) -> None:
    if value:
        from attn_doctor.registry.backends import RULES_CHECKED

        print(f"attn-doctor {__version__} (rules checked against upstream {RULES_CHECKED})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """attn-doctor: a doctor for FlashAttention 2/3/4, SDPA, flex, SageAttention and xFormers."""


@app.command(epilog=f"{EXIT_CODES} {VARIABLES}", short_help="What is broken here, its fix, and the backend to use.")
def check(
    python: PythonOption = None,
    deep: Annotated[
        bool, typer.Option("--deep", help="Also import each backend in a child process and hash large files.")
    ] = False,
    output_format: Annotated[
        Format, typer.Option("--format", help="text, json, markdown or junit (on standard output).")
    ] = Format.text,
    facts_file: FactsOption = None,
    fail_on: FailOnOption = None,
    require: RequireOption = None,
    ignore: IgnoreOption = None,
    against: Annotated[
        Path | None, typer.Option("--against", help="A lock file from `attn-doctor lock`: fail on any drift.")
    ] = None,
    gpu: GpuOption = None,
    no_gpu_ok: NoGpuOkOption = None,
    output: Annotated[Path | None, typer.Option("--output", help="Also write the JSON report to this file.")] = None,
    torch_version: TorchOption = None,
    cuda: CudaOption = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="An Axolotl config: what it will meet on this machine.")
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="A Hugging Face config.json (or its folder): its head dims.")
    ] = None,
    head_dim: Annotated[str | None, typer.Option("--head-dim", help="N, or Q,V for the value's own.")] = None,
    training: Annotated[Training | None, typer.Option("--training", help="full, lora or inference.")] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", help="The training sequence length.", min=1)] = None,
    sample_packing: Annotated[
        bool | None, typer.Option("--sample-packing/--no-sample-packing", help="Packed samples.")
    ] = None,
    bench_file: Annotated[
        Path | None, typer.Option("--bench", help="A file from `bench --output`: rank the backends as measured.")
    ] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Show the evidence behind each line.")] = False,
) -> None:
    """Inspect the GPU, the target Python, torch and every attention package; say what is broken
    and which backend to use."""
    from attn_doctor.render.interface import View
    from attn_doctor.render.tables import CHECK
    from attn_doctor.report import judge  # the judge and renderers load only when a check runs

    show = _renderer(CHECK, output_format)
    if facts_file is not None and (python is not None or deep):
        raise Stop("--facts judges a saved report: it cannot be combined with --python or --deep", EXIT_USAGE)
    gate, severity = _gate(fail_on, require, ignore, against, no_gpu_ok)
    work = _workload(config_file, model, head_dim, training, seq_len, sample_packing)
    gate = dataclasses.replace(gate, workload=work, measured=_measured(bench_file))
    facts = _facts(facts_file, python, deep, [r.backend.module for r in gate.require], gpu, torch_version, cuda)
    report = judge(facts, gate)
    code = EXIT_FINDINGS if report.fails(severity) else EXIT_OK
    show(report, View(code, verbose, severity))
    if output is not None:
        from attn_doctor.render.json import render_json

        _write_output(output, render_json(report, code))
    if os.environ.get("GITHUB_ACTIONS") == "true":
        from attn_doctor.render.annotations import render_annotations
        from attn_doctor.render.safe import cleaned

        # on stderr, which the runner reads for workflow commands too: stdout stays the report
        # (JUnit or JSON redirected to a file)
        sys.stderr.write(render_annotations(cleaned(report)))
    raise typer.Exit(code)


def _write_output(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise Stop(f"cannot write --output {path}: {error.strerror}", EXIT_USAGE) from error


def _gate(
    fail_on: FailOn | None,
    require: list[str] | None,
    ignore: list[str] | None,
    against: Path | None,
    no_gpu_ok: bool | None,
) -> tuple[CheckRequest, Severity | None]:
    """The gate's settings: the command line, else ATTN_DOCTOR_* variables, else pyproject.toml."""
    from attn_doctor import config
    from attn_doctor.facts.saved import load_lock
    from attn_doctor.report import CheckRequest
    from attn_doctor.rules.gate import RequirementError, parse_requirement

    try:
        settings = config.load(Path.cwd())
        required = tuple(parse_requirement(r) for r in (require or settings.require))
    except (config.ConfigError, RequirementError) as error:
        raise Stop(str(error), EXIT_USAGE) from error
    codes = ignore or settings.ignore
    unknown = {code for code in codes if rule(code) is None}
    if unknown:
        raise Stop(
            f"--ignore: no finding code {', '.join(sorted(unknown))}; `attn-doctor explain` lists them", EXIT_USAGE
        )
    try:
        lock = load_lock(against) if against is not None else None
    except FactsError as error:
        raise Stop(str(error), EXIT_USAGE) from error
    chosen = fail_on or FailOn(settings.fail_on or "error")
    forgive = no_gpu_ok if no_gpu_ok is not None else bool(settings.no_gpu_ok)
    ignored = frozenset(r for r in RULES if r.code in codes)
    return CheckRequest(required, ignored, forgive, lock), chosen.severity


def _measured(bench_file: Path | None) -> Measured | None:
    if bench_file is None:
        return None
    from attn_doctor.facts.measured import load

    try:
        return load(bench_file)
    except FactsError as error:
        raise Stop(str(error), EXIT_USAGE) from error


def _build_head_dims(given: list[str], model: Path | None, config_file: Path | None) -> tuple[tuple[int, int], ...]:
    """The (q/k, v) head dims a narrow FA3 build keeps: each --head-dim, else the model's or the
    Axolotl config's local base_model's."""
    from attn_doctor.workload import WorkloadError, parse_head_dim

    if given:
        try:
            return tuple(parse_head_dim(text) for text in given)
        except WorkloadError as error:
            raise Stop(str(error), EXIT_USAGE) from error
    work = _workload(config_file, model, None, None, None, None)  # a config's local base_model included
    if (model or config_file) and work.head_dim is None:
        raise Stop("--config names no local base_model to read head dims from: add --model or --head-dim", EXIT_USAGE)
    return ((work.head_dim, work.head_dim_v or work.head_dim),) if work.head_dim else ()


def _workload(
    config_file: Path | None,
    model: Path | None,
    head_dim: str | None,
    training: Training | None,
    seq_len: int | None,
    sample_packing: bool | None,
) -> Workload:
    from attn_doctor.workload import Workload, WorkloadError, axolotl_workload, combine, model_head_dims, parse_head_dim

    try:
        work = axolotl_workload(config_file) if config_file is not None else Workload()
        dims = parse_head_dim(head_dim) if head_dim else model_head_dims(model) if model else (None, None)
    except WorkloadError as error:
        raise Stop(str(error), EXIT_USAGE) from error
    # the config's own model, on this disk: its head dims, as Axolotl reads them
    local = Path(work.base_model) if work.base_model and dims[0] is None and work.head_dim is None else None
    if local is not None and local.is_dir():
        try:
            dims = model_head_dims(local)
        except WorkloadError as error:
            raise Stop(f"base_model of {config_file}: {error}", EXIT_USAGE) from error
    return combine(
        work,
        head_dim=dims[0],
        head_dim_v=dims[1],
        training=training.value if training else None,
        seq_len=seq_len,
        sample_packing=sample_packing,
    )


def _facts(
    facts_file: Path | None,
    python: str | None,
    deep: bool,
    modules: list[str],
    gpu: str | None,
    torch_version: str | None = None,
    cuda: str | None = None,
    abi: bool = False,
) -> Facts:
    if facts_file is not None:
        from attn_doctor.facts.saved import load_facts

        try:
            facts = load_facts(facts_file)
        except FactsError as error:
            raise Stop(str(error), EXIT_USAGE) from error
    else:
        facts = _collect(python, deep, modules, abi)
    from attn_doctor.facts.given import with_given_gpu, with_given_torch

    try:
        facts = with_given_gpu(facts, gpu) if gpu else facts
        return with_given_torch(facts, torch_version, cuda) if torch_version or cuda else facts
    except FactsError as error:
        raise Stop(str(error), EXIT_USAGE) from error


def _collect(python: str | None, deep: bool = False, modules: list[str] | None = None, abi: bool = False) -> Facts:
    from attn_doctor.facts.collect import collect

    try:
        return collect(python, deep, modules=modules, read_torch_abi=abi)
    except TargetError as error:
        raise Stop(str(error), EXIT_CANNOT_INSPECT) from error


def _renderer(renderers: Renderers[R], output_format: Format) -> Renderer[R]:
    """The renderer of this format, chosen before anything runs: one the command lacks is refused."""
    try:
        return renderers.of(output_format)
    except UnsupportedFormat as error:
        raise Stop(str(error), EXIT_USAGE) from error


@app.command(epilog=PLAIN_EXIT_CODES, short_help="The healthy state, for check --against.")
def lock(
    python: PythonOption = None,
) -> None:
    """Print the healthy state as a lock file, for `check --against` to hold later runs to it."""
    import json

    from attn_doctor.rules.drift import lock_data

    print(json.dumps(lock_data(_collect(python)), indent=2))


@app.command(epilog=PLAIN_EXIT_CODES, short_help="What a finding code or a backend is, with its sources.")
def explain(
    code: Annotated[
        str | None,
        typer.Argument(
            help="A finding code or a backend (fa4, sdpa…); all codes when left out.", autocompletion=_complete_any
        ),
    ] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="The catalog as docs/findings.md.")] = False,
) -> None:
    """What a finding code means, how severe it is, and where its rule comes from; or a backend's rules."""
    from attn_doctor.registry.backends import by_name
    from attn_doctor.render.catalog import render_backend, render_catalog

    backends = by_name()
    if code in backends:
        sys.stdout.write(render_backend(backends[code]))
        return
    chosen = [r for r in RULES if code in (None, r.code)]
    if not chosen:
        raise Stop(f"no finding code {code!r}, nor a backend; `attn-doctor explain` lists the codes", EXIT_USAGE)
    sys.stdout.write(render_catalog(chosen, markdown))


@app.command("fix-shadow", epilog=ACTION_EXIT_CODES, short_help="Repair the FA2/FA4 collisions; undoable.")
def fix_shadow(
    python: PythonOption = None,
    dry_run: DryRunOption = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before repairing.")] = False,
    wheel_dir: Annotated[
        str | None, typer.Option("--wheel-dir", help="Reinstall FA4 from this folder of wheels (offline clusters).")
    ] = None,
    allow_system: Annotated[
        bool, typer.Option("--allow-system", help="Repair a system Python marked EXTERNALLY-MANAGED (PEP 668).")
    ] = False,
) -> None:
    """Repair the FA2/FA4 collisions: plan, back up, repair, verify. `attn-doctor undo` reverts it."""
    from attn_doctor.report import judge

    if wheel_dir is not None and not os.path.isdir(wheel_dir):
        raise Stop(f"--wheel-dir {wheel_dir} is not a folder", EXIT_USAGE)
    before = judge(_collect(python))
    _repair_shadow(before, python, yes, wheel_dir and os.path.abspath(wheel_dir), dry_run, allow_system)


def _repair_shadow(
    before: Report,
    python: str | None,
    yes: bool,
    wheel_dir: str | None,
    dry_run: bool = False,
    allow_system: bool = False,
) -> None:
    from attn_doctor.actions.plan import Refusal
    from attn_doctor.actions.repair import carry_out_fix_shadow
    from attn_doctor.actions.shadow import plan_fix_shadow
    from attn_doctor.render.actions import plan_lines

    try:
        plan = plan_fix_shadow(before, wheel_dir, allow_system)
    except Refusal as error:
        raise Stop(str(error), EXIT_USAGE) from error
    if not plan.steps:
        _say(f"Nothing to fix: no FA2/FA4 collision in {plan.python}.")
        raise typer.Exit(EXIT_OK)
    _say(*plan_lines(plan, "Found:"))
    if dry_run:
        raise typer.Exit(EXIT_OK)
    _confirm(yes, "Repair?")
    with _action_errors("repair"):
        verified = carry_out_fix_shadow(plan, before, python, _say)
    _say("Verified, no FA2/FA4 collision remains:", *verified, _undo_line(plan.python))


@app.command(epilog=ACTION_EXIT_CODES, short_help="Install one backend: plan, run, verify; undoable.")
def install(
    backend: Annotated[
        str,
        typer.Argument(
            help=f"The backend to install: {', '.join(_registry_names(installable=True))}.",
            autocompletion=_complete_installable,
        ),
    ],
    python: PythonOption = None,
    dry_run: DryRunOption = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before installing.")] = False,
    installer: Annotated[
        InstallerChoice | None, typer.Option("--installer", help="pip or uv [default: uv for a uv-made venv]")
    ] = None,
    find_links: FindLinksOption = None,
    offline: OfflineOption = False,
    force: Annotated[bool, typer.Option("--force", help="Plan even where the backend cannot run here.")] = False,
    allow_system: Annotated[
        bool, typer.Option("--allow-system", help="Install into a system Python marked EXTERNALLY-MANAGED (PEP 668).")
    ] = False,
    facts_file: FactsOption = None,
    gpu: GpuOption = None,
    torch_version: TorchOption = None,
    cuda: CudaOption = None,
    source: SourceOption = None,
    head_dim: BuildHeadDimOption = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="FA3: build only the head dims of this config.json (or its folder).")
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="FA3: build only the head dims of this Axolotl config's local base_model."),
    ] = None,
    community: Annotated[
        bool,
        typer.Option("--community", help="Also try community indexes' prebuilt wheels (each named in the plan)."),
    ] = False,
    mirror: Annotated[
        list[str] | None,
        typer.Option("--mirror", help="NAME=URL: fetch a source's wheels from this mirror of it (pytorch=URL)."),
    ] = None,
) -> None:
    """Install one attention backend into the target environment: plan, run, verify; undoable."""
    from attn_doctor.actions.recipes.context import InstallRequest

    (chosen,) = _backends([backend], installable=True)
    elsewhere = facts_file is not None or gpu is not None or torch_version is not None or cuda is not None
    if elsewhere and not dry_run:
        raise Stop("--facts/--gpu/--torch/--cuda plan for another machine: add --dry-run", EXIT_USAGE)
    if facts_file is not None and python is not None:
        raise Stop("--facts plans for a saved report: it cannot be combined with --python", EXIT_USAGE)
    wheels = _local_wheels(find_links, offline, source)
    facts = _facts(facts_file, python, False, [], gpu, torch_version, cuda, abi=True)
    narrow = _build_head_dims(head_dim or [], model, config_file)
    request = InstallRequest(
        chosen.name,
        installer.value if installer else None,
        wheels,
        offline,
        force,
        allow_system,
        tuple(str(p) for p in source or ()),
        narrow,
        community,
        _mirrors(mirror or []),
    )
    job = _shown_plan(facts, request, dry_run, yes, "Install?", here=facts_file is None)
    _run_install(job, python, facts, yes, wheels)


@app.command(epilog=ACTION_EXIT_CODES, short_help="Compile fa2/fa3/sage once into a wheel for every node.")
def build(
    backend: Annotated[str, typer.Argument(help="What to compile: fa2, fa3 or sage.")],
    wheelhouse: Annotated[
        Path, typer.Option("--wheelhouse", help="The folder the wheel is kept in (each node's --find-links).")
    ],
    python: PythonOption = None,
    dry_run: DryRunOption = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before building.")] = False,
    gpu: Annotated[
        list[str] | None,
        typer.Option("--gpu", help="Build for this GPU (H100, sm_90, 9.0) instead of this machine's; repeat for more."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Plan even where the backend cannot run on the GPUs.")] = False,
    source: SourceOption = None,
    find_links: FindLinksOption = None,
    offline: OfflineOption = False,
    head_dim: BuildHeadDimOption = None,
) -> None:
    """Compile fa2, fa3 or sage once against this torch into a wheel kept in --wheelhouse: each node
    then installs it with `install --find-links`, proven to fit, without compiling. The wheel is
    proven before it is kept; a source tree placed in the environment is undone by `undo`."""
    from attn_doctor.actions.build import carry_out_build
    from attn_doctor.actions.recipes.context import InstallRequest

    (chosen,) = _backends([backend], installable=True)  # one install cannot build: plan_install says so
    if wheelhouse.exists() and not wheelhouse.is_dir():
        raise Stop(f"--wheelhouse {wheelhouse} is not a folder", EXIT_USAGE)
    wheels = _local_wheels(find_links, offline, source)
    facts = _facts(None, python, False, [], None, abi=True)
    if gpu:
        from attn_doctor.facts.given import with_given_gpu

        try:
            facts = with_given_gpu(facts, *gpu)
        except FactsError as error:
            raise Stop(str(error), EXIT_USAGE) from error
    folder = str(wheelhouse.resolve())
    request = InstallRequest(
        chosen.name,
        "pip",
        find_links=wheels,
        offline=offline,
        force=force,
        sources=tuple(str(p) for p in source or ()),
        head_dims=_build_head_dims(head_dim or [], None, None),
        wheelhouse=folder,
    )
    job = _shown_plan(facts, request, dry_run, yes, "Build?")
    with _action_errors("build"):
        kept = carry_out_build(job, folder, facts, _say, lambda line: _say(f"    | {line}"))
    for wheel in kept:
        _say(f"Kept {wheel}: proven for torch {facts.torch.version if facts.torch else '?'} and the GPUs built for.")
    _say(f"On each node: attn-doctor install {backend} --find-links {folder}")


def _shown_plan(
    facts: Facts, request: InstallRequest, dry_run: bool, yes: bool, question: str, here: bool = True
) -> Install:
    """install's or build's plan, shown; then stop (--dry-run) or ask `question` (unless --yes)."""
    from attn_doctor.actions.install import plan_install
    from attn_doctor.actions.plan import Refusal
    from attn_doctor.render.actions import plan_lines

    try:
        job = plan_install(facts, request, here=here, say=_progress)
    except Refusal as error:
        raise Stop(str(error), EXIT_USAGE) from error
    _say(*plan_lines(job.plan, "Plan:"))
    if dry_run:
        raise typer.Exit(EXIT_OK)
    _confirm(yes, question)
    return job


def _local_wheels(find_links: Path | None, offline: bool, source: list[Path] | None) -> str | None:
    """--find-links DIR as an absolute path, checked with --offline: where packages come from."""
    if offline and find_links is None and not source:
        raise Stop("--offline needs --find-links DIR (or --source): where to install from", EXIT_USAGE)
    if find_links is not None and not find_links.is_dir():
        raise Stop(f"--find-links {find_links} is not a folder", EXIT_USAGE)
    return str(find_links.resolve()) if find_links else None


def _mirrors(given: list[str]) -> tuple[tuple[str, str], ...]:
    """--mirror NAME=URL, each naming a source the registry knows and an http(s) URL."""
    from attn_doctor.registry.sources import source_names

    mirrors = []
    for value in given:
        name, equals, url = value.partition("=")
        if not equals:
            raise Stop(f"--mirror {value}: give NAME=URL, e.g. pytorch=https://mirror.example/whl", EXIT_USAGE)
        if name not in source_names():
            raise Stop(f"--mirror {value}: NAME is one of {', '.join(source_names())}", EXIT_USAGE)
        if not url.startswith(("http://", "https://")):
            raise Stop(
                f"--mirror {value}: URL must be http(s):// (a local folder of wheels is --find-links DIR)", EXIT_USAGE
            )
        mirrors.append((name, url))
    return tuple(mirrors)


def _progress(line: str) -> None:
    """What is under way while a plan is made (a download), on standard error: the plan is the output."""
    from attn_doctor.render.safe import printable

    print(printable(line), file=sys.stderr, flush=True)


def _say(*lines: str) -> None:
    """What an action tells its user, line by line, as it happens (the runner's progress too): each
    a line of its own, whatever the target's names and pip's output hold."""
    from attn_doctor.render.safe import printable

    for line in lines:
        print(printable(line), flush=True)


def _undo_line(python: str) -> str:
    return f"Undo with: attn-doctor undo --python {shlex.quote(python)}"


@contextlib.contextmanager
def _action_errors(what: str) -> Iterator[None]:
    """The runner's failures as one line each: Ctrl-C (130) or a failure (1), both put back; a failure
    whose putting back failed too (3); refused before anything changed (2)."""
    from attn_doctor.actions.journal import RunnerError, UndoFailed
    from attn_doctor.actions.runner import Interrupted, Undone

    try:
        yield
    except Interrupted as error:  # Ctrl-C: the runner put everything back first
        raise Stop(f"{what} interrupted: everything it had changed was put back", EXIT_INTERRUPTED) from error
    except Undone as error:  # it failed, and the environment was put back as it was
        raise Stop(f"{what} failed, and was undone: {error} (logs kept in {error.folder})", EXIT_FINDINGS) from error
    except UndoFailed as error:  # failed, and putting it back failed too: not as before, say so
        raise Stop(str(error), EXIT_CANNOT_INSPECT) from error
    except RunnerError as error:  # another action holds the environment: nothing was changed
        raise Stop(str(error), EXIT_USAGE) from error


def _confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise Stop("not a terminal, so nothing was changed: pass --yes to go ahead without asking", EXIT_USAGE)
    if not typer.confirm(question, default=False):
        _say("Nothing changed.")
        raise typer.Exit(EXIT_FINDINGS)


def _run_install(job: Install, python: str | None, before: Facts, yes: bool, wheel_dir: str | None) -> None:
    """Run the plan and verify it; then hand a FA2/FA4 collision over to fix-shadow's own plan,
    journaled and undoable on its own."""
    from attn_doctor.actions.install import carry_out_install
    from attn_doctor.render.actions import also_changed, installed_line
    from attn_doctor.report import judge

    def on_gpu(after: Facts) -> list[str]:
        """Where there is a GPU, one forward and backward against the float32 reference."""
        from attn_doctor.trials.verify import smoke

        if not after.gpus:
            return []
        outcome = smoke(after.python.executable, job.backend, gpu=True)
        said = f"{outcome.status} {outcome.message}".strip()
        _say(f"Ran {job.backend.name} on the GPU against the float32 reference ({outcome.case}): {said}")
        return (
            [] if outcome.status == "passed" else [f"{job.backend.name} does not compute attention right here: {said}"]
        )

    with _action_errors("install"):
        after = carry_out_install(job, python, before, _say, lambda line: _say(f"    | {line}"), on_gpu)
    _say(installed_line(job, after), *also_changed(before, after, job.distribution))
    report = judge(after)
    if any(f.rule.is_in(Group.COLLISION) for f in report.findings):
        _say("FA2 and FA4 now share flash_attn/cute/: repairing that with fix-shadow (undone first by undo).")
        _repair_shadow(report, python, yes, wheel_dir, allow_system=True)  # the install already had consent
    _say(_undo_line(job.plan.python))


def _backends(names: list[str], installable: bool = False, verifiable: bool = False) -> list[Backend]:
    """The backends asked for, checked against the registry before anything runs."""
    from attn_doctor.registry.backends import by_name

    known = _registry_names(installable=installable, verifiable=verifiable)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise Stop(f"no backend {', '.join(unknown)} here: one of {', '.join(known)}", EXIT_USAGE)
    return [by_name()[n] for n in dict.fromkeys(names)]


def _with_torch(python: str | None) -> Facts:
    facts = _collect(python)
    if facts.torch is None:
        raise Stop(f"torch is not installed in {facts.python.executable}: no backend can run", EXIT_CANNOT_INSPECT)
    return facts


BackendsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help=f"Backends ({', '.join(_registry_names(verifiable=True))}); default: every installed one.",
        autocompletion=_complete_verifiable,
    ),
]


@app.command(epilog=TRIAL_EXIT_CODES, short_help="Run each backend against a float32 reference.")
def verify(
    backends: BackendsArgument = None,
    python: PythonOption = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="A Hugging Face config.json (or its folder): test its head dims.")
    ] = None,
    head_dim: Annotated[str | None, typer.Option("--head-dim", help="Test this head dim too.")] = None,
    output_format: Annotated[Format, typer.Option("--format", help="text, json or junit.")] = Format.text,
    output: Annotated[Path | None, typer.Option("--output", help="Also write the JSON result to this file.")] = None,
    timeout: TimeoutOption = 600.0,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Every case with its error figures.")] = False,
) -> None:
    """Run each backend forward and backward against a float32 reference: passed, wrong,
    missing kernel, crashed or timed out. Exit 1 if one that `check` calls usable fails."""
    from rich.console import Console

    from attn_doctor.render.interface import View
    from attn_doctor.render.tables import VERIFY
    from attn_doctor.render.trials import verdicts_json, where
    from attn_doctor.report import CheckRequest, judge
    from attn_doctor.trials.verify import installed
    from attn_doctor.trials.verify import verify as run_verify

    show = _renderer(VERIFY, output_format)
    named = _backends(backends, verifiable=True) if backends else None
    work = _workload(None, model, head_dim, None, None, None)
    facts = _with_torch(python)
    verdicts = judge(facts, CheckRequest(workload=work)).assessments  # what `check` says of each, for this model
    console = Console(stderr=output_format is not Format.text)
    with console.status("running the kernels…") as status:
        results = run_verify(
            facts.python.executable,
            named or installed(verdicts),
            bool(facts.gpus),
            lambda backend: _check_says(verdicts[backend.name]),
            tuple(d for d in (work.head_dim,) if d),
            lambda o: status.update(f"{o.backend}: {o.case}: {o.status}"),
            timeout,
        )
    code = EXIT_FINDINGS if any(not v.passed and v.usable_per_check for v in results) else EXIT_OK
    place = where(facts)
    if output is not None:
        _write_output(output, verdicts_json(results, place, code))
    show(results, View(code, verbose, about=place))
    raise typer.Exit(code)


def _check_says(assessment: Assessment) -> tuple[tuple[str, ...], str | None]:
    """Why `check` calls a backend unusable here, and what makes it usable: what verify prints
    under a backend it ran anyway. Nothing for a usable one."""
    return ((), None) if assessment.usable else (assessment.reasons, assessment.fix)


@app.command(epilog=TRIAL_EXIT_CODES, short_help="Time each working backend against SDPA.")
def bench(
    backends: BackendsArgument = None,
    python: PythonOption = None,
    shape: Annotated[
        list[str] | None, typer.Option("--shape", help="B,S,H,D to time instead of the standard set (repeatable).")
    ] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed calls per shape; the median is kept.", min=1)] = 10,
    output: Annotated[Path | None, typer.Option("--output", help="Save the figures for `check --bench FILE`.")] = None,
    output_format: Annotated[Format, typer.Option("--format", help="text, json or junit.")] = Format.text,
    timeout: TimeoutOption = 600.0,
) -> None:
    """Time forward and forward+backward of each working backend (bf16, causal) and compare with
    SDPA. `check --bench FILE` then ranks the backends as measured here."""
    from rich.console import Console
    from rich.progress import Progress

    from attn_doctor.facts.measured import dumps
    from attn_doctor.render.interface import View
    from attn_doctor.render.tables import BENCH
    from attn_doctor.report import judge
    from attn_doctor.trials.bench import STANDARD, bench_working, parse_shape
    from attn_doctor.trials.verify import installed

    show = _renderer(BENCH, output_format)
    named = _backends(backends, verifiable=True) if backends else None
    try:
        shapes = tuple(parse_shape(s) for s in shape) if shape else STANDARD
    except ValueError as error:
        raise Stop(str(error), EXIT_USAGE) from error
    facts = _with_torch(python)
    if not facts.gpus and not shape:  # said at once, not after minutes of CPU attention
        raise Stop(
            "no GPU here: the standard shapes (up to 4x8192x16x128, bf16) time GPU kernels; on the CPU, "
            "time a small one with --shape B,S,H,D",
            EXIT_USAGE,
        )
    chosen = named or installed(judge(facts).assessments)
    with Progress(console=Console(stderr=True), transient=True) as progress:
        checking = progress.add_task("checking each backend's result", total=len(chosen))
        timing = progress.add_task("timing", total=len(chosen) * len(shapes))
        measured = bench_working(
            facts.python.executable,
            facts,
            chosen,
            shapes,
            lambda backend: progress.advance(checking),
            lambda o: progress.update(timing, advance=1, description=f"{o.backend} {o.case}"),
            repeats,
            timeout,
        )
    if output is not None:
        _write_output(output, dumps(measured))
    show(measured, View())


@app.command("undo", epilog=ACTION_EXIT_CODES, short_help="Put back the last install or repair, byte for byte.")
def undo_last(
    python: PythonOption = None,
) -> None:
    """Put back the last repair of the target environment, byte for byte, from its journal."""
    from attn_doctor.actions.journal import RunnerError, exclusive, latest
    from attn_doctor.actions.undo import undo
    from attn_doctor.facts.target import target_prefix

    try:
        prefix = target_prefix(python)
    except TargetError as error:
        raise Stop(str(error), EXIT_CANNOT_INSPECT) from error
    folder = latest(prefix)
    if folder is None:
        _say(f"Nothing to undo in {prefix}.")
        raise typer.Exit(EXIT_OK)
    try:
        with exclusive(prefix):
            undo(folder, _say)
    except RunnerError as error:
        raise Stop(str(error), EXIT_USAGE) from error
    _say(f"Undone: {folder.name}")


@app.command(epilog=f"{EXIT_CODES} {VARIABLES}", short_help="Check every node of a cluster, and say what differs.")
def fleet(
    reports: Annotated[
        list[str] | None,
        typer.Option("--reports", help="Reports written by `check --format json --output` on each node: a glob."),
    ] = None,
    more_reports: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[REPORT]...", help="More report files (an unquoted --reports glob the shell expanded)."
        ),
    ] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Check every node of a Ray cluster now.")] = False,
    address: Annotated[
        str, typer.Option("--address", help="With --ray: the cluster's address (auto: the one this machine is in).")
    ] = "auto",
    python: Annotated[
        str | None,
        typer.Option(
            "--python", help="With --ray: the target on each node (default: its ATTN_DOCTOR_PYTHON, else its env)."
        ),
    ] = None,
    deep: Annotated[bool, typer.Option("--deep", help="With --ray: also import each backend on each node.")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="With --ray: seconds for each node's check.", min=1)
    ] = 120.0,
    allow_drift: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-drift", help="A field the nodes may differ in: driver, gpu, torch, a package… (repeatable)."
        ),
    ] = None,
    output_format: Annotated[
        Format, typer.Option("--format", help="text, json, markdown or junit (on standard output).")
    ] = Format.text,
    output: Annotated[Path | None, typer.Option("--output", help="Also write the JSON fleet report here.")] = None,
    fail_on: FailOnOption = None,
    require: RequireOption = None,
    ignore: IgnoreOption = None,
    no_gpu_ok: NoGpuOkOption = None,
) -> None:
    """Check every node of a cluster (from Ray, or from the reports a Slurm/mpirun/k8s job wrote)
    and say what differs between them. Exit 1 on a failing node or on any difference not allowed."""
    from attn_doctor.facts.fleet import FleetInputError, FleetRunError, ask_ray, read_reports
    from attn_doctor.registry.backends import distributions
    from attn_doctor.registry.findings import Finding
    from attn_doctor.render.fleet import render_fleet_json
    from attn_doctor.render.interface import View
    from attn_doctor.render.tables import FLEET
    from attn_doctor.report import judge
    from attn_doctor.rules.fleet import ALL_PACKAGES, FINDINGS_FIELD, FIXED_FIELDS, judge_fleet

    show = _renderer(FLEET, output_format)
    patterns = [*(reports or []), *(more_reports or [])]
    if ray == bool(patterns):
        raise Stop("fleet needs one of --reports GLOB or --ray [--address ADDRESS]", EXIT_USAGE)
    if patterns and (python is not None or deep or address != "auto"):
        raise Stop(
            "--python, --deep and --address are for --ray: a report was checked where it was written", EXIT_USAGE
        )
    allowed = frozenset(allow_drift or ())
    unknown = allowed - {*FIXED_FIELDS, FINDINGS_FIELD, ALL_PACKAGES, *distributions()}
    if unknown:
        fields = ", ".join([*FIXED_FIELDS, FINDINGS_FIELD, ALL_PACKAGES])
        raise Stop(f"--allow-drift {', '.join(sorted(unknown))}: not a field (one of {fields}, a package)", EXIT_USAGE)
    gate, severity = _gate(fail_on, require, ignore, None, no_gpu_ok)
    try:
        answers = ask_ray(address, python, deep, timeout) if ray else read_reports(patterns)
    except FleetInputError as error:
        raise Stop(str(error), EXIT_USAGE) from error
    except FleetRunError as error:
        raise Stop(str(error), EXIT_CANNOT_INSPECT) from error

    def judge_node(facts: Facts) -> tuple[tuple[Finding, ...], bool]:
        report = judge(facts, gate)
        return report.findings, report.fails(severity)

    judged = judge_fleet(answers, judge_node, severity, allowed)
    source = f"ray {address}" if ray else "reports"
    code = EXIT_FINDINGS if judged.fails else EXIT_OK
    if output is not None:
        _write_output(output, render_fleet_json(judged, source, code))
    show(judged, View(code, fail_on=severity, about=source))
    raise typer.Exit(code)


def _error(message: str) -> None:
    """One line on stderr, whatever the input it names holds (a newline, an escape sequence)."""
    from attn_doctor.render.safe import printable

    print(f"attn-doctor: {printable(message)}", file=sys.stderr)


@contextlib.contextmanager
def _only_the_command_run(name: str) -> Iterator[None]:
    """typer builds the parser of every command at each start (20 ms for the nine, 5 ms for one, on
    a 2-core machine): where the command line names one, only that one is built. Everything else
    (`--help` alone, a misspelt command and its suggestions, shell completion) sees them all."""
    everything = app.registered_commands
    named = [c for c in everything if c.name == name or (c.name is None and _command_name(c) == name)]
    if named and "_ATTN_DOCTOR_COMPLETE" not in os.environ:
        app.registered_commands = named
    try:
        yield
    finally:
        app.registered_commands = everything


def _command_name(command: typer.models.CommandInfo) -> str:
    assert command.callback is not None
    return command.callback.__name__.lower().replace("_", "-")  # as typer names it


def main() -> None:
    """Entry point: every failure ends as one line on stderr and a documented exit code."""
    from attn_doctor.output import prepare_stdout

    prepare_stdout()  # before anything prints: ASCII terminals, COLUMNS=0, `| head`
    if len(sys.argv) == 1:
        sys.argv.append("--help")  # `attn-doctor` alone shows what it can do
    try:
        with _only_the_command_run(sys.argv[1]):
            code = app(standalone_mode=False)
    except Stop as stop:
        _error(str(stop))
        sys.exit(stop.code)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.TyperException as error:  # bad usage: the parser's message, on one line
        _error(error.format_message())
        sys.exit(EXIT_USAGE)
    except (typer.Abort, KeyboardInterrupt):  # Ctrl-C outside an action (an action puts back first)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:  # `attn-doctor check | head`
        sys.exit(EXIT_OK)
    except Exception as error:  # a bug must never read as a pass (exit 0) or a plain failure (1)
        _error(f"internal error, please report it: {type(error).__name__}: {error}")
        sys.exit(EXIT_CANNOT_INSPECT)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
