"""The build toolchain a source install would use: nvcc, CUDA_HOME, ninja, a C++ compiler, git,
CPU count and RAM. Read-only; one short subprocess (`nvcc --version`) at most."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from attn_doctor.facts.model import Toolchain


def cuda_home() -> str | None:
    """Where torch's cpp_extension would look: CUDA_HOME, CUDA_PATH, then /usr/local/cuda."""
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(variable)
        if value:
            return value
    return "/usr/local/cuda" if Path("/usr/local/cuda").is_dir() else None


def nvcc_version(nvcc: str) -> str | None:
    """ "13.0" from `nvcc --version` ("Cuda compilation tools, release 13.0, V13.0.88")."""
    try:
        out = subprocess.run(
            [nvcc, "--version"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else None


def ram_gib(meminfo: Path = Path("/proc/meminfo")) -> float:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def read_toolchain(target_scripts: str | None = None) -> Toolchain:
    """`target_scripts` is the target environment's bin folder: a pip-installed ninja lives there."""
    search = os.pathsep.join(p for p in (target_scripts, os.environ.get("PATH", "")) if p)
    home = cuda_home()
    nvcc = shutil.which("nvcc", path=search)
    if nvcc is None and home and (Path(home) / "bin" / "nvcc").exists():
        nvcc = str(Path(home) / "bin" / "nvcc")
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 0
    return Toolchain(
        nvcc=nvcc_version(nvcc) if nvcc else None,
        nvcc_path=nvcc,
        cuda_home=home,
        ninja=shutil.which("ninja", path=search),
        cxx=next((p for p in (shutil.which(c, path=search) for c in ("c++", "g++", "clang++")) if p), None),
        git=shutil.which("git", path=search),
        cpus=cpus,
        ram_gib=ram_gib(),
    )
