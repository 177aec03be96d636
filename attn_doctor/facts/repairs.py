"""The repairs of an environment as their journals record them: read only.

The runner (actions/journal.py) writes these journals; `check` reads them to report a repair
that was killed half-way, so the reading lives here, below both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JOURNAL_SCHEMA = "attn-doctor/journal-2"


class JournalDamaged(Exception):
    """A journal that cannot be read, or is not one of ours: one line saying which and what to do."""


def repairs_root(prefix: str) -> Path:
    return Path(prefix) / ".attn-doctor" / "repairs"


def repair_folders(prefix: str) -> list[Path]:
    """The repair folders of this environment, newest first (their names begin with the time)."""
    root = repairs_root(prefix)
    if not root.is_dir() or root.is_symlink():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.is_symlink()), reverse=True)


def read_journal(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="ascii"))
    except (OSError, ValueError) as error:
        raise JournalDamaged(
            f"journal {path} is damaged ({error.__class__.__name__}): this repair cannot be undone from it;"
            f" move {path.parent} away to undo older repairs"
        ) from error
    if not isinstance(data, dict) or data.get("schema") != JOURNAL_SCHEMA or not isinstance(data.get("steps"), list):
        raise JournalDamaged(f"journal {path} is not an {JOURNAL_SCHEMA} journal: move {path.parent} away")
    return data


def journal_state(folder: Path) -> str | None:
    """The journal's state; None when it is missing or damaged."""
    try:
        return str(read_journal(folder / "journal.json")["state"])
    except (JournalDamaged, KeyError):
        return None


def unfinished(prefix: str) -> list[Path]:
    """Repairs that were interrupted (killed while running, or while being undone): `check`
    reports them, `attn-doctor undo` puts them back."""
    return [f for f in repair_folders(prefix) if journal_state(f) in ("running", "undoing")]
