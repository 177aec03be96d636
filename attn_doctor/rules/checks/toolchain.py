"""The tools a source build needs: nvcc matching torch's CUDA, ninja, a C++ compiler."""

from __future__ import annotations

from attn_doctor.facts.model import Facts
from attn_doctor.registry.findings import BUILD_TOOL_MISSING, NVCC_TORCH_CUDA_MISMATCH, Finding, Kind, Subject, finding
from attn_doctor.rules.fixes import pip_install


def toolchain_findings(facts: Facts) -> list[Finding]:
    torch, tools = facts.torch, facts.toolchain
    if torch is None or not torch.cuda:
        return []  # builds are judged for CUDA torch only; nothing here compiles for a CPU torch
    found = []
    if tools.nvcc and tools.nvcc.split(".")[0] != torch.cuda.split(".")[0]:
        found.append(
            finding(
                NVCC_TORCH_CUDA_MISMATCH,
                f"nvcc {tools.nvcc} ({tools.nvcc_path}) and torch's CUDA {torch.cuda} differ in major version",
                [f"export CUDA_HOME=/usr/local/cuda-{torch.cuda}  # a toolkit matching torch, if installed"],
                subject=Subject(Kind.TOOL, "nvcc"),
            )
        )
    missing = [
        name for name, path in (("nvcc", tools.nvcc_path), ("ninja", tools.ninja), ("c++", tools.cxx)) if not path
    ]
    if missing:
        fix = [pip_install(facts, "ninja")] if "ninja" in missing else []
        found.append(finding(BUILD_TOOL_MISSING, f"missing for source builds: {', '.join(missing)}", fix))
    return found
