"""Requires-Dist against what is installed, as `pip check` does, without importing anything.

Each requirement of an attention package (and of torch) is evaluated with the target's own
environment markers and no extra (the extras a package was installed with are not recorded),
then looked up among the target's installed distributions.

`check` must stay instant, so most lines are settled without packaging's requirement parser
(10 ms to import): a requirement on an installed distribution with a plain version range, or one
that only an extra asks for, needs no marker evaluation. The parser runs for the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from attn_doctor.facts.model import Facts, Package

# name [extras] specifier ; marker  -- the common shapes of a Requires-Dist line
_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*\(?([^;@()]*)\)?\s*(?:;(.*))?$")
_ONLY_AN_EXTRA = re.compile(r"""^\s*extra\s*==\s*["'][^"']*["']\s*$""")


@dataclass(frozen=True)
class Unmet:
    name: str  # canonical
    wanted: str  # name and version range as the line asks, "nvidia-cutlass-dsl>=4.6.2"
    installed: str | None  # the version there is; None: not installed
    line: str  # the Requires-Dist line

    def describe(self) -> str:
        if self.installed is None:
            return f"{self.wanted} is not installed"
        return f"{self.wanted} is needed, {self.installed} is installed"


def unmet(package: Package, facts: Facts) -> list[Unmet]:
    """The requirements of `package` that the target does not meet. Empty when the facts hold no
    list of installed distributions (a report saved before they were read)."""
    return unmet_lines(package.requires, facts)


def unmet_lines(requires: tuple[str, ...], facts: Facts) -> list[Unmet]:
    """The Requires-Dist lines (an installed package's, or a wheel's not yet installed) that the
    target does not meet."""
    if not facts.installed or facts.python.markers is None:
        return []
    versions = {i.name: i.version for i in facts.installed}
    found = []
    for line in requires:
        settled = _settled(line, versions)
        result = _parsed(line, versions, facts) if settled is False else settled
        if result is not None:
            found.append(result)
    return found


def _settled(line: str, versions: dict[str, str | None]) -> Unmet | Literal[False] | None:
    """The answer without the parser: None (met), an Unmet, or False (the parser must say)."""
    match = _LINE.match(line)
    if match is None:
        return False
    name, specifier, marker = canonicalize_name(match.group(1)), match.group(2).strip(), match.group(3)
    if marker is not None and _ONLY_AN_EXTRA.match(marker):
        return None  # only an extra asks for it, and the extras installed are not known
    if name not in versions:
        return False if marker is not None else Unmet(name, f"{match.group(1)}{specifier}", None, line)
    version = versions[name]
    if not specifier or version is None:
        return None
    try:
        if SpecifierSet(specifier).contains(Version(version), prereleases=True):
            return None
    except (InvalidSpecifier, InvalidVersion):
        return False
    return False if marker is not None else Unmet(name, f"{match.group(1)}{specifier}", version, line)


def _parsed(line: str, versions: dict[str, str | None], facts: Facts) -> Unmet | None:
    from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
    from packaging.requirements import InvalidRequirement, Requirement

    assert facts.python.markers is not None
    try:
        requirement = Requirement(line)
        environment = {**vars(facts.python.markers), "extra": ""}
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            return None
    except (InvalidRequirement, InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
        return None  # an unreadable requirement is the package's metadata problem, not a missing one
    name = canonicalize_name(requirement.name)
    wanted = f"{requirement.name}{requirement.specifier}"
    if name not in versions:
        return Unmet(name, wanted, None, line)
    version = versions[name]
    try:
        if version is None or requirement.specifier.contains(Version(version), prereleases=True):
            return None
    except InvalidVersion:
        return None
    return Unmet(name, wanted, version, line)
