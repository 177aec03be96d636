"""The GPUs and their driver: NVML's answer, hidden GPUs, MIG."""

from __future__ import annotations

from attn_doctor.facts.model import Facts
from attn_doctor.registry.findings import (
    DRIVER_MISMATCH,
    DRIVER_NOT_LOADED,
    GPUS_HIDDEN,
    MIG_ENABLED,
    NO_GPU,
    NVML_ERROR,
    NVML_LIBRARY_MISSING,
    Finding,
    Kind,
    Subject,
    finding,
)


def gpu_findings(facts: Facts) -> list[Finding]:
    driver = facts.driver
    amd = [g for g in facts.gpus if g.vendor == "amd"]
    found: list[Finding] = []
    status = driver.nvidia_status
    evidence = [f"NVML: {driver.nvidia_detail}"] if driver.nvidia_detail else []
    if status == "driver-mismatch":
        found.append(
            finding(
                DRIVER_MISMATCH,
                "NVIDIA driver library and kernel module versions differ",
                ["sudo reboot  # loads the kernel module that matches the installed driver library"],
                evidence,
            )
        )
    elif status == "driver-not-loaded":
        found.append(
            finding(
                DRIVER_NOT_LOADED,
                "the NVIDIA kernel driver is not loaded",
                ["sudo modprobe nvidia", "nvidia-smi  # should now list the GPUs"],
                evidence,
            )
        )
    elif status == "nvml-error":
        found.append(
            finding(
                NVML_ERROR,
                f"NVML failed: {driver.nvidia_detail}",
                ["nvidia-smi  # shows whether the driver itself answers"],
                evidence,
            )
        )
    elif status == "nvml-library-missing" and not amd:
        found.append(
            finding(
                NVML_LIBRARY_MISSING,
                "no NVIDIA driver found (libnvidia-ml.so cannot be loaded)",
                ["nvidia-smi  # missing too? install the NVIDIA driver; in a container, run it with --gpus all"],
                evidence,
            )
        )
    elif status in ("ok", "no-gpu") and not facts.gpus:
        if driver.hidden_gpus:
            found.append(
                finding(
                    GPUS_HIDDEN,
                    f"CUDA_VISIBLE_DEVICES={driver.cuda_visible_devices!r} hides all {driver.hidden_gpus} GPU(s)",
                    ["unset CUDA_VISIBLE_DEVICES  # or list the GPUs to use: CUDA_VISIBLE_DEVICES=0"],
                )
            )
        else:
            found.append(finding(NO_GPU, "no GPU found", evidence=evidence))
    for g in facts.gpus:
        if g.mig:
            found.append(
                finding(
                    MIG_ENABLED, f"GPU {g.index} ({g.name}) is in MIG mode", subject=Subject(Kind.GPU, str(g.index))
                )
            )
    return found
