"""build: compile a backend once into a wheel that every node of a cluster installs without
compiling (`install --find-links DIR` finds it, proves it and installs it).

The plan is install's compile plan with its last step writing a wheel instead of installing
(`compile_step`); it runs under the same journal, so a source tree it placed in the environment is
taken back by `undo`. The wheel it leaves is proven as any prebuilt wheel is, against this torch
and the GPUs it was built for; one that does not fit is removed and the build undone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from attn_doctor.actions.install import Install
from attn_doctor.actions.recipes.prebuilt import misfit_reasons
from attn_doctor.actions.runner import carry_out_checked
from attn_doctor.facts.model import Facts


def wheels_in(folder: str) -> set[Path]:
    return set(Path(folder).glob("*.whl"))


def carry_out_build(
    job: Install,
    wheelhouse: str,
    facts: Facts,
    say: Callable[[str], None],
    output: Callable[[str], None],
) -> list[Path]:
    """Run the plan, then prove what it wrote into `wheelhouse`; the wheels it kept. Raises the
    runner's Undone (the misfit wheels removed first) or RunnerError."""
    before = wheels_in(wheelhouse)
    kept: list[Path] = []

    def prove() -> list[str]:
        made = [
            (w, release)
            for w in sorted(wheels_in(wheelhouse) - before)
            if (release := _release_of(w, job.distribution))
        ]
        if not made:
            return [f"no {job.distribution} wheel was written to {wheelhouse}"]
        problems = []
        for wheel, release in made:
            reasons = misfit_reasons(facts, wheel, job.distribution, release)
            if reasons:
                wheel.unlink()
                problems.append(f"{wheel.name} does not fit ({'; '.join(reasons)}): removed")
            else:
                kept.append(wheel)
        return problems

    carry_out_checked(job.plan, prove, say, output)
    return kept


def _release_of(wheel: Path, distribution: str) -> str | None:
    """The release of a wheel of `distribution`, by its file name; None for another's (or no wheel's)."""
    try:
        name, version, _, _ = parse_wheel_filename(wheel.name)
    except InvalidWheelFilename:
        return None
    return str(version.public) if name == canonicalize_name(distribution) else None
