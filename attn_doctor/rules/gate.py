"""The CI gate: `--require BACKEND[SPEC]` judged on the facts, and drift from a lock file.

Pure functions of the facts, like diagnose.py. A requirement is met when the backend's assessment
(rules/assess.py) calls it usable, in a version the spec allows, and there is a GPU (or
`--no-gpu-ok`): the same verdict as the recommendation's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from attn_doctor.registry.backends import Backend, by_name
from attn_doctor.rules.assess import Assessment

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
    extra = _more_than_a_version(requirement)
    if extra:
        raise RequirementError(f"--require {text!r}: give a backend and a version spec only, not {extra}")
    backend = by_name().get(requirement.name.lower())
    if backend is None:
        raise RequirementError(f"--require {text!r}: no backend {requirement.name!r} (one of {', '.join(by_name())})")
    return Required(text.strip(), backend, requirement)


def _more_than_a_version(requirement: Requirement) -> str | None:
    """The gate judges the version of what is installed: a URL, extras or a marker would be taken
    as asked for and then ignored (`fa4 @ file:///etc/passwd` passed), so they are refused."""
    if requirement.url:
        return f"a URL ({requirement.url})"
    if requirement.extras:
        return f"extras [{','.join(sorted(requirement.extras))}]"
    if requirement.marker:
        return f"a marker ({requirement.marker})"
    return None


def judge_requirement(required: Required, verdict: Assessment, has_gpu: bool, no_gpu_ok: bool) -> RequirementResult:
    """Met when the backend's assessment says usable (installed as it should be, requirements
    met, import fine, runs on every GPU, fits the workload) and the version is allowed."""
    reasons = list(verdict.reasons)
    what = required.backend.distribution or "torch"
    if verdict.version is not None and required.requirement.specifier and not _allowed(required, verdict.version):
        reasons.append(f"{what} {verdict.version} does not satisfy {required.requirement.specifier}")
    if not has_gpu and not no_gpu_ok:
        reasons.append("no GPU to run it on (pass --no-gpu-ok, or --gpu to judge for another machine)")
    return RequirementResult(
        required.text, not reasons, tuple(reasons), () if not reasons else (required.backend.install,)
    )


def _allowed(required: Required, version: str) -> bool:
    try:
        return required.requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False
