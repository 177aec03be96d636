"""The tools a source build needs: nvcc matching torch's CUDA, ninja, a C++ compiler."""

from __future__ import annotations

import shlex

from attn_doctor.facts.model import Facts, Toolchain
from attn_doctor.registry.findings import (
    BUILD_TOOL_MISSING,
    NVCC_TORCH_CUDA_MISMATCH,
    NVCC_VERSION_UNKNOWN,
    Finding,
    Kind,
    Subject,
    finding,
)
from attn_doctor.rules.fixes import pip_install


def nvcc_unusable(tools: Toolchain) -> str | None:
    """Why a source build cannot plan with the nvcc found here; None where the toolchain names its
    release. One answer for check's finding and install's refusal."""
    if tools.nvcc_path is None:
        return "no nvcc (install the CUDA toolkit matching torch's CUDA, or set CUDA_HOME)"
    if tools.nvcc is None:
        return (
            f"nvcc at {tools.nvcc_path} tells no release (a wrapper script, or a toolkit without version files): "
            "set CUDA_HOME to the toolkit it runs, as torch's cpp_extension then builds with $CUDA_HOME/bin/nvcc"
        )
    return None


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
    if tools.nvcc_path and tools.nvcc is None:
        home = f"export CUDA_HOME={shlex.quote(tools.cuda_home)}" if tools.cuda_home else "export CUDA_HOME=..."
        found.append(
            finding(
                NVCC_VERSION_UNKNOWN,
                nvcc_unusable(tools) or "",
                [f"{home}  # the toolkit that nvcc runs; then check again"],
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
