"""Hugging Face Hub kernels (`attn_implementation: org/name`): which build variant of a kernel
fits this torch, as `kernels` decides it.

A kernel repository publishes one folder per build under `build/`, named for the torch, CUDA (or
ROCm) release, CPU and OS it was built for. From kernels 0.13 the loader lists them and takes one
that fits: a versioned build needs this torch's major.minor (and C++ ABI, where tagged); a
stable-ABI build one at most this torch; a CUDA build the same major and a minor at most this
torch's CUDA (cu126 runs on a CUDA 12.8 torch); `torch-cuda`/`torch-rocm`/`torch-universal` are
Python only and fit any torch of that backend
(https://github.com/huggingface/kernels/blob/v0.16.0/kernels/src/kernels/variants.py:
_check_variants). kernels 0.19 adds a dotted spelling of the same parts
(`torch-2.10-cuda-12.8-cpython-3.9-abi3-x86_64-linux`), read here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from attn_doctor.facts.model import Interpreter, Torch
from attn_doctor.registry.versions import release

KERNELS_SOURCE = "https://github.com/huggingface/kernels/blob/v0.16.0/kernels/src/kernels/variants.py"
# transformers refuses a `kernels` outside the window it names (is_kernels_available's MIN and MAX
# versions, from 5.15; the `kernels` extra, or from 5.25 a dependency, in its metadata)
TRANSFORMERS_WINDOW_SOURCE = (
    "https://github.com/huggingface/transformers/blob/v5.25.0/src/transformers/utils/import_utils.py "
    "(is_kernels_available: KERNELS_MIN_VERSION, KERNELS_MAX_VERSION)"
)
# Without the network, a kernel not in the cache cannot be loaded: huggingface_hub's offline switches
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# Where the cache is (facts/hub_cache.py reads it): recorded with the facts, so a saved report says
CACHE_VARIABLES = ("KERNELS_CACHE", "HF_HUB_CACHE", "HF_HOME")

_LEGACY = re.compile(
    r"^(?:torch(?P<torch>\d)(?P<minor>\d+)|torch-stable-abi(?P<abi_major>\d)(?P<abi_minor>\d+)|tvm-ffi\d+)"
    r"(?:-(?P<cxx>cxx11|cxx98))?-(?P<compute>cu\d+|rocm\d+|metal|xpu\d+|cpu|cann\d+)-(?P<cpu>[a-z0-9_]+)-(?P<os>[a-z]+)$"
)
_DOTTED = re.compile(
    r"^(?:torch-(?P<torch>\d+\.\d+)|torch-stable-abi-(?P<abi>\d+\.\d+)|tvm-ffi-\d+\.\d+)"
    r"-(?P<backend>cuda|rocm|xpu|cann|metal|cpu)(?:-(?P<backend_version>\d+\.\d+))?"
    r"(?:-cpython-(?P<python>\d+\.\d+)-abi3t?)?-(?P<cpu>[a-z0-9_]+)-(?P<os>[a-z]+)$"
)
_NOARCH = {"torch-cuda": "cuda", "torch-rocm": "rocm", "torch-universal": "any"}


@dataclass(frozen=True)
class Variant:
    torch: str | None  # "2.10" for a versioned build
    stable_abi: str | None  # "2.9": any torch from it
    backend: str  # "cuda" | "rocm" | other
    backend_version: str | None  # "12.8"
    cxx11: bool | None  # the C++ ABI, where the name says it
    python: str | None  # the oldest CPython of an abi3 build
    cpu: str | None
    os: str | None
    tvm_ffi: bool = False


def parse_variant(name: str) -> Variant | None:
    if name in _NOARCH:
        return Variant(None, None, _NOARCH[name], None, None, None, None, None)
    legacy = _LEGACY.match(name)
    if legacy:
        compute = legacy["compute"]
        backend, version = _legacy_compute(compute)
        return Variant(
            f"{legacy['torch']}.{legacy['minor']}" if legacy["torch"] else None,
            f"{legacy['abi_major']}.{legacy['abi_minor']}" if legacy["abi_major"] else None,
            backend,
            version,
            None if legacy["cxx"] is None else legacy["cxx"] == "cxx11",
            None,
            legacy["cpu"],
            legacy["os"],
            tvm_ffi=name.startswith("tvm-ffi"),
        )
    dotted = _DOTTED.match(name)
    if dotted:
        return Variant(
            dotted["torch"],
            dotted["abi"],
            dotted["backend"],
            dotted["backend_version"],
            None,
            dotted["python"],
            dotted["cpu"],
            dotted["os"],
            tvm_ffi=name.startswith("tvm-ffi"),
        )
    return None


def _legacy_compute(compute: str) -> tuple[str, str | None]:
    """cu128 -> (cuda, 12.8); rocm71 -> (rocm, 7.1)."""
    for prefix, backend in (("cu", "cuda"), ("rocm", "rocm")):
        if compute.startswith(prefix) and compute[len(prefix) :].isdigit():
            digits = compute[len(prefix) :]
            split = 2 if backend == "cuda" else 1
            return backend, f"{digits[:split]}.{digits[split:]}"
    return compute, None


def variant_fits(name: str, torch: Torch, python: Interpreter) -> bool | None:
    """Whether `kernels` would take this build for this torch and interpreter; None where the
    name is not one it makes (or needs a library the facts do not hold: tvm-ffi's version)."""
    variant = parse_variant(name)
    if variant is None or variant.tvm_ffi:
        return None
    backend, built_for = ("cuda", torch.cuda) if torch.cuda else ("rocm", torch.hip) if torch.hip else ("cpu", None)
    if variant.backend == "any":
        return True
    if variant.backend != backend:
        return False
    if variant.os is not None and not python.platform.startswith(variant.os):
        return False
    if variant.cpu is not None and not python.platform.endswith(variant.cpu):
        return False
    if variant.python is not None and release(python.version)[:2] < release(variant.python)[:2]:
        return False
    if variant.backend_version is not None:
        if built_for is None:
            return False
        have, need = release(built_for), release(variant.backend_version)
        if have[0] != need[0] or have[:2] < need[:2]:
            return False
    ours = release(torch.version)[:2]
    if variant.torch is not None:
        if ours != release(variant.torch)[:2]:
            return False
        if variant.cxx11 is not None and torch.cxx11_abi is not None and variant.cxx11 != torch.cxx11_abi:
            return False
    return variant.stable_abi is None or ours >= release(variant.stable_abi)[:2]
