"""torch as built against this machine: missing, CPU-only, the other vendor, a CUDA newer than the driver."""

from __future__ import annotations

import shlex

from attn_doctor.facts.model import Facts
from attn_doctor.registry.findings import (
    TORCH_CPU_ONLY,
    TORCH_CUDA_MINOR_NEWER,
    TORCH_CUDA_TOO_NEW,
    TORCH_MISSING,
    TORCH_UNREADABLE,
    TORCH_WRONG_GPU_VENDOR,
    Finding,
    finding,
)
from attn_doctor.rules.fixes import pip_install, public_release


def _cuda_version(text: str | None) -> tuple[int, int] | None:
    try:
        major, minor = (text or "").split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def torch_findings(facts: Facts) -> list[Finding]:
    torch = facts.torch
    if torch is None:
        if facts.torch_problem:
            return [
                finding(
                    TORCH_UNREADABLE,
                    f"torch is installed but unreadable: {facts.torch_problem}",
                    [pip_install(facts, "--force-reinstall --no-deps torch")],
                )
            ]
        return [
            finding(
                TORCH_MISSING,
                "torch is not installed in the target environment",
                [pip_install(facts, "torch")],
            )
        ]
    nvidia = [g for g in facts.gpus if g.vendor == "nvidia"]
    amd = [g for g in facts.gpus if g.vendor == "amd"]
    evidence = [f"torch {torch.version} ({torch.build}) at {torch.location}"]
    if (nvidia or amd) and not torch.cuda and not torch.hip:
        return [
            finding(
                TORCH_CPU_ONLY,
                f"torch {torch.version} is a CPU-only build, but a GPU is present",
                [pip_install(facts, "--force-reinstall torch  # a CUDA build; see pytorch.org for the index")],
                evidence,
            )
        ]
    if (nvidia and not amd and torch.hip) or (amd and not nvidia and torch.cuda):
        vendor = "NVIDIA" if nvidia else "AMD"
        return [
            finding(
                TORCH_WRONG_GPU_VENDOR,
                f"torch {torch.version} ({torch.build}) cannot use the {vendor} GPU",
                [pip_install(facts, "--force-reinstall torch  # the build for this GPU's vendor")],
                evidence,
            )
        ]
    built = _cuda_version(torch.cuda)
    driver = _cuda_version(facts.driver.cuda_driver_version)
    if built and driver and nvidia:
        evidence.append(f"driver {facts.driver.driver_version} supports CUDA up to {facts.driver.cuda_driver_version}")
        if built[0] > driver[0]:
            return [
                finding(
                    TORCH_CUDA_TOO_NEW,
                    f"torch {torch.version} needs CUDA {torch.cuda}; driver {facts.driver.driver_version} "
                    f"supports up to {facts.driver.cuda_driver_version}",
                    [
                        f"upgrade the NVIDIA driver to one supporting CUDA {torch.cuda}, or install a torch built for "
                        f"CUDA {driver[0]}.x"
                    ],
                    evidence,
                )
            ]
        if built > driver:
            return [
                finding(
                    TORCH_CUDA_MINOR_NEWER,
                    f"torch built for CUDA {torch.cuda} runs on a CUDA {facts.driver.cuda_driver_version} driver "
                    "by minor-version compatibility only",
                    [
                        f"# upgrade the NVIDIA driver to one for CUDA {torch.cuda} or newer (nvidia-smi shows "
                        '"CUDA Version"), or install this torch built for the driver\'s CUDA:',
                        pip_install(
                            facts,
                            shlex.quote(f"torch=={public_release(torch.version)}+cu{driver[0]}{driver[1]}")
                            + f" --index-url https://download.pytorch.org/whl/cu{driver[0]}{driver[1]}",
                        )
                        + "  # if PyTorch publishes that build",
                    ],
                    evidence,
                )
            ]
    return []
