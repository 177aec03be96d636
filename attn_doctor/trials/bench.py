"""bench: time forward and forward+backward of each working backend at standard shapes, and
save the result so that `check --bench FILE` ranks the backends as measured on this machine.

FLOPs are counted as FlashAttention's benchmarks count them: forward 4·b·h·s²·d (two matmuls),
halved for a causal mask; backward 2.5 times the forward, so forward+backward is 3.5 times.
Times are taken as triton.testing.do_bench takes them (kernel.py's median_ms): the first call
(flex's torch.compile, FA4's JIT) untimed, 25 ms of warm-up, then at least `repeats` calls and
100 ms queued back to back, each between CUDA events after an L2 flush, one synchronise, the
median; each backend gets tensors in its own layout. scripts/bench_agreement.py checks the
agreement with do_bench on a GPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from attn_doctor.facts.measured import Measured, Timing
from attn_doctor.facts.model import Facts
from attn_doctor.registry.backends import Backend
from attn_doctor.trials.run import Case, Outcome, run_kernels
from attn_doctor.trials.verify import smoke

BENCH_TIMEOUT_S = 600.0
MATMUL_N = 8192  # kernel.py's matmul_ceiling: an n x n x n bf16 matmul


@dataclass(frozen=True)
class Shape:
    batch: int
    seqlen: int
    heads: int
    head_dim: int

    @property
    def label(self) -> str:
        return f"{self.batch}x{self.seqlen}x{self.heads}x{self.head_dim}"

    def flops(self, mode: str, causal: bool = True) -> float:
        forward = 4 * self.batch * self.heads * self.seqlen**2 * self.head_dim * (0.5 if causal else 1.0)
        return forward * (3.5 if mode == "fwd+bwd" else 1.0)


# batch 4 x 16 heads x seqlen 1k/4k/8k x head dim 64/128 (the standard set)
STANDARD = tuple(Shape(4, s, 16, d) for d in (64, 128) for s in (1024, 4096, 8192))


def parse_shape(text: str) -> Shape:
    """`B,S,H,D` as in 4,4096,16,128."""
    try:
        batch, seqlen, heads, dim = (int(part) for part in text.split(","))
    except ValueError as error:
        raise ValueError(f"--shape {text!r}: expected B,S,H,D as four integers, e.g. 4,4096,16,128") from error
    if min(batch, seqlen, heads, dim) < 1:
        raise ValueError(f"--shape {text!r}: every size must be at least 1")
    return Shape(batch, seqlen, heads, dim)


def bench(
    python: str,
    facts: Facts,
    backends: list[Backend],
    shapes: tuple[Shape, ...],
    on_outcome: Callable[[Outcome], None] | None = None,
    repeats: int = 10,
    timeout: float = BENCH_TIMEOUT_S,
) -> Measured:
    gpu = facts.gpus[0] if facts.gpus else None
    timings, failed = [], []
    ceiling = None
    for index, backend in enumerate(backends):
        cases = [
            Case(
                s.label,
                "bfloat16",
                True,
                s.batch,
                s.seqlen,
                s.heads,
                s.heads,
                s.head_dim,
                backward=backend.trains,
                repeats=repeats,
            )
            for s in shapes
        ]
        by_label = {s.label: s for s in shapes}
        # the matmul ceiling once, with the first backend's child (a GPU is already set up there)
        for outcome in run_kernels(python, backend.name, "bench", cases, timeout, on_outcome, ceiling=index == 0):
            if outcome.case == "matmul" and outcome.ms:
                ceiling = 2 * MATMUL_N**3 / (dict(outcome.ms)["matmul"] / 1000) / 1e12
            elif outcome.status != "timed":
                failed.append((backend.name, f"{outcome.case}: {outcome.status}: {outcome.message}"))
            else:
                shape = by_label[outcome.case]
                for mode, ms in outcome.ms:
                    tflops = shape.flops(mode) / (ms / 1000) / 1e12
                    timings.append(Timing(backend.name, shape.label, mode, ms, tflops, mode in outcome.host_bound))
    return Measured(
        gpu.name if gpu else "no GPU",
        gpu.compute_capability if gpu else None,
        facts.torch.version if facts.torch else None,
        "bfloat16",
        True,
        tuple(timings),
        tuple(failed),
        ceiling,
    )


def bench_working(
    python: str,
    facts: Facts,
    backends: list[Backend],
    shapes: tuple[Shape, ...],
    on_checked: Callable[[Backend], None],
    on_outcome: Callable[[Outcome], None] | None = None,
    repeats: int = 10,
    timeout: float = BENCH_TIMEOUT_S,
) -> Measured:
    """Each backend first run once against the reference (verify's smoke case); only those
    that compute the right thing are timed, the others are listed as failed with why."""
    working: list[Backend] = []
    failed: list[tuple[str, str]] = []
    for backend in backends:
        outcome = smoke(python, backend, bool(facts.gpus), timeout)
        if outcome.status == "passed":
            working.append(backend)
        else:
            failed.append((backend.name, f"not working here ({outcome.status}: {outcome.message})"))
        on_checked(backend)
    measured = bench(python, facts, working, shapes, on_outcome, repeats, timeout)
    return dataclasses.replace(measured, failed=tuple(failed) + measured.failed)
