"""Releases newer than these rules know: said as a note with the run that proves them here, never
silence (the rules would judge them as the newest known one) and never an error."""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from attn_doctor.facts.model import Facts
from attn_doctor.registry.backends import RULES_CHECKED, TORCH_CHECKED_UP_TO, registered
from attn_doctor.registry.findings import RELEASE_NEWER_THAN_RULES, Finding, distribution, finding


def _newer(version: str | None, known: str) -> bool:
    try:
        return version is not None and Version(version.split("+", 1)[0]) > Version(known)
    except InvalidVersion:
        return False  # an invalid version is package-metadata-broken's


def freshness_findings(facts: Facts) -> list[Finding]:
    found = []
    torch = facts.torch
    if torch is not None and _newer(torch.version, TORCH_CHECKED_UP_TO):
        found.append(
            finding(
                RELEASE_NEWER_THAN_RULES,
                f"torch {torch.version} is newer than these rules know (torch {TORCH_CHECKED_UP_TO}, checked "
                f"{RULES_CHECKED})",
                ["attn-doctor verify sdpa flex  # proves SDPA and flex attention on this GPU"],
                subject=distribution("torch"),
            )
        )
    for backend in registered():
        package = facts.package(backend.distribution or "")
        if package is None or not backend.checked_up_to or not _newer(package.version, backend.checked_up_to):
            continue
        proof = f"attn-doctor verify {backend.name}" if backend.verifiable else "attn-doctor check --deep"
        found.append(
            finding(
                RELEASE_NEWER_THAN_RULES,
                f"{package.name} {package.version} is newer than these rules know ({backend.checked_up_to}, checked "
                f"{RULES_CHECKED})",
                [f"{proof}  # proves it on this GPU"],
                subject=distribution(package.name),
            )
        )
    return found
