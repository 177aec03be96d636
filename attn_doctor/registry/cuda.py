"""What CUDA and Triton decide, as data: which GPU code runs on which GPU, the first toolkit whose
ptxas knows each architecture, which ptxas Triton compiles with, and the architectures each
official torch build carries.

Compatibility (CUDA C++ Programming Guide, "Binary Compatibility" and "PTX Compatibility",
https://docs.nvidia.com/cuda/cuda-c-programming-guide/#binary-compatibility): a cubin for sm_XY
runs on GPUs of the same major with a minor of Y or more; an arch-specific cubin (sm_90a) runs
on that one architecture only, a family one (sm_100f) on the same major from that minor on;
PTX for compute_XY is compiled by the driver for any GPU of XY or newer (compute_90a: only 9.0).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from attn_doctor.registry.versions import in_range, release

_CODE = re.compile(r"(sm|compute)_(\d+?)(\d)([af]?)")


def _parts(code: str) -> tuple[str, int, int, str] | None:
    """("sm", 9, 0, "a") for "sm_90a"; None for what is not a GPU code."""
    found = _CODE.fullmatch(code)
    if found is None:
        return None
    kind, major, minor, suffix = found.groups()
    return kind, int(major), int(minor), suffix


def ordered(codes: Iterable[str]) -> tuple[str, ...]:
    """Cubins before PTX, each by architecture: sm_75, sm_80, ..., sm_120, compute_90."""
    return tuple(sorted(codes, key=_order))


def _order(code: str) -> tuple[bool, int, int, str]:
    parts = _parts(code)
    return (True, 0, 0, code) if parts is None else (parts[0] == "compute", parts[1], parts[2], parts[3])


def capability(code: str) -> str:
    """ "9.0a" for "sm_90a", "12.0" for "compute_120": how the doctor shows an architecture."""
    parts = _parts(code)
    return code if parts is None else f"{parts[1]}.{parts[2]}{parts[3]}"


def runs(code: str, compute_capability: str) -> bool:
    """Whether a GPU of this compute capability ("9.0") runs this code."""
    parts = _parts(code)
    if parts is None:
        return False
    kind, major, minor, suffix = parts
    gpu_major, gpu_minor = (int(n) for n in compute_capability.split(".")[:2])
    if suffix == "a":
        return (gpu_major, gpu_minor) == (major, minor)
    if kind == "sm" or suffix == "f":
        return gpu_major == major and gpu_minor >= minor
    return (gpu_major, gpu_minor) >= (major, minor)  # PTX: the driver compiles it for newer GPUs


def runs_any(codes: tuple[str, ...], compute_capability: str) -> bool:
    return any(runs(code, compute_capability) for code in codes)


def shown(codes: tuple[str, ...]) -> str:
    """ "sm_80, sm_90, PTX compute_90": the codes as a reader compares them with a GPU's sm_XY."""
    cubins = [c for c in codes if c.startswith("sm_")]
    ptx = [c for c in codes if c.startswith("compute_")]
    return ", ".join([*cubins, *(f"PTX {c}" for c in ptx)]) or "no GPU code"


# The first CUDA toolkit whose ptxas knows each architecture (by compute capability): read from the
# compute_XX list of each ptxas release in NVIDIA's nvcc wheels
# (https://pypi.org/project/nvidia-cuda-nvcc-cu12/#history, https://pypi.org/project/nvidia-cuda-nvcc/#history),
# and CMake's Modules/Internal/CMakeCUDAArchitecturesAll.cmake; sm_101 was renamed sm_110 in 13.0
# (https://docs.nvidia.com/cuda/curanddx/release_notes.html).
FIRST_CUDA = {
    "7.5": "10.0",
    "8.0": "11.0",
    "8.6": "11.1",
    "8.7": "11.4",
    "8.8": "13.0",
    "8.9": "11.8",
    "9.0": "11.8",
    "10.0": "12.8",
    "10.1": "12.8",
    "10.3": "12.9",
    "11.0": "13.0",
    "12.0": "12.8",
    "12.1": "12.9",
}


def first_cuda(compute_capability: str) -> str | None:
    return FIRST_CUDA.get(".".join(compute_capability.split(".")[:2]))


# Triton compiles for sm_XY with the ptxas next to it (triton/backends/nvidia/bin/ptxas); from 3.3 a
# second one, ptxas-blackwell, compiles for sm_100 and newer (3.9: sm_90 and newer), each pointed
# elsewhere by its variable. Read from each wheel's triton/backends/nvidia/compiler.py and knobs.py
# (https://pypi.org/project/triton/#history); the sm_121 failure and its fix:
# https://github.com/triton-lang/triton/issues/8539.
TRITON_PTXAS = "TRITON_PTXAS_PATH"
TRITON_PTXAS_BLACKWELL = "TRITON_PTXAS_BLACKWELL_PATH"


def triton_ptxas_role(triton_version: str | None, compute_capability: str) -> str:
    """ "ptxas-blackwell" or "ptxas": which of Triton's two compiles for this GPU."""
    major = int(compute_capability.split(".")[0])
    if triton_version is None or release(triton_version) < (3, 3):
        return "ptxas"
    from_major = 9 if release(triton_version) >= (3, 9) else 10
    return "ptxas-blackwell" if major >= from_major else "ptxas"


@dataclass(frozen=True)
class TorchBuild:
    """The architectures (cubins) one CUDA variant of a torch release range is built for, x86_64."""

    torch: str  # the releases, a PEP 440 specifier
    cuda: str  # "12.8": the index https://download.pytorch.org/whl/cu128
    capabilities: tuple[str, ...]


# Read from each release's PyPI wheel (CUDA_ARCH_FLAGS in torch/lib/libtorch_python.so, what
# torch.cuda.get_arch_list() returns) and, for the variants on download.pytorch.org only, the
# build matrix of each release: https://github.com/pytorch/pytorch/blob/main/RELEASE.md#release-compatibility-matrix,
# https://github.com/pytorch/pytorch/pull/145792 (cu128 from 2.7), https://github.com/pytorch/pytorch/issues/182250
# (2.11's cu126 and cu128). None of the release builds carries PTX.
_PRE_VOLTA = ("5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0")
_BLACKWELL = ("7.5", "8.0", "8.6", "9.0", "10.0", "12.0")
TORCH_BUILDS = (
    TorchBuild(">=2.4,<2.7", "12.4", _PRE_VOLTA),
    TorchBuild(">=2.6,<2.15", "12.6", _PRE_VOLTA),
    TorchBuild(">=2.7,<2.8", "12.8", _BLACKWELL),
    TorchBuild(">=2.8,<2.11", "12.8", ("7.0", *_BLACKWELL)),
    TorchBuild(">=2.11,<2.12", "12.8", _BLACKWELL),
    TorchBuild(">=2.9", "13.0", _BLACKWELL),
    TorchBuild(">=2.12", "13.2", _BLACKWELL),
)


def torch_builds_for(compute_capability: str, torch_version: str | None = None) -> list[TorchBuild]:
    """The official builds whose cubins run on this GPU, of this torch release where given; the
    newest CUDA first."""
    fits = [
        b
        for b in TORCH_BUILDS
        if any(runs(f"sm_{c.replace('.', '')}", compute_capability) for c in b.capabilities)
        and (torch_version is None or in_range(torch_version, b.torch))
    ]
    return sorted(fits, key=lambda b: release(b.cuda), reverse=True)
