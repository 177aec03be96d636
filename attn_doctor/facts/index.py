"""The releases of a distribution that the installer's index offers, as the target's own pip lists
them (`pip index versions --pre`: its configuration, its index and credentials, `--find-links`
for a wheelhouse, `--no-index` offline). Pre-releases count: flash-attn-4 has nothing else."""

from __future__ import annotations

from attn_doctor.facts.child import ChildTimeout, run_child

INDEX_TIMEOUT_S = 30.0


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
