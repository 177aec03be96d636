"""`attn-doctor lock` and `check --against`: the healthy state recorded, and what changed since.

A lock keeps what decides whether the attention stack still works: the GPU generations, the
torch build, and each attention package's version and RECORD digest (a reinstall, say of FA2
built for another torch, changes the digest even at the same version).
"""

from __future__ import annotations

from typing import Any

from attn_doctor.facts.model import Facts
from attn_doctor.facts.saved import LOCK_SCHEMA
from attn_doctor.registry.findings import DRIFT_GPU, DRIFT_PACKAGE, DRIFT_TORCH, Finding, distribution, finding


def lock_data(facts: Facts) -> dict[str, Any]:
    return {
        "schema": LOCK_SCHEMA,
        "created": facts.collected_at,
        "doctor_version": facts.doctor_version,
        "python": facts.python.version,
        "gpus": sorted(_gpu_generations(facts)),
        "torch": None
        if facts.torch is None
        else {"version": facts.torch.version, "cuda": facts.torch.cuda, "hip": facts.torch.hip},
        "packages": {
            p.name: {"version": p.version, "record_sha256": p.record_sha256}
            for p in facts.packages
            if p.name != "torch"
        },
    }


def _gpu_generations(facts: Facts) -> set[str]:
    return {f"{g.architecture} {g.compute_capability or g.gfx_target}" for g in facts.gpus}


def drift(facts: Facts, lock: dict[str, Any]) -> list[Finding]:
    """Every difference between this machine and the lock, one finding each."""
    now = lock_data(facts)
    found = []
    if set(lock["gpus"]) != set(now["gpus"]):
        found.append(finding(DRIFT_GPU, f"GPUs changed: {_gpus(lock['gpus'])} (locked) -> {_gpus(now['gpus'])}"))
    if lock["torch"] != now["torch"]:
        found.append(
            finding(
                DRIFT_TORCH,
                f"torch changed: {_torch(lock['torch'])} (locked) -> {_torch(now['torch'])}",
                subject=distribution("torch"),
            )
        )
    locked, current = lock["packages"], now["packages"]
    for name in sorted(locked.keys() | current.keys()):
        before, after = locked.get(name), current.get(name)
        if before == after:
            continue
        if after is None:
            title = f"{name} {before['version']} was removed"
        elif before is None:
            title = f"{name} {after['version']} was added"
        elif before["version"] != after["version"]:
            title = f"{name} changed: {before['version']} (locked) -> {after['version']}"
        else:
            title = f"{name} {after['version']} was reinstalled: its files are not the locked ones"
        found.append(finding(DRIFT_PACKAGE, title, subject=distribution(name)))
    return found


def _gpus(generations: list[str]) -> str:
    return ", ".join(generations) or "none"


def _torch(torch: dict[str, Any] | None) -> str:
    if torch is None:
        return "not installed"
    build = f"CUDA {torch['cuda']}" if torch.get("cuda") else f"HIP {torch['hip']}" if torch.get("hip") else "CPU"
    return f"{torch['version']} ({build})"
