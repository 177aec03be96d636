"""Which backends to prefer on a GPU, in order: the registry's ranks per GPU class.

The classes follow what was measured or what upstream builds for:
- Hopper (major 9): FA4, FA3 (next to it), SDPA, then FA2, at every sequence length. Measured
  on the H100 in one bench of all five, every figure the GPU's time (tests/fixtures/
  h100-bench-five-gpu.json): fwd+bwd at every standard shape, 1k tokens included, FA3 ran
  1.15-1.29x SDPA, FA4 1.12-1.22x, FA2 0.64-0.77x. (SDPA first below 2k tokens came from a bench
  that timed the host there: h100-bench-five.json.) Blackwell datacentre (majors 10-11): FA4,
  then FA2, then SDPA (not measured; FA3 does not run there).
- Ampere/Ada (8.x) and consumer Blackwell (12.x): FA2, then SDPA (Axolotl uses FA4 on 9-11 only).
- Turing (7.5): xFormers, then SDPA.
- AMD: FA2 (its CK targets), then SDPA. Older, CPU, unknown: SDPA.
For inference, backends ranked for it (SageAttention, which has no backward) go first, except on
Hopper, where it was measured: forward only, FA3 and FA4 ran 1.02-1.15x SDPA from 4k tokens and
0.92-1.06x at 1k, SageAttention 2 0.27-0.88x SDPA (h100-bench-five-gpu.json), so inference there
ranks as training does and SageAttention comes last.
"""

from __future__ import annotations

from attn_doctor.facts.model import Gpu
from attn_doctor.registry.backends import (
    AMD,
    AMPERE,
    BLACKWELL,
    HOPPER,
    INFERENCE,
    OTHER,
    TURING,
    Backend,
    registered,
)
from attn_doctor.workload import Workload


def major(gpu: Gpu) -> int:
    """The compute capability's major, 0 for AMD and unknown GPUs."""
    try:
        return int((gpu.compute_capability or "0.0").split(".")[0])
    except ValueError:
        return 0


def weakest(gpus: tuple[Gpu, ...]) -> Gpu | None:
    """Mixed GPUs: judge for the oldest, since one process may land on any of them."""
    nvidia = [g for g in gpus if g.vendor == "nvidia" and g.compute_capability]
    if nvidia:
        return min(nvidia, key=lambda g: (major(g), g.compute_capability or ""))
    return gpus[0] if gpus else None


def gpu_class(gpu: Gpu | None) -> str:
    if gpu is None:
        return OTHER
    if gpu.vendor == "amd":
        return AMD
    if major(gpu) == 9:
        return HOPPER
    if major(gpu) in (10, 11):
        return BLACKWELL
    if major(gpu) in (8, 12):
        return AMPERE
    if gpu.compute_capability == "7.5":
        return TURING
    return OTHER


def ranking(gpu: Gpu | None, work: Workload) -> list[Backend]:
    """The backends ranked for this GPU, best first, those whose newest release cannot run on it left out."""
    klass = gpu_class(gpu)
    ranked = [b for b in registered() if klass in b.ranks and (gpu is None or b.runs_on(gpu))]
    ranked.sort(key=lambda b: b.ranks[klass])
    if work.training == "inference" and gpu is not None:
        chosen = [b for b in registered() if INFERENCE in b.ranks and b.runs_on(gpu) and b not in ranked]
        chosen.sort(key=lambda b: b.ranks[INFERENCE])
        ranked = ranked + chosen if major(gpu) == 9 else chosen + ranked  # measured on Hopper: last
    return ranked


def first_choice(gpu: Gpu | None, excluding: str | None = None) -> Backend:
    """The backend ranked first for this GPU (for no workload in particular), other than
    `excluding`: what to use instead of one that cannot serve here."""
    ranked = [b for b in ranking(gpu, Workload()) if b.name != excluding]
    return ranked[0] if ranked else next(b for b in registered() if b.name == "sdpa")
