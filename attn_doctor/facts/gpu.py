"""GPUs as the drivers report them: NVIDIA through NVML, AMD through the KFD sysfs topology.

Every failure (no library, no driver, a driver/library mismatch, an error at any NVML call)
becomes a status on `Driver`, never an exception: the judge turns it into a finding.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from attn_doctor.facts.model import Driver, Gpu

# Compute capability -> architecture family. Source: NVIDIA's CUDA GPUs list and the
# CUDA C Programming Guide's compute-capability table.
NVIDIA_ARCHITECTURES = {
    "5": "Maxwell",
    "6": "Pascal",
    "7.0": "Volta",
    "7.2": "Volta",
    "7.5": "Turing",
    "8.0": "Ampere",
    "8.6": "Ampere",
    "8.7": "Ampere",
    "8.9": "Ada Lovelace",
    "9": "Hopper",
    "10": "Blackwell",  # B200 (10.0), B300 (10.3)
    "11": "Blackwell",  # Jetson Thor (11.0, sm_101 before CUDA 13)
    "12": "Blackwell",  # RTX 50 / RTX PRO (12.0), DGX Spark (12.1)
}

# gfx target -> AMD family. Source: LLVM AMDGPU processor table.
AMD_ARCHITECTURES = {
    "gfx908": "CDNA",
    "gfx90a": "CDNA2",
    "gfx940": "CDNA3",
    "gfx941": "CDNA3",
    "gfx942": "CDNA3",
    "gfx950": "CDNA4",
    "gfx1030": "RDNA2",
    "gfx1100": "RDNA3",
    "gfx1101": "RDNA3",
    "gfx1102": "RDNA3",
    "gfx1200": "RDNA4",
    "gfx1201": "RDNA4",
}

# NVML return codes that have their own meaning for the user (nvml.h).
_NVML_STATUS = {
    9: "driver-not-loaded",  # NVML_ERROR_DRIVER_NOT_LOADED
    12: "nvml-library-missing",  # NVML_ERROR_LIBRARY_NOT_FOUND
    18: "driver-mismatch",  # NVML_ERROR_LIB_RM_VERSION_MISMATCH
}


def nvidia_architecture(compute_capability: str) -> str:
    major = compute_capability.split(".")[0]
    return NVIDIA_ARCHITECTURES.get(compute_capability) or NVIDIA_ARCHITECTURES.get(major, "unknown")


def visible_indices(variable: str | None, uuids: list[str]) -> list[int] | None:
    """Physical indices that CUDA_VISIBLE_DEVICES exposes, in CUDA's order; None = all.

    Like the CUDA runtime: entries are indices or (prefixes of) UUIDs, and the list ends at the
    first entry that names no device. An empty value hides every device.
    """
    if variable is None:
        return None
    chosen: list[int] = []
    for raw in variable.split(","):
        entry = raw.strip()
        if entry.isdigit() and int(entry) < len(uuids):
            index = int(entry)
        else:
            matches = [i for i, uuid in enumerate(uuids) if entry and uuid.startswith(entry)]
            if len(matches) != 1:
                break
            index = matches[0]
        if index in chosen:
            break
        chosen.append(index)
    return chosen


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(call: Any, *args: Any) -> Any:
    """An NVML call whose failure costs one field, not the reading (MIG mode on a GPU
    without MIG raises NotSupported, by design)."""
    try:
        return call(*args)
    except Exception:
        return None


def read_nvidia(nvml: Any, cuda_visible_devices: str | None) -> tuple[Driver, tuple[Gpu, ...]]:
    """Read every NVIDIA GPU through NVML; `nvml` is the `pynvml` module (tests pass a fake
    built from readings of a real H100)."""
    step = "nvmlInit"
    try:
        nvml.nvmlInit()
    except Exception as error:
        return _nvml_failure(error, step, cuda_visible_devices)
    try:
        step = "nvmlSystemGetDriverVersion"
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        step = "nvmlSystemGetCudaDriverVersion_v2"
        cuda = int(nvml.nvmlSystemGetCudaDriverVersion_v2())
        step = "nvmlDeviceGetCount"
        count = int(nvml.nvmlDeviceGetCount())
        handles = []
        for index in range(count):
            step = f"nvmlDeviceGetHandleByIndex({index})"
            handles.append(nvml.nvmlDeviceGetHandleByIndex(index))
        uuids = [_text(_optional(nvml.nvmlDeviceGetUUID, h) or "") for h in handles]
        order = visible_indices(cuda_visible_devices, uuids)
        shown = list(range(count)) if order is None else order
        gpus = []
        for cuda_index, physical in enumerate(shown):
            handle = handles[physical]
            step = f"nvmlDeviceGetName({physical})"
            name = _text(nvml.nvmlDeviceGetName(handle))
            step = f"nvmlDeviceGetCudaComputeCapability({physical})"
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            memory = _optional(nvml.nvmlDeviceGetMemoryInfo, handle)
            mig = _optional(nvml.nvmlDeviceGetMigMode, handle)
            capability = f"{major}.{minor}"
            gpus.append(
                Gpu(
                    index=cuda_index,
                    vendor="nvidia",
                    name=name,
                    architecture=nvidia_architecture(capability),
                    compute_capability=capability,
                    memory_mib=int(memory.total) // (1 << 20) if memory is not None else None,
                    uuid=uuids[physical] or None,
                    physical_index=physical,
                    mig=bool(mig and mig[0]),
                )
            )
    except Exception as error:
        return _nvml_failure(error, step, cuda_visible_devices)
    finally:
        _optional(nvml.nvmlShutdown)
    state = Driver(
        nvidia_status="ok" if count else "no-gpu",
        nvidia_detail="" if count else "NVML found no NVIDIA GPU",
        driver_version=driver,
        cuda_driver_version=f"{cuda // 1000}.{cuda % 1000 // 10}",
        cuda_visible_devices=cuda_visible_devices,
        hidden_gpus=count - len(gpus),
    )
    return state, tuple(gpus)


def _nvml_failure(error: Exception, step: str, cuda_visible_devices: str | None) -> tuple[Driver, tuple[Gpu, ...]]:
    code = getattr(error, "value", None)
    status = _NVML_STATUS.get(code, "nvml-error") if isinstance(code, int) else "nvml-error"
    message = str(error).strip() or type(error).__name__
    return Driver(
        nvidia_status=status, nvidia_detail=f"{step}: {message}", cuda_visible_devices=cuda_visible_devices
    ), ()


def read_amd(root: Path = Path("/")) -> tuple[tuple[Gpu, ...], str | None]:
    """AMD GPUs from the KFD topology in sysfs and the ROCm version from /opt/rocm, with no
    ROCm Python library needed. Visibility (HIP_VISIBLE_DEVICES) is not applied here."""
    nodes = root / "sys/class/kfd/kfd/topology/nodes"
    gpus: list[Gpu] = []
    try:
        node_dirs = sorted(nodes.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0)
    except OSError:
        node_dirs = []
    for node in node_dirs:
        properties = _properties(node / "properties")
        target = properties.get("gfx_target_version", 0)
        if not target:
            continue  # CPU nodes have gfx_target_version 0
        gfx = f"gfx{target // 10000}{target // 100 % 100:x}{target % 100:x}"
        memory = _properties(node / "mem_banks" / "0" / "properties").get("size_in_bytes")
        gpus.append(
            Gpu(
                index=len(gpus),
                vendor="amd",
                name=_first_line(node / "name") or gfx,
                architecture=AMD_ARCHITECTURES.get(gfx, "unknown"),
                gfx_target=gfx,
                memory_mib=memory // (1 << 20) if memory else None,
                physical_index=int(node.name) if node.name.isdigit() else None,
            )
        )
    rocm = _first_line(root / "opt/rocm/.info/version")
    return tuple(gpus), rocm


def _properties(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return values
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value.strip())
    return values


def _first_line(path: Path) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[0].strip() if lines else None


def nvml_unanswered(detail: str, root: Path = Path("/")) -> tuple[Driver, tuple[Gpu, ...]]:
    """NVML gave no answer (a hung driver): a status, as any NVML failure is; AMD's GPUs as read."""
    driver = Driver(nvidia_status="nvml-error", nvidia_detail=detail, cuda_visible_devices=os.environ.get(_VISIBLE))
    return _with_amd(driver, (), root)


def read_gpus(nvml: Any | None = None, root: Path = Path("/")) -> tuple[Driver, tuple[Gpu, ...]]:
    """Both vendors. `nvml` defaults to the real `pynvml`; a missing binding is a status too."""
    cuda_visible = os.environ.get(_VISIBLE)
    if nvml is None:
        try:
            import pynvml

            nvml = pynvml
        except ImportError as error:  # the doctor's own dependency missing: say so, go on
            driver = Driver(
                nvidia_status="nvml-library-missing",
                nvidia_detail=f"import pynvml: {error}",
                cuda_visible_devices=cuda_visible,
            )
            nvidia: tuple[Gpu, ...] = ()
    if nvml is not None:
        driver, nvidia = read_nvidia(nvml, cuda_visible)
    return _with_amd(driver, nvidia, root)


_VISIBLE = "CUDA_VISIBLE_DEVICES"


def _with_amd(driver: Driver, nvidia: tuple[Gpu, ...], root: Path) -> tuple[Driver, tuple[Gpu, ...]]:
    """NVIDIA's reading with AMD's GPUs and ROCm's version added, as every reading ends."""
    amd, rocm = read_amd(root)
    return dataclasses.replace(driver, rocm_version=rocm), nvidia + amd
