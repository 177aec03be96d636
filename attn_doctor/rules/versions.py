"""Version strings as the rules compare them: a string that is no version compares as the lowest
(an empty release) instead of raising."""

from __future__ import annotations

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version


def release(version: str | None) -> tuple[int, ...]:
    """(2, 11, 0) for "2.11.0+cu130"; () for None or anything that is not a version."""
    try:
        return Version(version or "").release
    except InvalidVersion:
        return ()


def is_version(version: str | None) -> bool:
    return bool(release(version))


def in_range(version: str, specifier: str) -> bool:
    """Whether `version` is in a PEP 440 range ("" holds every version; pre-releases count, as
    FA4 has only those). A string that is no version is in no range but the empty one."""
    if not specifier:
        return True
    try:
        return SpecifierSet(specifier).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False
