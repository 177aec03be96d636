"""What the installed binaries can run on each GPU here, read from their own files: torch's kernels
and every compiled extension's (their fatbins), and the ptxas Triton compiles with."""

from __future__ import annotations

import shlex
from pathlib import Path

from attn_doctor.facts.model import Facts, Gpu, Ptxas
from attn_doctor.registry import cuda
from attn_doctor.registry.findings import (
    EXTENSION_NO_GPU_CODE,
    TORCH_NO_GPU_CODE,
    TRITON_PTXAS_TOO_OLD,
    Finding,
    distribution,
    finding,
)
from attn_doctor.registry.versions import release
from attn_doctor.registry.wheels import PYTORCH_INDEX, cuda_build
from attn_doctor.rules.fixes import pip_install, public_release, rebuild


def _nvidia(facts: Facts) -> list[Gpu]:
    return [g for g in facts.gpus if g.vendor == "nvidia" and g.compute_capability]


def torch_code_findings(facts: Facts) -> list[Finding]:
    torch = facts.torch
    if torch is None or not torch.cuda or not torch.cuda_code:
        return []
    refused = [g for g in _nvidia(facts) if not cuda.runs_any(torch.cuda_code, g.compute_capability or "")]
    return [
        finding(
            TORCH_NO_GPU_CODE,
            f"torch {torch.version} carries no code for GPU {g.index} ({g.name}, {g.sm}): its kernels are built "
            f"for {cuda.shown(torch.cuda_code)}, so every CUDA operation fails with `no kernel image is available`",
            _torch_for(facts, g),
            [f"libtorch_cuda.so in {torch.location}/lib: {cuda.shown(torch.cuda_code)}"],
            subject=distribution("torch"),
        )
        for g in refused
    ]


def _torch_for(facts: Facts, gpu: Gpu) -> list[str]:
    """The official build that carries this GPU and runs on the driver here (its CUDA no newer than
    the driver's where one is, else of the same major, by minor-version compatibility): this
    release's where there is one, else the newest release's."""
    torch = facts.torch
    assert torch is not None
    capability = gpu.compute_capability or ""
    driver = release(facts.driver.cuda_driver_version or "99.9")
    usable = [b for b in cuda.torch_builds_for(capability) if release(b.cuda)[:1] <= driver[:1]]
    same = [b for b in cuda.torch_builds_for(capability, torch.version) if b in usable]
    builds, pin = (same, f"torch=={public_release(torch.version)}") if same else (usable, "torch")
    if not builds:
        return [f"# no official torch build carries {gpu.sm} for this driver: upgrade the NVIDIA driver"]
    build = next((b for b in builds if release(b.cuda) <= driver), builds[0])
    index = f"{PYTORCH_INDEX}/{cuda_build(build.cuda)}"
    made_for = ", ".join("sm_" + c.replace(".", "") for c in build.capabilities)
    return [
        pip_install(facts, f"--force-reinstall {shlex.quote(pin)} --index-url {index}")
        + f"  # the CUDA {build.cuda} build, made for {made_for}"
    ]


def extension_code_findings(facts: Facts) -> list[Finding]:
    found = []
    for binary in facts.binaries:
        if not binary.cuda_code or binary.error:
            continue  # no fatbin: code that runs on the host, or a library read elsewhere
        refused = [g for g in _nvidia(facts) if not cuda.runs_any(binary.cuda_code, g.compute_capability or "")]
        package = facts.package(binary.package)
        for gpu in refused:
            found.append(
                finding(
                    EXTENSION_NO_GPU_CODE,
                    f"{Path(binary.path).name} of {binary.package} carries no code for GPU {gpu.index} ({gpu.name}, "
                    f"{gpu.sm}): it is built for {cuda.shown(binary.cuda_code)}",
                    [rebuild(facts, package)] if package is not None else [],
                    [binary.path, f".nv_fatbin: {cuda.shown(binary.cuda_code)}"],
                    subject=distribution(binary.package),
                )
            )
    return found


def ptxas_findings(facts: Facts) -> list[Finding]:
    triton = facts.package("triton")
    if triton is None or not facts.ptxas:
        return []
    found = []
    for gpu in _nvidia(facts):
        needed = cuda.first_cuda(gpu.compute_capability or "")
        ptxas = used_ptxas(facts.ptxas, cuda.triton_ptxas_role(triton.version, gpu.compute_capability or ""))
        if needed is None or ptxas is None or ptxas.release is None or release(ptxas.release) >= release(needed):
            continue
        found.append(
            finding(
                TRITON_PTXAS_TOO_OLD,
                f"Triton {triton.version} compiles for GPU {gpu.index} ({gpu.name}, {gpu.sm}) with the ptxas of CUDA "
                f"{ptxas.release}, which knows no {gpu.sm} (CUDA {needed} is the first that does): flex attention "
                "and every Triton kernel fail to compile",
                _newer_ptxas(facts, ptxas, needed),
                [f"{ptxas.path}: CUDA {ptxas.release}" + (f" (from {ptxas.variable})" if ptxas.variable else "")],
                subject=distribution("triton"),
            )
        )
    return found


def used_ptxas(candidates: tuple[Ptxas, ...], role: str) -> Ptxas | None:
    """The one Triton uses in this role: the one a variable points at, else the bundled one; a
    Triton with no ptxas-blackwell (3.4, 3.5) compiles every GPU with its ptxas."""
    for wanted in (role, "ptxas"):
        ranked = sorted((p for p in candidates if p.role == wanted), key=lambda p: p.variable is None)
        if ranked:
            return ranked[0]
    return None


def _newer_ptxas(facts: Facts, old: Ptxas, needed: str) -> list[str]:
    variable = cuda.TRITON_PTXAS_BLACKWELL if old.role == "ptxas-blackwell" else cuda.TRITON_PTXAS
    toolkit = facts.toolchain
    if toolkit.ptxas and toolkit.nvcc and release(toolkit.nvcc) >= release(needed):
        ptxas = shlex.quote(toolkit.ptxas)
        return [f"export {variable}={ptxas}  # the CUDA {toolkit.nvcc} toolkit's ptxas, in the job too"]
    wheel = "nvidia-cuda-nvcc" if release(needed) >= (13,) else "nvidia-cuda-nvcc-cu12"
    site = shlex.quote(str(Path(old.path).parents[4])) if old.variable is None else "<site-packages>"
    return [
        pip_install(facts, shlex.quote(f"{wheel}>={needed}")) + "  # a ptxas that knows this GPU",
        f"export {variable}={site}/nvidia/cuda_nvcc/bin/ptxas  # in the training job's environment too",
    ]
