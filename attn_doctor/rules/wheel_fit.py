"""Whether a wheel's compiled files fit this machine, from their reading: the same judgements as
`check` makes of installed ones (rules/checks/binaries.py, gpu_code.py), said as reasons to pass
a candidate over before it is installed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from attn_doctor.facts.model import Binary, Facts
from attn_doctor.registry import cuda
from attn_doctor.registry.backends import Backend
from attn_doctor.rules.requirements import unmet_lines


def misfits(binaries: tuple[Binary, ...], facts: Facts) -> list[str]:
    """Why these files would not load or not run here; empty where they fit."""
    reasons = []
    torch = f"torch {facts.torch.version}" if facts.torch else "the installed torch"
    gpus = [g for g in facts.gpus if g.vendor == "nvidia" and g.compute_capability]
    for binary in binaries:
        name = Path(binary.path).name
        if binary.error:
            reasons.append(f"{name}: unreadable ({binary.error})")
            continue
        if binary.missing_libraries:
            reasons.append(f"{name} needs {', '.join(binary.missing_libraries)}, which this machine does not have")
        if binary.missing_symbols:
            if binary.abi and binary.torch_abi and binary.abi != binary.torch_abi:
                reasons.append(f"{name} is built with the {binary.abi} C++ ABI, {torch} with the {binary.torch_abi}")
            else:
                reasons.append(f"{name} imports {len(binary.missing_symbols)} torch symbol(s) {torch} lacks")
        for need in binary.missing_versions:
            reasons.append(f"{name} needs {need.version} from {need.library}, newer than this machine's")
        for gpu in gpus:
            if binary.cuda_code and not cuda.runs_any(binary.cuda_code, gpu.compute_capability or ""):
                reasons.append(f"{name} carries no code for {gpu.sm} (it has {cuda.shown(binary.cuda_code)})")
    return reasons


def broken_builds(backend: Backend, version: str, marked: tuple[str, ...], facts: Facts) -> list[str]:
    """The registry's broken builds of this release that the wheel is, told by the file marks found in
    its own files (`marked`: "distribution:path", as Facts.marked_files), judged as check judges an
    installed one: BadRelease.found, the GPUs where the fault bites included."""
    as_installed = dataclasses.replace(facts, marked_files=marked)
    return [
        f"{bad.title.format(version=version)} ({bad.mark.path})"
        for bad in backend.bad_releases_found(version, as_installed)
        if bad.mark is not None
    ]


def torch_unmet(requires: tuple[str, ...], facts: Facts) -> list[str]:
    """A wheel's requirement on torch that the installed torch does not meet (xFormers' wheels up to
    0.0.34 each require one exact torch): pip would replace torch, or, held, refuse the wheel."""
    return [
        f"it requires {u.wanted}, and torch {u.installed} is installed: pip would replace torch"
        for u in unmet_lines(requires, facts)
        if u.name == "torch" and u.installed is not None
    ]
