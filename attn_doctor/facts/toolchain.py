"""The build toolchain a source install would use: nvcc, CUDA_HOME, ninja, a C++ compiler, git,
CPU count and RAM. Read-only, and nothing here is run: nvcc's version is read from its toolkit's
files, because the nvcc found may be whatever the target environment put in its bin/."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from attn_doctor.facts.model import Toolchain
from attn_doctor.inputs import MIB, InputError, read_json, read_text

MAX_VERSION_FILE_BYTES = 4 * MIB  # cuda.h, the largest of them, is about 1 MiB


def cuda_home() -> str | None:
    """Where torch's cpp_extension would look: CUDA_HOME, CUDA_PATH, then /usr/local/cuda."""
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(variable)
        if value:
            return value
    return "/usr/local/cuda" if Path("/usr/local/cuda").is_dir() else None


def nvcc_version(nvcc: str) -> str | None:
    """ "12.8" for the toolkit nvcc belongs to (bin/nvcc's parent folder), from the files every
    toolkit has: version.json (CUDA 11.1 on; cuda_nvcc's own version), version.txt (up to 11.0),
    else the CUDA_VERSION of include/cuda.h. None when none says: unknown, never guessed by running it."""
    toolkit = Path(os.path.realpath(nvcc)).parent.parent
    for read in (_from_version_json, _from_version_txt, _from_cuda_h):
        version = read(toolkit)
        if version is not None:
            return version
    return None


def _from_version_json(toolkit: Path) -> str | None:
    try:
        data = read_json(toolkit / "version.json", "", MAX_VERSION_FILE_BYTES)
    except InputError:
        return None
    for component in ("cuda_nvcc", "cuda"):
        entry = data.get(component) if isinstance(data, dict) else None
        version = entry.get("version") if isinstance(entry, dict) else None
        match = re.match(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
        if match:
            return f"{match[1]}.{match[2]}"
    return None


def _from_version_txt(toolkit: Path) -> str | None:
    """ "CUDA Version 10.2.89" """
    try:
        match = re.search(r"CUDA Version (\d+)\.(\d+)", read_text(toolkit / "version.txt", "", MAX_VERSION_FILE_BYTES))
    except InputError:
        return None
    return f"{match[1]}.{match[2]}" if match else None


def _from_cuda_h(toolkit: Path) -> str | None:
    """ "#define CUDA_VERSION 12080": 1000 * major + 10 * minor."""
    try:
        text = read_text(toolkit / "include" / "cuda.h", "", MAX_VERSION_FILE_BYTES)
    except InputError:
        return None
    match = re.search(r"^#define CUDA_VERSION (\d+)\s*$", text, re.MULTILINE)
    return f"{int(match[1]) // 1000}.{int(match[1]) % 1000 // 10}" if match else None


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
