"""Which interpreter is the target, and the probe started in it: the standard library only, and
only what the interpreter has loaded already (os, sys) besides `subprocess`, so that `check`'s head
start (facts/head_start.py) starts the probe before the doctor's own imports, not after some of
them (pathlib, shutil, typing and dataclasses cost 10-40 ms to import)."""

from __future__ import annotations

import os
import sys

from attn_doctor.facts.child import Child

PROBE = os.path.join(os.path.dirname(__file__), "probe.py")


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
        candidate = os.path.join(prefix, "bin", "python")
        if os.path.exists(candidate):
            return candidate, f"${variable}"
    folder = os.getcwd()
    while True:
        venv = os.path.join(folder, ".venv")
        candidate = os.path.join(venv, "bin", "python")
        if os.path.isfile(os.path.join(venv, "pyvenv.cfg")) and os.path.exists(candidate):
            return candidate, venv
        parent = os.path.dirname(folder)
        if parent == folder:
            return sys.executable, THIS_PYTHON
        folder = parent


def _conda_base(prefix: str) -> bool:
    """conda's base environment: CONDA_DEFAULT_ENV says base (or root), or the prefix holds envs/."""
    return os.environ.get("CONDA_DEFAULT_ENV") in ("base", "root") or os.path.isdir(os.path.join(prefix, "envs"))


def find_target(python: str | None) -> tuple[str, str]:
    """(the target interpreter's absolute path, how it was found)."""
    chosen, found_by = (python, "--python") if python else default_python()
    if os.sep not in chosen:
        import shutil  # only for a bare name

        found = shutil.which(chosen)
        if found is None:
            raise TargetError(f"target interpreter {chosen!r} is not on PATH")
        chosen = found
    path = chosen
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "bin", "python")):
        path = os.path.join(path, "bin", "python")  # a venv or conda env's folder
    if not os.path.exists(path):
        raise TargetError(f"target interpreter {chosen} does not exist")
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise TargetError(f"target interpreter {chosen} is not an executable file")
    return _absolute(path), found_by


def _absolute(path: str) -> str:
    """As pathlib's absolute(): joined to the working folder, `.` and doubled slashes dropped, a
    `..` kept and a link not resolved (the target is the interpreter as named)."""
    joined = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    return os.sep + os.sep.join(part for part in joined.split(os.sep) if part not in ("", "."))


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
    return Child([python, "-B", "-c", _probe_source(), "-", marker], fed=True), marker


def _probe_source() -> str:
    with open(PROBE, encoding="utf-8") as source:
        return source.read()
