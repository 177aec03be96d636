"""Facts -> findings: every check, each one concern in rules/checks/, run on its own.

A check that raises is a bug in the doctor, not a verdict on the machine: it becomes a
`check-crashed` finding that names the check and the error, and every other check still runs,
so one broken rule never hides the rest of the report (flutter doctor turns a crashing
validator into a result the same way).
"""

from __future__ import annotations

from collections.abc import Callable

from attn_doctor.facts.model import Facts
from attn_doctor.registry.findings import CHECK_CRASHED, Finding, finding
from attn_doctor.rules.checks import (
    binaries,
    collisions,
    freshness,
    gpu,
    gpu_code,
    gpu_support,
    hub_kernels,
    imports,
    packages,
    python,
    repairs,
    sdpa,
    toolchain,
    torch,
    xformers,
)

Check = Callable[[Facts], list[Finding]]

CHECKS: tuple[Check, ...] = (
    gpu.gpu_findings,
    python.python_findings,
    repairs.repair_findings,
    torch.torch_findings,
    packages.package_findings,
    collisions.collision_findings,
    gpu_support.gpu_support_findings,
    xformers.xformers_findings,
    hub_kernels.hub_kernel_findings,
    imports.import_findings,
    binaries.binary_findings,
    gpu_code.torch_code_findings,
    gpu_code.extension_code_findings,
    gpu_code.ptxas_findings,
    sdpa.sdpa_findings,
    freshness.freshness_findings,
    toolchain.toolchain_findings,
)


def run_check(check: Check, facts: Facts) -> list[Finding]:
    """One check's findings; its crash as a finding of its own."""
    try:
        return check(facts)
    except Exception as error:  # any bug in one check: the others still run
        where = f"{check.__module__.rsplit('.', 1)[-1]}.{check.__name__}"
        return [
            finding(
                CHECK_CRASHED,
                f"the {where} check crashed ({type(error).__name__}: {error}): what it judges is unknown here",
                ["# a bug in attn-doctor: please report this line; every other check ran"],
                [f"{where}: {type(error).__name__}: {error}"],
            )
        ]


def diagnose(facts: Facts) -> list[Finding]:
    """Every finding, the most severe first (the order within one severity is the checks' order)."""
    found = [f for check in CHECKS for f in run_check(check, facts)]
    return sorted(found, key=lambda f: -f.severity)
