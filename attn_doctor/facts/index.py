"""The releases of a distribution that the installer's index offers, as the target's own pip lists
them (`pip index versions --pre`: its configuration, its index and credentials, `--find-links`
for a wheelhouse, `--no-index` offline). Pre-releases count: flash-attn-4 has nothing else."""

from __future__ import annotations

import json
from collections.abc import Sequence

from packaging.utils import canonicalize_name

from attn_doctor.facts.child import ChildTimeout, run_child

INDEX_TIMEOUT_S = 30.0
RESOLVE_TIMEOUT_S = 90.0  # pip's resolver reads each candidate's metadata from the index


def index_versions(
    python: str, distribution: str, find_links: str | None = None, offline: bool = False
) -> list[str] | None:
    """Newest first; None when pip cannot tell (no index reached, no pip, no such distribution)."""
    argv = [python, "-m", "pip", "index", "versions", "--pre", "--disable-pip-version-check", distribution]
    argv += ["--find-links", find_links] if find_links else []
    argv += ["--no-index"] if offline else []
    try:
        done = run_child(argv, INDEX_TIMEOUT_S)
    except (OSError, ChildTimeout):
        return None
    if done.returncode != 0:
        return None
    for line in done.stdout.splitlines():
        if line.startswith("Available versions:"):
            return [v.strip() for v in line.split(":", 1)[1].split(",") if v.strip()]
    return None


def resolved_version(
    python: str,
    distribution: str,
    held: Sequence[str],
    find_links: str | None = None,
    offline: bool = False,
    flags: Sequence[str] = (),
) -> str | None:
    """The newest release of `distribution` that the target's own pip resolves with the `held`
    requirements (`torch==2.11.0`: kept where it is), from its index or the wheelhouse, without
    installing anything (`pip install --dry-run --report`, pip 22.2 and later). A release whose
    Requires-Dist wants another torch is passed over by the resolver itself. None when pip cannot
    tell (no index reached, no release fits, a pip too old, or the installed one is that newest)."""
    argv = [python, "-m", "pip", "install", "--dry-run", "--quiet", "--upgrade", "--report", "-"]
    argv += ["--disable-pip-version-check", *flags, distribution, *held]
    argv += ["--find-links", find_links] if find_links else []
    argv += ["--no-index"] if offline else []
    try:
        done = run_child(argv, RESOLVE_TIMEOUT_S)
        report = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, ChildTimeout, ValueError):
        return None
    wanted = canonicalize_name(distribution)
    for item in (report or {}).get("install", []):
        metadata = item.get("metadata", {}) if isinstance(item, dict) else {}
        if canonicalize_name(str(metadata.get("name", ""))) == wanted and metadata.get("version"):
            return str(metadata["version"])
    return None
