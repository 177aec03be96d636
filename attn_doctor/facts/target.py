"""The target interpreter: which one it is, and what the stdlib-only probe reads inside it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attn_doctor.facts.model import (
    FactsError,
    Interpreter,
    Package,
    Resolution,
    Torch,
    from_data,
)

PROBE = Path(__file__).with_name("probe.py")

# The distributions `check` reads. Only the attention packages get their files verified
# against RECORD: torch's own 15,000 files would cost seconds.
DISTRIBUTIONS = (
    "torch",
    "flash-attn",
    "flash-attn-4",
    "flash-attn-3",  # FA3's hopper/ build: distribution `flash_attn_3`
    "sageattention",
    "xformers",
    "triton",
    "nvidia-cutlass-dsl",  # FA4's CuTe DSL
    "axolotl",
)
VERIFIED = ("flash-attn", "flash-attn-4", "flash-attn-3", "sageattention", "xformers")

# Where each import resolves. `flash_attn.cute` is FA4 (or FA2's stale copy of it);
# `flash_attn_interface` is FA3's top-level module.
MODULES = (
    "torch",
    "flash_attn",
    "flash_attn.cute",
    "flash_attn_2_cuda",  # FA2's compiled extension, a top-level module
    "flash_attn_3",
    "flash_attn_interface",
    "sageattention",
    "xformers",
    "triton",
)

# Files above this size are compared by size on the fast path; `--deep` hashes them too.
# (FA2's compiled extension alone is ~400 MB: hashing it takes most of a second.)
HASH_LIMIT_BYTES = 4 << 20
PROBE_TIMEOUT_S = 60.0


class TargetError(Exception):
    """The target interpreter could not be inspected (exit code 3)."""


def default_python() -> str:
    """The active virtualenv or conda env, else the interpreter running the doctor."""
    for variable in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        prefix = os.environ.get(variable)
        if prefix:
            candidate = Path(prefix) / "bin" / "python"
            if candidate.exists():
                return str(candidate)
    return sys.executable


def resolve_python(python: str | None) -> str:
    """An absolute path to the target interpreter, or TargetError with one clear line."""
    chosen = python or default_python()
    if os.sep not in chosen:
        found = shutil.which(chosen)
        if found is None:
            raise TargetError(f"target interpreter {chosen!r} is not on PATH")
        chosen = found
    path = Path(chosen)
    if not path.exists():
        raise TargetError(f"target interpreter {chosen} does not exist")
    if path.is_dir() or not os.access(path, os.X_OK):
        raise TargetError(f"target interpreter {chosen} is not an executable file")
    return str(path.absolute())


def target_prefix(python: str | None) -> str:
    """sys.prefix of the target interpreter: where its repairs are journaled."""
    executable = resolve_python(python)
    try:
        done = subprocess.run(
            [executable, "-c", "import sys; print(sys.prefix)"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise TargetError(f"cannot run target interpreter {executable}: {error}") from error
    if done.returncode != 0:
        raise TargetError(f"target interpreter {executable} failed: {done.stderr.strip()[-200:]}")
    return done.stdout.strip()


@dataclass(frozen=True)
class ProbeResult:
    python: Interpreter
    torch: Torch | None
    packages: tuple[Package, ...]
    resolutions: tuple[Resolution, ...]
    torch_problem: str | None


class RunningProbe:
    """The probe started in the background, so NVML and the toolchain are read meanwhile."""

    def __init__(self, python: str, deep: bool) -> None:
        request = {
            "distributions": list(DISTRIBUTIONS),
            "verify": list(VERIFIED),
            "modules": list(MODULES),
            "hash_limit": None if deep else HASH_LIMIT_BYTES,
        }
        self.python = python
        try:
            # `-c` with the source, not the file path: the probe's own folder must not land on
            # the target's sys.path. The working directory is removed inside the probe.
            self._process = subprocess.Popen(
                [python, "-c", PROBE.read_text(encoding="utf-8"), json.dumps(request)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
            )
        except OSError as error:
            raise TargetError(f"cannot run target interpreter {python}: {error.strerror}") from error

    def result(self) -> ProbeResult:
        try:
            out, err = self._process.communicate(timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired as error:
            self._process.kill()
            self._process.communicate()
            raise TargetError(f"the probe in {self.python} did not answer in {PROBE_TIMEOUT_S:.0f} s") from error
        if self._process.returncode != 0:
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise TargetError(f"the probe crashed in {self.python} (exit {self._process.returncode}): {last}")
        try:
            return parse_probe(json.loads(out))
        except (ValueError, FactsError, KeyError) as error:
            raise TargetError(f"the probe in {self.python} gave unreadable output: {error}") from error


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
        python=from_data(Interpreter, data["interpreter"]),
        torch=torch,
        packages=tuple(from_data(Package, d) for d in data["distributions"]),
        resolutions=tuple(from_data(Resolution, r) for r in data["resolutions"]),
        torch_problem=torch_problem,
    )
