"""verify: run each installed backend forward and backward and compare it with a float32
reference. Installed is not working: this is the proof that it is.

The cases: bf16 and fp16, causal and not; grouped-query attention; a packed (varlen) batch for
the backends with a varlen API; the model's head dim when one is given. A result passes when its
largest relative error (||x - ref|| / ||ref||, over out, dq, dk, dv) is within the dtype's
tolerance; NaN or Inf never passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from attn_doctor.registry.backends import Backend
from attn_doctor.rules.assess import Assessment
from attn_doctor.trials.run import Case, Outcome, run_kernels

# Relative error allowed against the float32 reference. bf16 keeps 8 significant bits, so its
# rounding alone is ~4e-3 of the norm (fp16: ~5e-4); FA4 measured ~2e-3 on the H100
# (tests/fixtures/h100-verify-five.json). A wrong kernel (a missing scale, a shifted mask) is off by 1e-1 or more.
TOLERANCE = {"bfloat16": 3e-2, "float16": 5e-3}
# SageAttention quantizes Q and K to int8: its error is larger by design (forward only).
SAGE_TOLERANCE = 8e-2
VERIFY_TIMEOUT_S = 600.0  # per backend: FA4 imports in ~10 s and JIT-compiles each new shape


def installed(verdicts: Mapping[str, Assessment]) -> list[Backend]:
    """The backends there are to verify here: every installed one that has a kernel adapter."""
    return [v.backend for v in verdicts.values() if v.installed and v.backend.verifiable]


def cases(backend: Backend, gpu: bool, head_dims: tuple[int, ...] = ()) -> list[Case]:
    """Small enough to run in seconds (on a CPU too, for the tests), large enough to cross the
    kernels' tile boundaries (odd packed lengths)."""
    seqlen, dim = (512, 128) if gpu else (128, 64)
    backward = backend.trains

    def tolerance(dtype: str) -> float:
        return SAGE_TOLERANCE if backend.quantized else TOLERANCE[dtype]

    found = []
    for dtype, short in (("bfloat16", "bf16"), ("float16", "fp16")):
        for causal in (False, True):
            name = f"{short} {'causal' if causal else 'full'} d{dim}"
            found.append(Case(name, dtype, causal, 2, seqlen, 8, 8, dim, (), backward, tolerance(dtype)))
    bf16 = tolerance("bfloat16")
    found.append(Case(f"bf16 causal GQA 8/2 d{dim}", "bfloat16", True, 2, seqlen, 8, 2, dim, (), backward, bf16))
    if backend.varlen:
        lengths = (seqlen // 3, seqlen - seqlen // 3 - 7, 7)  # packed: one row, three sequences
        name = f"bf16 causal packed {'+'.join(map(str, lengths))}"
        found.append(Case(name, "bfloat16", True, 1, sum(lengths), 8, 8, dim, lengths, backward, bf16))
    for head in (h for h in head_dims if h != dim):
        found.append(Case(f"bf16 causal d{head} (model)", "bfloat16", True, 2, seqlen, 8, 8, head, (), backward, bf16))
    return found


def smoke(python: str, backend: Backend, gpu: bool, timeout: float = VERIFY_TIMEOUT_S) -> Outcome:
    """The one case that says whether a backend computes attention at all (bf16, causal):
    what `install` runs after installing and `bench` before timing."""
    case = next(c for c in cases(backend, gpu) if c.dtype == "bfloat16" and c.causal)
    (outcome,) = run_kernels(python, backend.name, "verify", [case], timeout)
    return outcome


@dataclass(frozen=True)
class Verdict:
    backend: Backend
    outcomes: tuple[Outcome, ...]
    # why `check` calls it unusable here (none: a failure here fails the command), and its fix
    check_reasons: tuple[str, ...] = ()
    check_fix: str | None = None

    @property
    def passed(self) -> bool:
        return all(o.status == "passed" for o in self.outcomes)

    @property
    def usable_per_check(self) -> bool:
        return not self.check_reasons


def verify(
    python: str,
    backends: list[Backend],
    gpu: bool,
    judged: Callable[[Backend], tuple[tuple[str, ...], str | None]],
    head_dims: tuple[int, ...] = (),
    on_outcome: Callable[[Outcome], None] | None = None,
    timeout: float = VERIFY_TIMEOUT_S,
) -> list[Verdict]:
    verdicts = []
    for backend in backends:
        outcomes = run_kernels(python, backend.name, "verify", cases(backend, gpu, head_dims), timeout, on_outcome)
        verdicts.append(Verdict(backend, tuple(outcomes), *judged(backend)))
    return verdicts
