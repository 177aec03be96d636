"""The CI gate: `--require BACKEND[SPEC]` judged on the facts, and drift from a lock file.

Pure functions of the facts, like diagnose.py. A requirement is met when the backend is
installed in a version the spec allows, its files are as installed, its import succeeded in a
child process, and it runs on every visible GPU (skipped with `--no-gpu-ok` when there is none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from attn_doctor.facts.model import Facts
from attn_doctor.rules.backends import BY_NAME, Backend

if TYPE_CHECKING:
    from packaging.requirements import Requirement


class RequirementError(ValueError):
    """A --require that does not parse or names no backend (exit 2)."""


@dataclass(frozen=True)
class Required:
    text: str  # as the user wrote it
    backend: Backend
    requirement: Requirement


@dataclass(frozen=True)
class RequirementResult:
    text: str
    met: bool
    reasons: tuple[str, ...]  # why not, one line each
    fix: tuple[str, ...]


def parse_requirement(text: str) -> Required:
    # imported here: packaging's requirement parser costs 10 ms, and most checks require nothing
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requirement = Requirement(text.strip())
    except InvalidRequirement as error:
        # packaging draws a caret under the error on more lines: the first says it
        raise RequirementError(f"--require {text!r}: {str(error).splitlines()[0]}") from error
    backend = BY_NAME.get(requirement.name.lower())
    if backend is None:
        raise RequirementError(f"--require {text!r}: no backend {requirement.name!r} (one of {', '.join(BY_NAME)})")
    return Required(text.strip(), backend, requirement)


def import_modules(required: list[Required]) -> list[str]:
    """What the collector must import in a child process to judge these requirements."""
    return sorted({r.backend.module for r in required})


def judge_requirement(facts: Facts, required: Required, no_gpu_ok: bool) -> RequirementResult:
    backend, reasons = required.backend, []
    torch = facts.torch
    if backend.distribution is None:
        version = torch.version if torch else None
        what = "torch"
    else:
        package = facts.package(backend.distribution)
        version = package.version if package else None
        what = backend.distribution
        if package is not None and (package.modified or package.missing or package.metadata_problem):
            reasons.append(f"{what}'s files are not as installed (see its findings)")
    if version is None:
        reasons.insert(0, f"{what} is not installed")
    elif required.requirement.specifier and not _allowed(required, version):
        reasons.append(f"{what} {version} does not satisfy {required.requirement.specifier}")
    if torch is not None and backend.needs_newer_torch(torch.version):
        reasons.append(f"{backend.label} needs torch >= {backend.min_torch}; torch is {torch.version}")
    result = next((r for r in facts.imports if r.module == backend.module), None)
    if version is not None and result is not None and result.outcome != "ok":
        reasons.append(f"import {backend.module}: {result.outcome} ({result.detail})")
    if facts.gpus:
        reasons += [
            f"{backend.label} does not run on GPU {g.index} ({g.name}, {g.sm or g.gfx_target})"
            for g in facts.gpus
            if not backend.runs_on(g)
        ]
    elif not no_gpu_ok:
        reasons.append("no GPU to run it on (pass --no-gpu-ok, or --gpu to judge for another machine)")
    return RequirementResult(required.text, not reasons, tuple(reasons), () if not reasons else (backend.install,))


def _allowed(required: Required, version: str) -> bool:
    try:
        return required.requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False
