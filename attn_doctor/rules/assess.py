"""One verdict per backend: can it be used here, and if not, why. Pure.

`assess` is the only place that answers "can backend X be used on this machine for this
workload": the gate (`--require`), the recommendation, the Axolotl config check, install's
refusal and its verification, `verify`'s choice of backends and the package lines all read it,
so they cannot disagree.

Two kinds of reasons are kept apart:
- `unfit`: the backend cannot serve here even freshly installed (no release runs on this GPU,
  torch too old, the workload's head dims), judged by the rule of the release an install brings;
- `problems`: what is wrong with it as installed (missing, broken files, unmet requirements, a
  failed import, a bad release, an installed release older than the GPU or the head dims need).
"""

from __future__ import annotations

from dataclasses import dataclass

from attn_doctor.facts.model import Facts, Gpu
from attn_doctor.registry.backends import DYNAMO_PYTHON, Backend, registered
from attn_doctor.registry.findings import (
    BACKEND_UNSUPPORTED_GPU,
    PACKAGE_LOOKALIKE,
    Finding,
    Group,
    Kind,
    Rule,
    Severity,
)
from attn_doctor.registry.versions import in_range, release
from attn_doctor.rules.ranking import major
from attn_doctor.workload import Workload

TRAINING = ("full", "lora")


def _said_here() -> set[Rule]:
    """Findings that restate what assess reads off the facts itself: the registry's bad releases."""
    return {BACKEND_UNSUPPORTED_GPU, PACKAGE_LOOKALIKE, *(bad.rule for b in registered() for bad in b.bad_releases)}


@dataclass(frozen=True)
class GpuFit:
    gpu: Gpu
    runs: bool  # the installed release (else the newest) runs on it
    rule: str  # the rule's source

    @property
    def label(self) -> str:
        return f"GPU {self.gpu.index} ({self.gpu.name}, {self.gpu.target})"


@dataclass(frozen=True)
class Assessment:
    backend: Backend
    installed: bool
    version: str | None  # the installed release (torch's for the backends inside torch)
    gpus: tuple[GpuFit, ...]
    unfit: tuple[str, ...]
    problems: tuple[str, ...]
    findings: tuple[Finding, ...]  # the findings about its distribution

    @property
    def usable(self) -> bool:
        return not self.unfit and not self.problems

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.problems + self.unfit

    @property
    def fix(self) -> str:
        """What makes it usable: the fix of what is wrong with it as installed, else its install."""
        fixes = [f.fix[0] for f in self.findings if f.severity == Severity.ERROR and f.fix]
        return fixes[0] if self.installed and fixes else self.backend.install

    @property
    def broken(self) -> bool:
        """Installed, and not as it should be (the package line's ✗)."""
        return self.installed and bool(self.problems)


def assess(backend: Backend, facts: Facts, work: Workload, findings: list[Finding] | tuple[Finding, ...]) -> Assessment:
    torch = facts.torch
    package = facts.package(backend.distribution) if backend.distribution else None
    if backend.distribution is None:  # part of torch: there when torch is, from its first release with it
        version = torch.version if torch else None
        installed = torch is not None and not backend.needs_newer_torch(torch.version)
    else:
        installed, version = package is not None, package.version if package else None
    own = tuple(
        f
        for f in findings
        if (backend.distribution and f.concerns(Kind.DISTRIBUTION, backend.distribution))
        or (f.rule.is_in(Group.CANNOT_RUN_HERE) and any(f.concerns(Kind.DISTRIBUTION, d) for d in backend.runs_through))
        or (f.rule.is_in(Group.CAVEAT) and f.concerns(Kind.MODULE, backend.module))
    )
    newest = _fit(backend, None, facts, work)
    fits = tuple(GpuFit(g, backend.runs_on(g, version), backend.support_for(version).source) for g in facts.gpus)
    problems = _problems(backend, facts, installed, version, own)
    if installed:  # what only the installed release cannot do (an upgrade would): its problem
        problems += [text for cause, text in _fit(backend, version, facts, work).items() if cause not in newest]
    return Assessment(backend, installed, version, fits, tuple(newest.values()), tuple(problems), own)


def _fit(backend: Backend, version: str | None, facts: Facts, work: Workload) -> dict[str, str]:
    """Why the release `version` (None: the newest) cannot serve this machine and workload, by cause."""
    reasons = {}
    named = f"{backend.label} {version}" if version and backend.distribution else backend.label
    for gpu in facts.gpus:
        if not backend.runs_on(gpu, version):
            reasons[f"gpu{gpu.index}"] = f"{named} does not run on GPU {gpu.index} ({gpu.name}, {gpu.target})"
    torch = facts.torch
    if torch is not None and backend.needs_newer_torch(torch.version):
        reasons["torch"] = f"{backend.label} needs torch >= {backend.min_torch}; torch is {torch.version}"
    elif torch is not None and work.axolotl is not None and backend.needs_newer_torch(torch.version, for_axolotl=True):
        reasons["torch"] = (
            f"Axolotl refuses {backend.label} below torch {backend.axolotl_min_torch}; torch is {torch.version}"
        )
    amd = any(g.vendor == "amd" for g in facts.gpus)
    if amd and backend.min_rocm and torch is not None and torch.hip and release(torch.hip) < release(backend.min_rocm):
        reasons["rocm"] = f"{backend.label} needs ROCm >= {backend.min_rocm}; torch is built for HIP {torch.hip}"
    if backend.compiled_by_dynamo and torch is not None:
        for python, floor in DYNAMO_PYTHON:
            if in_range(facts.python.version, python) and release(torch.version) < release(floor):
                reasons["compile"] = (
                    f"{backend.label} is compiled by torch.compile, which torch {torch.version} refuses on Python "
                    f"{facts.python.version} (Dynamo takes Python {python.lstrip('>=')} from torch {floor})"
                )
                break
    training = work.training in TRAINING
    if training and not backend.trains:
        reasons["backward"] = f"{backend.label} has no backward pass: inference only"
    elif training:
        forward_only = [g for g in facts.gpus if not backend.support_for(version).trains_on(g)]
        if forward_only:
            gpu = forward_only[0]
            reasons["backward"] = f"{named} has no backward pass on {gpu.sm} ({gpu.name}): forward only there"
    head_dims = _head_dims(backend, version, facts, work, named)
    if head_dims:
        reasons["head dims"] = head_dims
    hopper = any(g.compute_capability == "9.0" for g in facts.gpus)
    if backend.hopper_backward_from_files and version and hopper and training and facts.fa4_sm90_backward is False:
        reasons["hopper backward"] = (
            "the installed FA4 has no SM90 backward kernel (flash_bwd_sm90.py): it cannot train on Hopper"
        )
    return reasons


def _head_dims(backend: Backend, version: str | None, facts: Facts, work: Workload, named: str) -> str:
    head = work.head_dim
    if not head:
        return ""
    head_v = work.head_dim_v or head
    training = work.training in TRAINING
    gpus: list[Gpu | None] = list(facts.gpus) or [None]
    for limit in backend.head_dims:
        for gpu in gpus:
            if limit.refuses(version, gpu, max(head, head_v), training):
                where = f" on {gpu.sm}" if gpu is not None and (limit.except_on or limit.only_on) else ""
                what = "backward with head dims" if limit.backward_only else "head dims"
                said = f"{named} takes {what} up to {limit.max_head_dim}{where}, not {max(head, head_v)}"
                return f"{said}: {limit.why}" if limit.why else said
    if backend.head_dim_rule is not None:
        for gpu in facts.gpus:
            if gpu.vendor == "nvidia" and backend.head_dim_rule(major(gpu), head, head_v) is False:
                return (
                    f"{backend.label} ({backend.head_dim_rule_version}) cannot take head dims ({head}, {head_v}) "
                    f"on {gpu.sm}: Axolotl falls back to FA2"
                )
    return ""


def _problems(
    backend: Backend, facts: Facts, installed: bool, version: str | None, own: tuple[Finding, ...]
) -> list[str]:
    if not installed:
        if backend.distribution is not None:
            return [f"{backend.distribution} is not installed"]
        return ["torch is not installed" if version is None else f"torch {version} has no {backend.label}"]
    problems = [
        f"{name} is not installed: {backend.label} is loaded through it"
        for name in backend.requires
        if facts.package(name) is None and name not in {i.name for i in facts.installed}
    ]
    problems += [bad.title.format(version=version) for bad in backend.bad_releases_found(version, facts)]
    problems += [lookalike.title(version or "") for lookalike in backend.lookalikes_found(version)]
    said = _said_here()
    problems += [f.title for f in own if f.severity == Severity.ERROR and f.rule not in said]
    result = next((r for r in facts.imports if r.module == backend.module), None)
    if result is not None and result.outcome != "ok":
        problems.append(f"import {backend.module}: {result.outcome} ({result.detail})".replace(" ()", ""))
    return problems


def assess_all(facts: Facts, work: Workload, findings: list[Finding] | tuple[Finding, ...]) -> dict[str, Assessment]:
    return {b.name: assess(b, facts, work, findings) for b in registered()}
