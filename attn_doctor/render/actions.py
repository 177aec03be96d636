"""What install and fix-shadow show: the plan before it runs, and what was verified after."""

from __future__ import annotations

from attn_doctor.actions.install import Install
from attn_doctor.actions.plan import Plan
from attn_doctor.facts.model import Facts


def plan_lines(plan: Plan, heading: str) -> list[str]:
    """The reasons, the notes and every step, numbered as the run will number them."""
    lines = [heading, *(f"  {reason}" for reason in plan.reasons)]
    lines += [f"  - {note}" for note in plan.notes]
    lines.append(f"Steps for {plan.python} (log, backups and journal under {plan.prefix}/.attn-doctor/repairs/):")
    return lines + plan.lines()


def installed_line(job: Install, after: Facts) -> str:
    package = after.package(job.distribution)
    loaded = next((r for r in after.imports if r.module == job.backend.module), None)
    line = f"Verified: {job.distribution} {package.version if package else '?'} installed"
    if loaded is not None:
        line += f", import {job.backend.module} ok in {loaded.seconds:.1f} s"
    return line + f", torch {after.torch.version if after.torch else '?'} unchanged."


def also_changed(before: Facts, after: Facts, installed: str) -> list[str]:
    """Every other distribution the install added, upgraded or removed (pip resolves the backend's
    requirements: setuptools may move with it). Undo takes them back with the rest."""
    old = {i.name: i.version for i in before.installed}
    new = {i.name: i.version for i in after.installed}
    lines = [
        f"  {name}: {old.get(name) or 'not installed'} -> {new.get(name) or 'removed'}"
        for name in sorted(old.keys() | new.keys())
        if name != installed and old.get(name) != new.get(name)
    ]
    return ["Also changed by the install (undo takes these back too):", *lines] if lines else []
