"""`--gpu`: judge for a GPU this machine does not have (a CPU-only CI runner gating for an H100)."""

from __future__ import annotations

import dataclasses
import re

from attn_doctor.facts.gpu import AMD_ARCHITECTURES, nvidia_architecture
from attn_doctor.facts.model import Facts, FactsError, Gpu

# Common data-centre and desktop GPUs by name (NVIDIA's CUDA GPUs list; AMD's LLVM targets).
NAMED = {
    "p100": "6.0",
    "gtx1080": "6.1",
    "v100": "7.0",
    "t4": "7.5",
    "a100": "8.0",
    "a10": "8.6",
    "a10g": "8.6",
    "rtx3090": "8.6",
    "a6000": "8.6",
    "l4": "8.9",
    "l40s": "8.9",
    "rtx4090": "8.9",
    "h100": "9.0",
    "h200": "9.0",
    "gh200": "9.0",
    "b200": "10.0",
    "gb200": "10.0",
    "b300": "10.3",
    "rtx5090": "12.0",
    "rtx5060ti": "12.0",
    "rtxpro6000": "12.0",
    "gb10": "12.1",
    "dgxspark": "12.1",
    "mi250": "gfx90a",
    "mi250x": "gfx90a",
    "mi300x": "gfx942",
    "mi325x": "gfx942",
    "mi355x": "gfx950",
}


def given_gpu(spec: str) -> Gpu:
    """A GPU from `H100`, `sm_90`, `9.0` or `gfx942`; FactsError for anything else."""
    key = re.sub(r"[\s_-]", "", spec.lower())
    target = NAMED.get(key, spec.lower())
    if target in AMD_ARCHITECTURES:
        return Gpu(
            index=0, vendor="amd", name=f"{spec} (given)", architecture=AMD_ARCHITECTURES[target], gfx_target=target
        )
    match = re.fullmatch(r"(?:sm_?)?(\d{1,2})\.?(\d)", target)
    if match is None:
        raise FactsError(f"--gpu {spec!r}: give a name (H100, A100, MI300X…), sm_XY, X.Y or a gfx target")
    capability = f"{match.group(1)}.{match.group(2)}"
    return Gpu(
        index=0,
        vendor="nvidia",
        name=f"{spec} (given)",
        architecture=nvidia_architecture(capability),
        compute_capability=capability,
    )


def with_given_gpu(facts: Facts, *specs: str) -> Facts:
    """The facts with the given GPUs in place of what the drivers said."""
    gpus = tuple(given_gpu(spec) for spec in specs)
    driver = dataclasses.replace(
        facts.driver, nvidia_status="ok", nvidia_detail=f"given with --gpu {' '.join(specs)}", hidden_gpus=0
    )
    return dataclasses.replace(facts, gpus=gpus, driver=driver)


def with_given_torch(facts: Facts, version: str | None, cuda: str | None) -> Facts:
    """The facts with a torch this machine does not have (`--torch 2.8.0 --cuda 12.8`)."""
    from packaging.version import InvalidVersion, Version

    from attn_doctor.facts.model import Torch

    current = facts.torch
    chosen = version or (current.version if current else None)
    if chosen is None:
        raise FactsError("--cuda needs --torch here: this environment has no torch")
    try:
        Version(chosen)
    except InvalidVersion as error:
        raise FactsError(f"--torch {chosen!r} is not a version") from error
    if cuda is not None and not re.fullmatch(r"\d+\.\d+", cuda):
        raise FactsError(f"--cuda {cuda!r}: give major.minor, e.g. 12.8")
    torch = Torch(
        version=chosen,
        cuda=cuda or (current.cuda if current else None),
        hip=None,
        location=f"given with --torch {chosen}",
    )
    # the torch distribution too, so that what is planned against it (install's torch pin) is the given one
    packages = tuple(dataclasses.replace(p, version=chosen) if p.name == "torch" else p for p in facts.packages)
    return dataclasses.replace(facts, torch=torch, torch_problem=None, packages=packages)
