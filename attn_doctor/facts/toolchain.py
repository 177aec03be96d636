"""The build toolchain a source install would use: nvcc, CUDA_HOME, ninja, a C++ compiler, git,
CPU count and RAM. Read-only, and nothing here is run: nvcc's version is read from its toolkit's
files, because the nvcc found may be whatever the target environment put in its bin/."""

from __future__ import annotations

import mmap
import os
import re
import shutil
import stat
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
    """ "12.8" for the toolkit nvcc belongs to (bin/nvcc's parent folder), from the files a toolkit
    has: version.json (CUDA 11.1 on; cuda_nvcc's own version), version.txt (up to 11.0), the
    CUDA_VERSION of include/cuda.h, else the version string in the nvcc program itself (a toolkit
    made from NVIDIA's pip wheels has none of those files). A wrapper script says nothing. None
    when none says: unknown, never guessed by running it."""
    real = os.path.realpath(nvcc)
    toolkit = Path(real).parent.parent
    for read in (_from_version_json, _from_version_txt, _from_cuda_h):
        version = read(toolkit)
        if version is not None:
            return version
    return release_of(real)


_RELEASE = re.compile(rb"Cuda compilation tools, release (\d+\.\d+)")
_MARK = b"Cuda compilation tools, release "


def release_of(path: str) -> str | None:
    """The CUDA release an NVIDIA tool (nvcc, ptxas) names in its own version string ("Cuda
    compilation tools, release 12.8, V12.8.93"), read and never run; None when it names none or
    cannot be read (missing, not a plain file, not a program: a wrapper script)."""
    if not _is_program(path):
        return None
    try:
        with open(path, "rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
            at = data.find(_MARK)
            found = _RELEASE.match(data[at : at + 64]) if at >= 0 else None
    except (OSError, ValueError):
        return None
    return found.group(1).decode() if found else None


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


def toolkit_ptxas(nvcc: str | None, home: str | None) -> str | None:
    """The ptxas of nvcc's toolkit: the program beside nvcc, else the one in CUDA_HOME/bin (a wrapper
    script in /usr/local/bin is no ptxas to point Triton at)."""
    beside = [str(Path(os.path.realpath(nvcc)).parent / "ptxas")] if nvcc else []
    in_home = [str(Path(home) / "bin" / "ptxas")] if home else []
    return next((p for p in [*beside, *in_home] if _is_program(p)), None)


def _is_program(path: str) -> bool:
    """An ELF file, checked as a plain file first (opening a FIFO would block)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as stream:
            return stream.read(4) == b"\x7fELF"
    except OSError:
        return False


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
    # as torch's cpp_extension finds it: $CUDA_HOME/bin/nvcc where CUDA_HOME (or CUDA_PATH) is set,
    # else the nvcc on PATH (torch.utils.cpp_extension._find_cuda_home)
    given = next((os.environ[v] for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)), None)
    nvcc = str(Path(given) / "bin" / "nvcc") if given and (Path(given) / "bin" / "nvcc").exists() else None
    nvcc = nvcc or shutil.which("nvcc", path=search)
    if nvcc is None and home and (Path(home) / "bin" / "nvcc").exists():
        nvcc = str(Path(home) / "bin" / "nvcc")
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 0
    return Toolchain(
        nvcc=nvcc_version(nvcc) if nvcc else None,
        nvcc_path=nvcc,
        ptxas=toolkit_ptxas(nvcc, home),
        cuda_home=home,
        ninja=shutil.which("ninja", path=search),
        cxx=next((p for p in (shutil.which(c, path=search) for c in ("c++", "g++", "clang++")) if p), None),
        git=shutil.which("git", path=search),
        cpus=cpus,
        ram_gib=ram_gib(),
    )
