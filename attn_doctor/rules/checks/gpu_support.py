"""An installed backend whose installed release cannot run on a GPU here."""

from __future__ import annotations

from attn_doctor.facts.model import Facts
from attn_doctor.registry.backends import (
    packaged,
)
from attn_doctor.registry.findings import BACKEND_UNSUPPORTED_GPU, Finding, distribution, finding
from attn_doctor.rules.fixes import instead


def gpu_support_findings(facts: Facts) -> list[Finding]:
    """An installed backend whose installed release cannot run on a GPU here: an error in every
    check, whether or not a config or --require names it."""
    found = []
    for backend in packaged():
        package = facts.package(backend.distribution or "")
        if package is None or package.metadata_problem:
            continue
        refused = [g for g in facts.gpus if not backend.runs_on(g, package.version)]
        if not refused:
            continue
        newest_runs = all(backend.runs_on(g) for g in refused)
        better = backend.install if newest_runs else instead(refused[0])
        rule = backend.support_for(package.version)
        for gpu in refused:
            found.append(
                finding(
                    BACKEND_UNSUPPORTED_GPU,
                    f"{backend.label} {package.version} does not run on GPU {gpu.index} ({gpu.name}, {gpu.target})",
                    [better],
                    [f"rule for {package.name} {rule.versions or 'every release'}: {rule.source}"],
                    subject=distribution(package.name),
                )
            )
    return found
