"""The attention backends as data: what each is, how to tell it is there, which GPUs it runs on,
what it can train, and the Axolotl config line that selects it.

Each rule carries its source. GPU support is by compute capability for NVIDIA (a "major.minor"
listed, or any minor of a listed major) and by gfx target for AMD. `None` means "not limited
by this table" (SDPA runs anywhere torch does).
"""

from __future__ import annotations

from dataclasses import dataclass

from attn_doctor.facts.model import Gpu
from attn_doctor.rules.versions import release

_K = "KNOWLEDGE.md"
_AX = "upstream/sage-xformers-torch-axolotl.md §4 (Axolotl v0.18.0)"


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
    trains: bool = True  # has a backward pass
    max_head_dim: int | None = None
    axolotl: str = ""  # the config line that selects it
    caveats: tuple[str, ...] = ()
    min_rocm: str | None = None  # the HIP/ROCm version of torch's build, on AMD

    def needs_newer_torch(self, torch_version: str) -> bool:
        return self.min_torch is not None and release(torch_version) < release(self.min_torch)

    def runs_on(self, gpu: Gpu) -> bool:
        if gpu.vendor == "amd":
            return self.amd is None or gpu.gfx_target in self.amd
        if self.nvidia is None:
            return True
        capability = gpu.compute_capability or ""
        return capability in self.nvidia or capability.split(".")[0] in self.nvidia


BACKENDS = (
    Backend(
        name="sdpa",
        label="PyTorch SDPA",
        distribution=None,
        module="torch.nn.functional",
        nvidia=None,
        amd=None,
        min_torch="2.0",
        install="pip install torch",
        source="torch 2.0 release notes; its math backend runs on any device; flash backend sm80-sm121 head dim <= 256 "
        f"({_K} §7)",
        axolotl="attn_implementation: sdpa",
        caveats=("cuDNN SDPA is preferred on sm90/sm100/sm103 with cuDNN > 9.15 (torch >= 2.10)",),
    ),
    Backend(
        name="flex",
        label="Flex Attention",
        distribution=None,
        module="torch.nn.attention.flex_attention",
        nvidia=None,
        amd=None,
        min_torch="2.6",
        install="pip install 'torch>=2.6'",
        source=f"{_K} §7 (flex since torch 2.5; Axolotl refuses it below 2.6: check_flex_torch_version)",
        axolotl="attn_implementation: flex_attention\ntorch_compile: true",
        caveats=("with torch.compile (Axolotl recommends it; no validator requires it)",),
    ),
    Backend(
        name="fa2",
        label="FlashAttention 2",
        distribution="flash-attn",
        module="flash_attn",
        nvidia=("8", "9", "10", "12"),
        amd=("gfx90a", "gfx942", "gfx950"),
        min_torch=None,
        install="attn-doctor install fa2  # the release wheel for this torch, else a compile sized for this machine",
        source=f"{_K} §7: FLASH_ATTN_CUDA_ARCHS 80;90;100;120, ROCm CK gfx90a/gfx942/gfx950; README: head dims <= 256",
        max_head_dim=256,
        axolotl="attn_implementation: flash_attention_2",
        min_rocm="6.0",  # the Axolotl guide: AMD through ROCm >= 6.0
    ),
    Backend(
        name="fa3",
        label="FlashAttention 3",
        distribution="flash-attn-3",
        module="flash_attn_3",
        nvidia=("8", "9.0"),
        amd=(),
        min_torch=None,
        install="attn-doctor install fa3  # builds upstream's hopper/ at a pinned commit (CUDA >= 12.3)",
        source=f"{_K} §7: kernels for sm80 and sm90a only, no Blackwell; HDIM up to 256",
        max_head_dim=256,
        axolotl="attn_implementation: flash_attention_3",
        caveats=("Axolotl never picks FA3 by itself; with FA4 importable on sm90+ FA4 overrides it",),
    ),
    Backend(
        name="fa4",
        label="FlashAttention 4",
        distribution="flash-attn-4",
        module="flash_attn.cute",
        nvidia=("8", "9", "10", "11", "12"),
        amd=(),
        min_torch=None,
        install="attn-doctor install fa4  # pip install 'flash-attn-4==4.0.0b36': plain flash-attn-4 finds nothing",
        source=f"{_K} §3: forward on majors 8-12 in 4.0.0b36 (backward 9-12); {_AX}: Axolotl uses it on 9, 10, 11",
        axolotl="attn_implementation: flash_attention_2  # Axolotl switches to FA4 when flash_attn.cute imports",
        caveats=("no backward on sm80 (forward only)", "head dims per FA4's _validate_head_dims"),
    ),
    Backend(
        name="sage",
        label="SageAttention 2",
        distribution="sageattention",
        module="sageattention",
        nvidia=("8.0", "8.6", "8.9", "9.0", "12.0"),
        amd=(),
        min_torch=None,
        install="attn-doctor install sage  # builds SageAttention 2.2.0 from source (PyPI has only 1.x)",
        source=f"{_K} §5/§7: setup.py archs 8.0/8.6/8.9/9.0/12.0; no backward (inference only, thu-ml #90)",
        trains=False,
        axolotl="attn_implementation: sage",
        caveats=("full fine-tuning seen to drive the loss to 0 (thu-ml #198)",),
    ),
    Backend(
        name="xformers",
        label="xFormers",
        distribution="xformers",
        module="xformers.ops",
        nvidia=("7.5", "8", "9", "10", "12"),
        amd=(),
        min_torch=None,  # ROCm builds not checked: none claimed
        install="attn-doctor install xformers  # the release built for your torch",
        source=f"{_K} §7: sm75 through cutlass, Volta dropped since 0.0.31",
        axolotl="attn_implementation: xformers",
        caveats=("each xformers release up to 0.0.34 pins one exact torch",),
    ),
    Backend(
        name="s2",
        label="Shifted-sparse attention (S2)",
        distribution=None,
        module="torch",
        nvidia=(),
        amd=(),
        min_torch=None,
        install="not available: removed from Axolotl",
        source=f"{_AX}: s2_attention rejected since v0.17.0 (no longer supported); before: not with sample_packing",
        axolotl="s2_attention: true  # rejected by Axolotl >= 0.17",
        caveats=("LLaMA only, needed flash attention, no sample packing; deprecated",),
    ),
)

BY_NAME = {backend.name: backend for backend in BACKENDS}


def fa4_accepts(cc_major: int, head_dim: int, head_dim_v: int, alignment: int = 8) -> bool | None:
    """FA4's `_validate_head_dims` of flash-attn-4 4.0.0b36 (interface.py), as data; Axolotl calls
    it with alignment 8 (bf16/fp16). None: FA4 does not check on this architecture (SM80, SM120).
    Source: KNOWLEDGE.md §3, upstream/flash-attention.md §4."""
    aligned = head_dim % alignment == 0 and head_dim_v % alignment == 0
    if cc_major == 9:
        return aligned and 8 <= head_dim <= 256 and 8 <= head_dim_v <= 256
    if cc_major in (10, 11):
        return (
            (aligned and 8 <= head_dim <= 128 and 8 <= head_dim_v <= 128)
            or (head_dim, head_dim_v) == (192, 128)
            or (head_dim_v == 512 and head_dim in (64, 512))
            or (head_dim, head_dim_v) == (256, 256)
        )
    return None


FA4_RULE_VERSION = "4.0.0b36"  # the release whose head-dim rule fa4_accepts encodes
