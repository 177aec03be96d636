"""The attention backends as data: what each is, how to tell it is there, which GPUs it runs on.

Each rule carries its source. GPU support is by compute capability for NVIDIA (a "major.minor"
listed, or any minor of a listed major) and by gfx target for AMD. `None` means "not limited
by this table" (SDPA runs anywhere torch does).
"""

from __future__ import annotations

from dataclasses import dataclass

from attn_doctor.facts.model import Gpu

_K = "KNOWLEDGE.md"


@dataclass(frozen=True)
class Backend:
    name: str  # what --require takes: "fa2"
    label: str
    distribution: str | None  # None: part of torch (sdpa, flex)
    module: str  # the import that proves it loads
    nvidia: tuple[str, ...] | None  # "8" = any 8.x; "9.0" = exactly 9.0; () = none
    amd: tuple[str, ...] | None  # gfx targets; () = none
    min_torch: str | None
    install: str  # how to get it, as the fix of an unmet requirement
    source: str

    def runs_on(self, gpu: Gpu) -> bool:
        if gpu.vendor == "amd":
            return self.amd is None or gpu.gfx_target in self.amd
        if self.nvidia is None:
            return True
        capability = gpu.compute_capability or ""
        return capability in self.nvidia or capability.split(".")[0] in self.nvidia


BACKENDS = (
    Backend(
        "sdpa",
        "PyTorch SDPA",
        None,
        "torch.nn.functional",
        None,
        None,
        "2.0",
        "pip install torch",
        "torch 2.0 release notes; its math backend runs on any device",
    ),
    Backend(
        "flex",
        "Flex Attention",
        None,
        "torch.nn.attention.flex_attention",
        None,
        None,
        "2.5",
        "pip install 'torch>=2.5'",
        f"{_K} §7 (flex since torch 2.5; Axolotl needs 2.6)",
    ),
    Backend(
        "fa2",
        "FlashAttention 2",
        "flash-attn",
        "flash_attn",
        ("8", "9", "10", "12"),
        ("gfx90a", "gfx942", "gfx950"),
        None,
        "pip install flash-attn --no-build-isolation  # torch first; compiles where no wheel matches",
        f"{_K} §7: FLASH_ATTN_CUDA_ARCHS 80;90;100;120, ROCm CK gfx90a/gfx942/gfx950",
    ),
    Backend(
        "fa3",
        "FlashAttention 3",
        "flash-attn-3",
        "flash_attn_3",
        ("8", "9.0"),
        (),
        None,
        "build from the upstream hopper/ directory (CUDA >= 12.3)",
        f"{_K} §7: kernels for sm80 and sm90a only, no Blackwell",
    ),
    Backend(
        "fa4",
        "FlashAttention 4",
        "flash-attn-4",
        "flash_attn.cute",
        ("8", "9", "10", "11", "12"),
        (),
        None,
        "pip install --pre flash-attn-4  # plain `pip install flash-attn-4` finds no release",
        f"{_K} §3: forward on majors 8-12 in 4.0.0b36 (backward 9-12)",
    ),
    Backend(
        "sage",
        "SageAttention 2",
        "sageattention",
        "sageattention",
        ("8.0", "8.6", "8.9", "9.0", "12.0"),
        (),
        None,
        "build SageAttention 2.2.0 from source (PyPI has only 1.x)",
        f"{_K} §5/§7: setup.py archs 8.0/8.6/8.9/9.0/12.0; sageattn() raises elsewhere",
    ),
    Backend(
        "xformers",
        "xFormers",
        "xformers",
        "xformers.ops",
        ("7.5", "8", "9", "10", "12"),
        (),  # ROCm builds of xFormers not checked: none claimed
        None,
        "pip install xformers  # pick the release built for your torch",
        f"{_K} §7: sm75 through cutlass, Volta dropped since 0.0.31",
    ),
)

BY_NAME = {backend.name: backend for backend in BACKENDS}
