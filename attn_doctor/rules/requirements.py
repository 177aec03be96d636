"""Requires-Dist against what is installed, as `pip check` does, without importing anything.

Each requirement of an attention package (and of torch) is evaluated with the target's own
environment markers and no extra (the extras a package was installed with are not recorded),
then looked up among the target's installed distributions.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from attn_doctor.facts.model import Facts, Package


@dataclass(frozen=True)
class Unmet:
    requirement: Requirement
    installed: str | None  # the version there is; None: not installed

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    def describe(self) -> str:
        wanted = f"{self.requirement.name}{self.requirement.specifier}"
        if self.installed is None:
            return f"{wanted} is not installed"
        return f"{wanted} is needed, {self.installed} is installed"


def unmet(package: Package, facts: Facts) -> list[Unmet]:
    """The requirements of `package` that the target does not meet. Empty when the facts hold no
    list of installed distributions (a report saved before they were read)."""
    markers = facts.python.markers
    if not facts.installed or markers is None:
        return []
    environment = {**vars(markers), "extra": ""}
    versions = {i.name: i.version for i in facts.installed}
    found = []
    for line in package.requires:
        try:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
        except (InvalidRequirement, InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
            continue  # an unreadable requirement is the package's metadata problem, not a missing one
        name = canonicalize_name(requirement.name)
        if name not in versions:
            found.append(Unmet(requirement, None))
            continue
        version = versions[name]
        if version is None or not requirement.specifier:
            continue
        try:
            if not requirement.specifier.contains(Version(version), prereleases=True):
                found.append(Unmet(requirement, version))
        except InvalidVersion:
            continue
    return found
