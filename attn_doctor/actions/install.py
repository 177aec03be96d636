"""install: the exact steps that put one attention backend into the target environment.

Planned from the same facts as `check` (so `--facts`/`--gpu`/`--torch` plan for another
machine), with the recipes' data (`registry/recipes.py`). Every pip step names the installed torch
as a requirement of its own (`torch==2.11.0+cu130`): the resolver may then keep it or fail, never
swap it. Every step that changes the environment watches site-packages and the scripts folder,
so `undo` puts them back as they were.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from attn_doctor.actions.installer import choose_installer, may_write
from attn_doctor.actions.plan import Plan, Refusal
from attn_doctor.actions.recipes import RECIPES
from attn_doctor.actions.recipes.context import FROM_SOURCE, InstallRequest, RecipeContext
from attn_doctor.actions.runner import carry_out_checked
from attn_doctor.facts.collect import collect
from attn_doctor.facts.locate import TargetError
from attn_doctor.facts.model import Facts, Torch
from attn_doctor.registry.backends import Backend, by_name
from attn_doctor.registry.findings import Group
from attn_doctor.rules.assess import assess
from attn_doctor.rules.diagnose import diagnose
from attn_doctor.rules.ranking import first_choice, ranking, weakest
from attn_doctor.workload import Workload


@dataclass(frozen=True)
class Install:
    """The plan and what a successful run must leave behind."""

    plan: Plan
    backend: Backend
    distribution: str
    version: str | None  # the version the run must leave; None: whatever the source tree declares


def plan_install(
    facts: Facts, request: InstallRequest, here: bool = True, say: Callable[[str], None] = lambda line: None
) -> Install:
    """Raises Refusal with the reason and what to do instead. `here`: the facts are this
    machine's (not a saved report's), so its folders can be checked for writing. `say`: what
    planning tells as it goes (each wheel fetched to be proven)."""
    backend = by_name()[request.backend]
    python = facts.python
    site = next((p for p in reversed(python.site_packages) if os.path.isdir(p)), python.prefix)
    may_write(python, site if here else None, request.allow_system)
    if facts.torch is None:
        raise Refusal(
            f"torch is not installed in {python.executable}: install the torch you train with first "
            f"(attn-doctor never chooses torch for you), then `attn-doctor install {backend.name}`"
        )
    if request.wheelhouse and backend.name not in FROM_SOURCE:
        raise Refusal(f"build compiles {', '.join(FROM_SOURCE)}; {backend.label} is installed from its wheels")
    if request.sources and backend.name not in FROM_SOURCE:
        raise Refusal(
            f"--source builds {', '.join(FROM_SOURCE)} from their source; {backend.label} installs from "
            "wheels (use --find-links DIR for a local wheelhouse)"
        )
    problems = _cannot_run(facts, backend, facts.torch)
    if problems and not request.force:
        raise Refusal(f"{backend.label} cannot run here: {'; '.join(problems)}. {_instead(facts, backend)}")
    installer = choose_installer(python, request.installer, request.find_links, request.offline, request.allow_system)
    watch = tuple(dict.fromkeys([*python.site_packages, str(Path(python.executable).parent)]))
    context = RecipeContext(facts, facts.torch, installer, watch, request, here, say)
    steps, notes, distribution, version = RECIPES[backend.name](context)
    forced = tuple(f"--force: planned although {p}" for p in problems)
    if request.wheelhouse:
        action, title = "build", f"build {backend.label} into a wheel in {request.wheelhouse}"
        notes.append(
            f"the wheel is proven before it is kept (its shared objects against torch {facts.torch.version} and "
            f"the GPUs built for); each node then installs it without compiling: attn-doctor install "
            f"{backend.name} --find-links {request.wheelhouse}"
        )
    else:
        action, title = "install", f"install {backend.label} into {python.executable}"
        notes += _behind_sdpa(facts, backend)
        # pip resolves the backend's own requirements too: say so before, list them after (cli)
        notes.append(
            "pip also installs or upgrades what these require (torch held where it is): "
            "each one is named after the run, and undo takes them back with the rest"
        )
    plan = Plan(
        f"{action}-{backend.name}",
        python.executable,
        python.prefix,
        tuple(steps),
        (f"{title}, torch {facts.torch.version} kept",),
        forced + tuple(notes),
    )
    return Install(plan, backend, distribution, version)


def _behind_sdpa(facts: Facts, backend: Backend) -> list[str]:
    """Installing a backend that the ranking puts after SDPA (built into torch) for training on
    this GPU buys no speed: the plan says so."""
    gpu = weakest(facts.gpus)
    if gpu is None:
        return []
    ranked = [b.name for b in ranking(gpu, Workload())]
    if backend.name not in ranked or "sdpa" not in ranked or ranked.index(backend.name) < ranked.index("sdpa"):
        return []
    here = f"{gpu.architecture} {gpu.target}"
    return [
        f"for training on this GPU ({here}) the doctor ranks {backend.label} after PyTorch SDPA, "
        f"which torch already has (`attn-doctor explain {backend.name}` says why)"
    ]


def verify_install(install: Install, before: Facts, after: Facts, torch_record: str | None) -> list[str]:
    """What is not as the plan promised after a run; empty when it is. `torch_record`: what
    `torch_record_digest` said before the run."""
    problems = []
    package = after.package(install.distribution)
    if package is None:
        problems.append(f"{install.distribution} is not installed")
    elif install.version is not None and package.version != install.version:
        problems.append(f"{install.distribution} is {package.version}, not {install.version}")
    old, new = before.torch, after.torch
    if old is not None and (new is None or (new.version, new.location) != (old.version, old.location)):
        problems.append(f"torch changed: {old.version} -> {new.version if new else 'gone'} (it must not be replaced)")
    elif torch_record != torch_record_digest(after):  # the same version reinstalled: maybe another build
        problems.append("torch was reinstalled (its RECORD changed): it must not be touched")
    # the installed backend's own verdict: its import, requirements, files and release; a FA2/FA4
    # collision is fix-shadow's to repair next, not a reason to undo
    findings = [f for f in diagnose(after) if not f.rule.is_in(Group.COLLISION)]
    verdict = assess(install.backend, after, Workload(), findings)
    if verdict.installed:  # else its one problem is the missing package, said above
        problems += verdict.problems
    hopper = any((g.compute_capability or "").startswith("9.") for g in after.gpus)
    if install.backend.name == "fa4" and hopper and after.fa4_sm90_backward is False:
        problems.append(
            "this FA4 has no Hopper backward kernel (flash_bwd_sm90.py): it cannot train here; "
            "install FA4 from its source tree instead (pip install -e flash_attn/cute, then attn-doctor fix-shadow)"
        )
    return problems


def carry_out_install(
    job: Install,
    python: str | None,
    before: Facts,
    say: Callable[[str], None],
    output: Callable[[str], None],
    on_gpu: Callable[[Facts], list[str]],
) -> Facts:
    """Run the plan, then verify it (`verify_install`, and `on_gpu`: a run of the kernel against
    the reference where there is a GPU); undo it all when anything is not as promised. Returns
    the facts collected afterwards. Raises the runner's Undone or RunnerError."""
    torch_record = torch_record_digest(before)
    collected: list[Facts] = []

    def check() -> list[str]:
        try:
            collected.append(collect(python, modules=[job.backend.module]))
        except TargetError as error:
            return [str(error)]
        return verify_install(job, before, collected[0], torch_record) or on_gpu(collected[0])

    carry_out_checked(job.plan, check, say, output)
    return collected[0]


def torch_record_digest(facts: Facts) -> str | None:
    """sha256 of torch's RECORD: a reinstall rewrites it, even of the same version. Read here,
    not by check's probe, which leaves torch's files alone for speed."""
    torch = facts.package("torch")
    try:
        return hashlib.sha256((Path(torch.dist_info) / "RECORD").read_bytes()).hexdigest() if torch else None
    except OSError:
        return None


def _cannot_run(facts: Facts, backend: Backend, torch: Torch) -> list[str]:
    """Why the backend would not run on this machine (each of these --force overrides): its
    assessment's, and what only an install asks (a GPU at all, a GPU build of torch)."""
    problems = list(assess(backend, facts, Workload(), ()).unfit)
    if not facts.gpus:
        problems.append("no GPU was found (plan for another machine with --gpu, or pass --force)")
    if not torch.cuda and not torch.hip:
        problems.append(f"torch {torch.version} is a CPU-only build")
    elif torch.hip and backend.support_for(None).amd == ():
        problems.append(f"it has no ROCm build (torch {torch.version} is built for ROCm {torch.hip})")
    return problems


def _instead(facts: Facts, backend: Backend) -> str:
    """The first backend ranked for these GPUs other than this one."""
    other = first_choice(weakest(facts.gpus), excluding=backend.name)
    if other.distribution is not None:
        return f"Instead: {other.install}"
    return "Use PyTorch SDPA (part of torch, nothing to install): attn_implementation: sdpa"
