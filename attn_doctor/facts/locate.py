"""Which interpreter is the target, and the probe started in it: the standard library only, so
that `check`'s head start (facts/head_start.py) can start the probe before the doctor's own
imports."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from attn_doctor.facts.child import Child

PROBE = Path(__file__).with_name("probe.py")


class TargetError(Exception):
    """The target interpreter could not be inspected (exit code 3)."""


THIS_PYTHON = "this Python"  # how the target was found when nothing named one: the doctor's own


def default_python() -> tuple[str, str]:
    """The target when no --python names one, and how it was found, as uv finds a project's
    environment: the active virtualenv, else the active conda env unless it is conda's base (no
    project's), else a .venv in the working folder or a parent, else the interpreter running the
    doctor (crates/uv-python/src/virtualenv.rs)."""
    for variable in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        prefix = os.environ.get(variable)
        if not prefix or (variable == "CONDA_PREFIX" and _conda_base(prefix)):
            continue
        candidate = Path(prefix) / "bin" / "python"
        if candidate.exists():
            return str(candidate), f"${variable}"
    here = Path.cwd()
    for folder in (here, *here.parents):
        candidate = folder / ".venv" / "bin" / "python"
        if (folder / ".venv" / "pyvenv.cfg").is_file() and candidate.exists():
            return str(candidate), f"{folder / '.venv'}"
    return sys.executable, THIS_PYTHON


def _conda_base(prefix: str) -> bool:
    """conda's base environment: CONDA_DEFAULT_ENV says base (or root), or the prefix holds envs/."""
    return os.environ.get("CONDA_DEFAULT_ENV") in ("base", "root") or (Path(prefix) / "envs").is_dir()


def find_target(python: str | None) -> tuple[str, str]:
    """(the target interpreter's absolute path, how it was found)."""
    chosen, found_by = (python, "--python") if python else default_python()
    if os.sep not in chosen:
        found = shutil.which(chosen)
        if found is None:
            raise TargetError(f"target interpreter {chosen!r} is not on PATH")
        chosen = found
    path = Path(chosen)
    if path.is_dir() and (path / "bin" / "python").exists():
        path = path / "bin" / "python"  # a venv or conda env's folder
    if not path.exists():
        raise TargetError(f"target interpreter {chosen} does not exist")
    if path.is_dir() or not os.access(path, os.X_OK):
        raise TargetError(f"target interpreter {chosen} is not an executable file")
    return str(path.absolute()), found_by


def answer_marker() -> str:
    """A line no .pth file can have printed by chance: what a child prints after it is its answer."""
    return f"attn-doctor-answer-{os.urandom(8).hex()}"


def start_probe(python: str) -> tuple[Child, str]:
    """The probe started in `python`, waiting for its request on standard input (`Child.feed`),
    and the marker its answer will follow. OSError when it cannot start."""
    marker = answer_marker()
    # `-c` with the source, not the file path: the probe's own folder must not land on the target's
    # sys.path. The working directory is removed inside the probe. -B: importing the probe's stdlib
    # modules and the target's .pth files writes no bytecode into a site-packages made without it
    # (check changes nothing).
    return Child([python, "-B", "-c", PROBE.read_text(encoding="utf-8"), "-", marker], fed=True), marker
