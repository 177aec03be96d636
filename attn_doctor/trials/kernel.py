"""Runs attention kernels inside the target interpreter: `verify` compares each backend with a
float32 reference, `bench` times it. This file is run as `python -c SOURCE SPEC` by
`trials/run.py`, never imported by the doctor: it needs only the standard library and the
target's own torch, and it prints one JSON object per line as each result is known.

Layouts: tensors are made as (batch, seqlen, heads, dim), FlashAttention's; SDPA, flex and
SageAttention get (batch, heads, seqlen, dim) views. Grouped-query attention is given to each
backend the way it takes it (native GQA, or K/V repeated, which computes the same function).
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

Call = Callable[..., Any]


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main() -> None:
    spec = json.loads(sys.argv[1])
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        call = ADAPTERS[spec["backend"]](torch)
    except Exception as error:  # the backend does not load: every case reports it
        for case in spec["cases"]:
            emit(case=case["name"], status="crashed", message=last_line(error))
        return
    if spec["mode"] == "bench" and device == "cuda":
        wake(torch)
    for case in spec["cases"]:
        try:
            if spec["mode"] == "verify":
                emit(case=case["name"], **verify_case(torch, call, case, device))
            else:
                emit(case=case["name"], **bench_case(torch, call, case, device, spec["backend"]))
        except Exception as error:
            status = "missing-kernel" if looks_missing(error) else "crashed"
            emit(case=case["name"], status=status, message=last_line(error))
    if spec.get("ceiling") and device == "cuda":
        emit(case="matmul", **matmul_ceiling(torch))


MISSING = ("no kernel image", "not supported", "unsupported", "only supports", "not implemented", "requires sm")


def looks_missing(error: BaseException) -> bool:
    text = (type(error).__name__ + " " + str(error)).lower()
    return isinstance(error, NotImplementedError) or any(m in text for m in MISSING)


def last_line(error: BaseException) -> str:
    lines = [line for line in traceback.format_exception_only(type(error), error) if line.strip()]
    return (lines[-1].strip() if lines else type(error).__name__)[:500]


# --- the backends: each takes q, k, v as (b, s, h, d) plus case options, returns (b, s, h, d) ---


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


def _repeat_kv(q: Any, k: Any, v: Any) -> Tuple[Any, Any]:
    groups = q.shape[2] // k.shape[2]
    if groups == 1:
        return k, v
    return k.repeat_interleave(groups, dim=2), v.repeat_interleave(groups, dim=2)


def sdpa(torch: Any) -> Call:
    import torch.nn.functional as F

    def call(q: Any, k: Any, v: Any, causal: bool, varlen: Optional[Tuple[Any, int]]) -> Any:
        k, v = _repeat_kv(q, k, v)  # enable_gqa needs torch 2.5; repeating works everywhere
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
        return out.transpose(1, 2)

    def native(q: Any, k: Any, v: Any, causal: bool) -> Any:  # (b, h, s, d), as bench times it
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    call.native = native  # type: ignore[attr-defined]
    return call


def flex(torch: Any) -> Call:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention) if torch.cuda.is_available() else flex_attention
    masks: Dict[Tuple[int, str], Any] = {}

    def causal_mask(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        return q_idx >= kv_idx

    def call(q: Any, k: Any, v: Any, causal: bool, varlen: Optional[Tuple[Any, int]]) -> Any:
        k, v = _repeat_kv(q, k, v)
        mask = None
        if causal:
            key = (q.shape[1], str(q.device))
            if key not in masks:
                masks[key] = create_block_mask(causal_mask, None, None, q.shape[1], q.shape[1], device=q.device)
            mask = masks[key]
        out = compiled(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=mask)
        return out.transpose(1, 2)

    def native(q: Any, k: Any, v: Any, causal: bool) -> Any:
        out = call(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal, None)
        return out.transpose(1, 2)

    call.native = native  # type: ignore[attr-defined]
    return call


def _flash(module: str) -> Callable[[Any], Call]:
    """FA2 (flash_attn), FA3 (flash_attn_interface), FA4 (flash_attn.cute): the same calls."""

    def load(torch: Any) -> Call:
        import importlib

        api = importlib.import_module(module)

        def call(q: Any, k: Any, v: Any, causal: bool, varlen: Optional[Tuple[Any, int]]) -> Any:
            if varlen is None:
                return _first(api.flash_attn_func(q, k, v, causal=causal))
            cu, longest = varlen
            flat = [t.reshape(-1, t.shape[2], t.shape[3]) for t in (q, k, v)]
            out = api.flash_attn_varlen_func(
                *flat, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=longest, max_seqlen_k=longest, causal=causal
            )
            return _first(out).reshape(q.shape)

        return call

    return load


def sage(torch: Any) -> Call:
    from sageattention import sageattn

    def call(q: Any, k: Any, v: Any, causal: bool, varlen: Optional[Tuple[Any, int]]) -> Any:
        k, v = _repeat_kv(q, k, v)
        out = sageattn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), tensor_layout="HND", is_causal=causal)
        return out.transpose(1, 2)

    def native(q: Any, k: Any, v: Any, causal: bool) -> Any:
        return sageattn(q, k, v, tensor_layout="HND", is_causal=causal)

    call.native = native  # type: ignore[attr-defined]
    return call


def xformers(torch: Any) -> Call:
    import xformers.ops as xops

    def call(q: Any, k: Any, v: Any, causal: bool, varlen: Optional[Tuple[Any, int]]) -> Any:
        k, v = _repeat_kv(q, k, v)
        bias = xops.LowerTriangularMask() if causal else None
        return xops.memory_efficient_attention(q, k, v, attn_bias=bias)

    return call


ADAPTERS = {
    "sdpa": sdpa,
    "flex": flex,
    "fa2": _flash("flash_attn"),
    "fa3": _flash("flash_attn_interface"),
    "fa4": _flash("flash_attn.cute"),
    "sage": sage,
    "xformers": xformers,
}


# --- verify ---


def reference(torch: Any, q: Any, k: Any, v: Any, causal: bool, lengths: Optional[List[int]]) -> Any:
    """Attention in float32 with plain matmul and softmax; packed sequences attend only within
    themselves."""
    q, k, v = (t.float() for t in (q, k, v))
    k, v = _repeat_kv(q, k, v)
    scores = torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(q.shape[-1])
    s = q.shape[1]
    allowed = torch.ones(s, s, dtype=torch.bool, device=q.device)
    if causal:
        allowed = torch.tril(allowed)
    if lengths:
        segment = torch.repeat_interleave(
            torch.arange(len(lengths), device=q.device), torch.tensor(lengths, device=q.device)
        )
        allowed = allowed & (segment[:, None] == segment[None, :])
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhst,bthd->bshd", torch.softmax(scores, dim=-1), v)


def relative_error(torch: Any, value: Any, expected: Any) -> float:
    value, expected = value.float(), expected.float()
    if not torch.isfinite(value).all():
        return float("nan")
    return float((value - expected).norm() / expected.norm().clamp_min(1e-12))


def verify_case(torch: Any, call: Call, case: Dict[str, Any], device: str) -> Dict[str, Any]:
    dtype = getattr(torch, case["dtype"])
    b, s, h, hk, d = case["batch"], case["seqlen"], case["heads"], case["kv_heads"], case["head_dim"]
    lengths = case.get("lengths")
    generator = torch.Generator(device="cpu").manual_seed(0)

    def tensor(heads: int) -> Any:
        made = torch.randn(b, s, heads, d, generator=generator, dtype=torch.float32)
        # forward-only kernels (SageAttention) may write into views of their inputs
        return made.to(device=device, dtype=dtype).requires_grad_(case.get("backward", True))

    q, k, v = tensor(h), tensor(hk), tensor(hk)
    varlen: Optional[Tuple[Any, int]] = None
    if lengths:
        cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=device)
        varlen = (cu, max(lengths))
    out = call(q, k, v, case["causal"], varlen)
    grad = torch.randn(out.shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)
    backward = case.get("backward", True)
    # one float32 reference serves the forward and, through autograd, the backward comparison
    q32, k32, v32 = (t.detach().float().requires_grad_(backward) for t in (q, k, v))
    expected = reference(torch, q32, k32, v32, case["causal"], lengths)
    errors = {"out": relative_error(torch, out.detach(), expected.detach())}
    if backward:
        try:
            dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
        except Exception as error:
            status = "missing-kernel" if looks_missing(error) or "does not require grad" in str(error) else "crashed"
            return dict(status=status, errors=errors, message="backward: " + last_line(error))
        rq, rk, rv = torch.autograd.grad(expected, (q32, k32, v32), grad.float())
        for name, value, wanted in (("dq", dq, rq), ("dk", dk, rk), ("dv", dv, rv)):
            errors[name] = relative_error(torch, value, wanted)
    if any(math.isnan(e) for e in errors.values()):
        return dict(status="wrong", errors=errors, message="NaN or Inf in the result")
    worst = max(errors.values())
    if worst > case["tolerance"]:
        return dict(status="wrong", errors=errors, message=f"relative error {worst:.3g} > {case['tolerance']:g}")
    return dict(status="passed", errors=errors, message="")


# --- bench ---

# The layout each backend takes without a copy: SDPA, flex and SageAttention (tensor_layout="HND")
# read (batch, heads, seqlen, dim), and `bench` times their own call (the adapter's `native`) on
# such tensors. Timed through the (b, s, h, d) views verify uses, q/k/v were copied by SDPA inside
# every timed call (the SDPA forward at 4x4096x16x64: 336 TFLOP/s in `bench`, 409 by
# do_bench); and with views made of the native tensors instead, the transposes' autograd nodes
# still cost host time that at 1k tokens, where a call's host work outlasts its kernels, was
# timed too (SDPA fwd+bwd at 4x1024x16x64 on the H100: 84-104 TFLOP/s against do_bench's 187-197).
HEADS_FIRST = ("sdpa", "flex", "sage")


def bench_case(torch: Any, call: Call, case: Dict[str, Any], device: str, backend: str = "") -> Dict[str, Any]:
    dtype = getattr(torch, case["dtype"])
    b, s, h, hk, d = case["batch"], case["seqlen"], case["heads"], case["kv_heads"], case["head_dim"]
    native = getattr(call, "native", None) if backend in HEADS_FIRST else None

    def tensor(heads: int) -> Any:
        size = (b, heads, s, d) if native else (b, s, heads, d)
        return torch.randn(*size, device=device, dtype=dtype, requires_grad=True)

    q, k, v = tensor(h), tensor(hk), tensor(hk)
    grad = tensor(h).detach()

    def run() -> Any:
        return native(q, k, v, case["causal"]) if native else call(q, k, v, case["causal"], None)

    def forward() -> None:
        with torch.no_grad():
            run()

    def forward_backward() -> None:
        torch.autograd.grad(run(), (q, k, v), grad)

    timings: Dict[str, float] = {}
    host_bound: List[str] = []  # the modes whose calls the host issued no faster than the GPU ran them
    for mode, step in (("fwd", forward), ("fwd+bwd", forward_backward)):
        if mode == "fwd+bwd" and not case.get("backward", True):
            continue
        timings[mode], spun = timed_ms(torch, step, device, case["warmup"], case["repeats"])
        if spun:
            host_bound.append(mode)
    return dict(status="timed", ms=timings, host_bound=host_bound)


def wake(torch: Any, seconds: float = 0.5) -> None:
    """Half a second of matmuls before the first case: the first shape timed in a fresh process
    on an idle GPU read 130-152 TFLOP/s (SDPA fwd+bwd, 4x1024x16x64, H100) where do_bench, timing
    the same shape right after it, read 172-199."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()


# How long to warm up and to time, in milliseconds of the call's own running time, and the L2
# flush before each timed call: triton.testing.do_bench's method (warmup=25, rep=100, a 256 MB
# buffer zeroed; python/triton/testing.py at v3.6.0,
# https://github.com/triton-lang/triton/blob/v3.6.0/python/triton/testing.py), so that `bench`
# and an independent do_bench agree (scripts/bench_agreement.py checks it on a GPU).
WARMUP_MS = 25.0
TIMED_MS = 100.0
FLUSH_BYTES = 256 * 1024 * 1024
# Calls timed in a batch: with a flush, two events and a fwd+bwd's ~20 kernels each, few enough to
# stay under CUDA's queue of ~1024 pending launches behind a spin (beyond it the host waits, and
# the gaps come back).
QUEUED_CALLS = 30
# Host-bound: the host took at least this share of a call's measured time to queue it (flush,
# events and call), i.e. the GPU waited for the host and the events timed the host.
HOST_BOUND = 0.9
# A spin the GPU got through before the host had queued the batch is doubled, at most this often:
# a call that waits on the GPU itself is never ahead, and is then timed as do_bench times it.
SPIN_RETRIES = 4


def median_ms(torch: Any, step: Callable[[], Any], device: str, warmup: int, repeats: int) -> float:
    """timed_ms's median alone (the matmul ceiling, the scripts)."""
    return timed_ms(torch, step, device, warmup, repeats)[0]


def timed_ms(torch: Any, step: Callable[[], Any], device: str, warmup: int, repeats: int) -> Tuple[float, bool]:
    """The median of one call's time on the GPU, and whether the host was the bound (the calls
    were timed queued behind a spin). Each call is timed between two CUDA events after an L2
    flush, as do_bench times it. Where the host takes as long to issue a call as the GPU to run it
    (1k tokens: Python dispatch, autograd), events around each call time the host, do_bench's too:
    FA2 fwd+bwd at 4x1024x16x64 read 39-52 TFLOP/s that way and 158 from a CUDA graph
    (tests/fixtures/h100-bench-regimes.txt). Such a batch is timed again, queued behind a GPU spin
    that outlasts the host's queueing of it, so that the events time the GPU's work: 152 (h100-
    bench-regimes-ahead.txt). Only there, as the batch itself shows it, not by a separate guess: a
    spin is idle time, after which the clocks run a short batch fast (FA3's fwd at 4x4096x16x128,
    half host-bound by an estimate, was spun and read 14% above do_bench:
    h100-bench-agreement-five-ahead.json), and matmuls ahead of every batch instead slowed the
    GPU's clocks (SDPA 1-9% under do_bench at 4k-8k: h100-bench-agreement-sdpa-matmul-filler.json).
    The first call compiles (flex, FA4's JIT) and is never timed; at least `warmup` calls and 25 ms
    warm up, at least `repeats` and 100 ms are timed."""
    step()  # compiles, per shape: outside any timing
    if device != "cuda":
        for _ in range(max(0, warmup - 1)):
            step()
        times: List[float] = []
        for _ in range(repeats):
            began = time.perf_counter()
            step()
            times.append((time.perf_counter() - began) * 1000)
        times.sort()
        return times[len(times) // 2], False
    torch.cuda.synchronize()
    # Warm up by the clock before estimating: the first calls of a new shape after its compile can
    # still be slow (per-shape plans, the allocator growing), and an estimate taken from them
    # sizes a short warm-up and a short timed run that they then dominate.
    began, calls = time.perf_counter(), 0
    while calls < warmup or ((time.perf_counter() - began) * 1000 < WARMUP_MS and calls < 1000):
        step()
        torch.cuda.synchronize()
        calls += 1
    flush = torch.empty(FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        flush.zero_()
        step()
    end.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(end) / 5, 1e-3)
    for _ in range(max(warmup, int(WARMUP_MS / estimate))):
        step()
    torch.cuda.synchronize()
    count = max(repeats, int(TIMED_MS / estimate))
    spin_ms, retries = 0.0, 0
    times = []
    while len(times) < count:
        batch = min(QUEUED_CALLS, count - len(times))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(batch)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(batch)]
        ahead = _spin(torch, spin_ms) if spin_ms else None
        queued = time.perf_counter()
        for index in range(batch):  # (no zip(strict=): this runs on the target's Python, maybe 3.9)
            flush.zero_()  # each call starts with a cold L2, as do_bench's
            starts[index].record()
            step()
            ends[index].record()
        caught_up = ahead is not None and ahead.query()  # the spin ended before the last call was queued
        host_ms = (time.perf_counter() - queued) * 1000
        torch.cuda.synchronize()
        measured = sorted(starts[i].elapsed_time(ends[i]) for i in range(batch))
        if ahead is None and host_ms / batch >= HOST_BOUND * measured[batch // 2] and hasattr(torch.cuda, "_sleep"):
            spin_ms = 1.5 * host_ms  # host-bound: timed again, behind a spin
            continue
        if caught_up and retries < SPIN_RETRIES:
            spin_ms, retries = max(2 * spin_ms, 2 * host_ms), retries + 1
            continue
        times.extend(measured)
    times.sort()
    middle = len(times) // 2
    return (times[middle] if len(times) % 2 else (times[middle - 1] + times[middle]) / 2), spin_ms > 0


_SPIN_CYCLES_PER_MS: List[float] = []


def _spin(torch: Any, ms: float) -> Any:
    """Keep the GPU busy for about `ms` (torch.cuda._sleep spins for a number of clock cycles:
    measured once how many make a millisecond here); returns an event the GPU reaches after it."""
    if not _SPIN_CYCLES_PER_MS:
        torch.cuda._sleep(1000)  # its first launch loads the kernel: never inside the events
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(10_000_000)
        end.record()
        torch.cuda.synchronize()
        _SPIN_CYCLES_PER_MS.append(10_000_000 / max(start.elapsed_time(end), 1e-3))
    torch.cuda._sleep(int(ms * _SPIN_CYCLES_PER_MS[0]) + 1)
    done = torch.cuda.Event()
    done.record()
    return done


def matmul_ceiling(torch: Any) -> Dict[str, Any]:
    """The GPU's bf16 matrix rate here: what an attention kernel's TFLOP/s is measured against."""
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    return dict(status="timed", ms={"matmul": median_ms(torch, lambda: torch.matmul(a, b), "cuda", 3, 20)})


if __name__ == "__main__":
    main()
