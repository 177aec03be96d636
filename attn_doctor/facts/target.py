"""The target interpreter: which one it is, and what the stdlib-only probe reads inside it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attn_doctor.facts.child import Child, ChildTimeout, run_child
from attn_doctor.facts.model import (
    FactsError,
    Installed,
    Interpreter,
    Package,
    Resolution,
    Torch,
    from_data,
)
from attn_doctor.registry.backends import distributions, resolved_modules, verified_distributions

PROBE = Path(__file__).with_name("probe.py")

# Files above this size are compared by size on the fast path; `--deep` hashes them too.
# (FA2's compiled extension alone is ~400 MB: hashing it takes most of a second.)
HASH_LIMIT_BYTES = 4 << 20
PROBE_TIMEOUT_S = 60.0


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


def resolve_python(python: str | None) -> str:
    """An absolute path to the target interpreter, or TargetError with one clear line. --python
    takes an interpreter, or an environment's folder (as pip's --python does)."""
    return find_target(python)[0]


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


def target_prefix(python: str | None) -> str:
    """sys.prefix of the target interpreter: where its repairs are journaled."""
    executable = resolve_python(python)
    marker = answer_marker()
    code = f"import json, sys; print(); print({marker!r}); print(json.dumps(sys.prefix))"
    try:
        done = run_child([executable, "-B", "-c", code], PROBE_TIMEOUT_S)
    except (OSError, ChildTimeout) as error:
        raise TargetError(f"cannot run target interpreter {executable}: {error}") from error
    if done.returncode != 0:
        raise TargetError(f"target interpreter {executable} failed: {done.stderr.strip()[-200:]}")
    try:
        prefix = answer(done.stdout, marker)
    except ValueError as error:
        raise TargetError(f"target interpreter {executable} gave unreadable output: {error}") from error
    if not isinstance(prefix, str):
        raise TargetError(f"target interpreter {executable} gave no sys.prefix")
    return prefix


@dataclass(frozen=True)
class ProbeResult:
    python: Interpreter
    torch: Torch | None
    packages: tuple[Package, ...]
    resolutions: tuple[Resolution, ...]
    torch_problem: str | None
    installed: tuple[Installed, ...] = ()


class RunningProbe:
    """The probe started in the background, so NVML and the toolchain are read meanwhile."""

    def __init__(self, python: str, deep: bool) -> None:
        request = {
            "distributions": distributions(),
            "verify": verified_distributions(),
            "modules": resolved_modules(),
            "hash_limit": None if deep else HASH_LIMIT_BYTES,
        }
        self.python = python
        self._marker = answer_marker()
        try:
            # `-c` with the source, not the file path: the probe's own folder must not land on
            # the target's sys.path. The working directory is removed inside the probe.
            # -B: importing the probe's stdlib modules and the target's .pth files writes no bytecode
            # into a site-packages made without it (check changes nothing)
            probe = PROBE.read_text(encoding="utf-8")
            self._child = Child([python, "-B", "-c", probe, json.dumps(request), self._marker])
        except OSError as error:
            raise TargetError(f"cannot run target interpreter {python}: {error.strerror}") from error

    def result(self) -> ProbeResult:
        try:
            done = self._child.finish(PROBE_TIMEOUT_S)
        except ChildTimeout as error:
            raise TargetError(f"the probe in {self.python} did not answer in {PROBE_TIMEOUT_S:.0f} s") from error
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise TargetError(f"the probe crashed in {self.python} (exit {done.returncode}): {last}")
        try:
            return parse_probe(answer(done.stdout, self._marker))
        except (ValueError, FactsError, KeyError) as error:
            raise TargetError(f"the probe in {self.python} gave unreadable output: {error}") from error


def answer_marker() -> str:
    """A line no .pth file can have printed by chance: what a child prints after it is its answer."""
    return f"attn-doctor-answer-{secrets.token_hex(8)}"


def answer(stdout: str, marker: str) -> Any:
    """The JSON line after the marker line. Whatever the target printed on its own (a .pth file, a
    sitecustomize, an atexit hook) is above the marker or below the answer, and costs nothing."""
    _, found, after = stdout.rpartition(f"\n{marker}\n")
    if not found:
        raise ValueError(f"no answer in its output ({stdout.strip()[:80]!r})")
    return json.loads(after.partition("\n")[0])


def parse_probe(data: dict[str, Any]) -> ProbeResult:
    torch_data = data.get("torch")
    torch: Torch | None = None
    torch_problem = None
    if torch_data:
        if torch_data.get("error") or not torch_data.get("version"):
            torch_problem = torch_data.get("error") or "torch/version.py has no __version__"
        else:
            torch = from_data(Torch, torch_data)
    return ProbeResult(
        python=from_data(Interpreter, {**data["interpreter"], "markers": data.get("markers")}),
        torch=torch,
        packages=tuple(from_data(Package, d) for d in data["distributions"]),
        resolutions=tuple(from_data(Resolution, r) for r in data["resolutions"]),
        torch_problem=torch_problem,
        installed=tuple(
            Installed(name, version if isinstance(version, str) else None)
            for name, version in sorted((data.get("installed") or {}).items())
        ),
    )
