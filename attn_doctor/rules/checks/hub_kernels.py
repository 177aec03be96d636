"""Hub kernels: the `kernels` release that the installed transformers loads them with."""

from __future__ import annotations

import shlex

from packaging.requirements import InvalidRequirement, Requirement

from attn_doctor.facts.model import Facts, Package
from attn_doctor.registry.backends import KERNELS_DISTRIBUTION, TRANSFORMERS_DISTRIBUTION
from attn_doctor.registry.findings import KERNELS_REFUSED_BY_TRANSFORMERS, Finding, distribution, finding
from attn_doctor.registry.hub import TRANSFORMERS_WINDOW_SOURCE
from attn_doctor.rules.fixes import pip_install


def kernels_window(transformers: Package) -> str | None:
    """The `kernels` releases this transformers accepts, as its metadata names them: a dependency
    (from 5.25), else its `kernels` extra; None where it names none."""
    found: list[Requirement] = []
    for line in transformers.requires:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.name.lower() == KERNELS_DISTRIBUTION and str(requirement.specifier):
            found.append(requirement)
    found.sort(key=lambda r: r.marker is not None)  # a plain dependency first
    return str(found[0].specifier) if found else None


def hub_kernel_findings(facts: Facts) -> list[Finding]:
    kernels, transformers = facts.package(KERNELS_DISTRIBUTION), facts.package(TRANSFORMERS_DISTRIBUTION)
    if kernels is None or transformers is None or kernels.version is None:
        return []
    window = kernels_window(transformers)
    if window is None or Requirement(f"kernels{window}").specifier.contains(kernels.version, prereleases=True):
        return []
    return [
        finding(
            KERNELS_REFUSED_BY_TRANSFORMERS,
            f"kernels {kernels.version} is outside what transformers {transformers.version} loads Hub kernels "
            f"with ({window}): an attn_implementation of the form org/name fails to load",
            [pip_install(facts, shlex.quote(f"kernels{window}"))],
            [f"transformers {transformers.version} requires kernels{window}", TRANSFORMERS_WINDOW_SOURCE],
            subject=distribution(KERNELS_DISTRIBUTION),
        )
    ]
