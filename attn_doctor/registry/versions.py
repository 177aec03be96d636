"""Version strings as the rules compare them: a string that is no version compares as the lowest
(an empty release) instead of raising."""

from __future__ import annotations

import re

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

_LEADING_RELEASE = re.compile(r"^\s*v?(\d+(?:\.\d+)*)")


def release(version: str | None) -> tuple[int, ...]:
    """(2, 11, 0) for "2.11.0+cu130"; (6, 3, 42131) for ROCm's "6.3.42131-fa1d09cbd" (torch.version.hip
    carries a build suffix that is no PEP 440 version); () for None or anything without a number."""
    try:
        return Version(version or "").release
    except InvalidVersion:
        match = _LEADING_RELEASE.match(version or "")
        return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def is_version(version: str | None) -> bool:
    """A PEP 440 version: what pip can ask for and compare."""
    try:
        Version(version or "")
    except InvalidVersion:
        return False
    return True


def in_range(version: str, specifier: str) -> bool:
    """Whether `version` is in a PEP 440 range ("" holds every version; pre-releases count, as
    FA4 has only those). A string that is no version is in no range but the empty one."""
    if not specifier:
        return True
    try:
        return SpecifierSet(specifier).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False
