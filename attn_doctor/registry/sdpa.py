"""Releases of torch whose SDPA picks a kernel known to go wrong on some GPUs: cuDNN attention,
which torch 2.5.0, 2.9 and 2.11 on made the first choice on Hopper and Blackwell. Each with the
cuDNN it comes with (the nvidia-cudnn-cu12/cu13 distribution installed), the GPUs, the pass it
hurts, the remedy, and its source."""

from __future__ import annotations

from dataclasses import dataclass

_TORCH = "https://github.com/pytorch/pytorch"


@dataclass(frozen=True)
class SdpaHazard:
    torch: str  # the torch releases, a PEP 440 specifier
    cudnn: str  # the installed cuDNN's releases; "" for any
    capabilities: tuple[str, ...]
    training: bool  # True: it hurts training (the backward pass); False: inference too
    what: str
    remedy: str  # a command, or a line for the training script
    source: str


SDPA_MODULE = "torch.nn.functional"  # what the sdpa backend proves itself by, and its findings concern
CUDNN_DISTRIBUTIONS = ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12")
DEPRIORITIZE = (
    "export TORCH_CUDNN_SDPA_DEPRIORITIZED=1  # SDPA takes flash attention first (torch >= 2.10); "
    "or torch.backends.cuda.enable_cudnn_sdp(False) in the training script"
)

HAZARDS = (
    SdpaHazard(
        "==2.5.0",
        "",
        ("9.0",),
        True,
        "torch 2.5.0 made cuDNN attention SDPA's first choice on H100-class GPUs: training losses explode to "
        "NaN (2.5.1 moved it to the last)",
        "pip install 'torch==2.5.1'  # or torch.backends.cuda.enable_cudnn_sdp(False) in the training script",
        f"{_TORCH}/issues/139298, {_TORCH}/pull/138522, https://github.com/huggingface/diffusers/issues/9768",
    ),
    SdpaHazard(
        ">=2.9,<2.10",
        "<9.15.1",
        ("9.0", "10.0"),
        True,
        "torch 2.9 prefers cuDNN attention on sm_90/sm_100, and cuDNN before 9.15.1 hits an illegal memory access "
        "under CUDA graphs when the query length is no multiple of 128",
        "export TORCH_CUDNN_SDPA_PREFERRED=0  # SDPA takes flash attention first (torch 2.9)",
        f"{_TORCH}/issues/169849, {_TORCH}/pull/171627",
    ),
    SdpaHazard(
        ">=2.11",
        ">=9.20,<9.21",
        ("9.0",),
        True,
        "cuDNN 9.20's Hopper backward, SDPA's first choice from torch 2.11, gives NaN grad_q where an explicit "
        "attn_mask is passed and the sequence length is 64 past a multiple of 128 (DPO/KTO training)",
        DEPRIORITIZE,
        f"{_TORCH}/issues/196678, https://github.com/huggingface/trl/issues/7181",
    ),
    SdpaHazard(
        ">=2.11",
        ">=9.19,<9.21",
        ("10.0",),
        False,
        "cuDNN 9.19/9.20 attention, SDPA's first choice on B200 from torch 2.11, silently corrupts generation for "
        "models with fewer than 8 key-value heads",
        DEPRIORITIZE,
        f"{_TORCH}/issues/193893",
    ),
)
