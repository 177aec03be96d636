"""Does `attn-doctor bench` agree with an independent timer? Run on a GPU machine, in the target
interpreter (the one with torch, triton and the backends):

    python3 scripts/bench_agreement.py [BACKEND ...] [--bench BENCH_JSON] [--json FILE]

For each backend that imports (default: sdpa fa2 fa3 fa4 sage) and each standard shape (bf16,
causal): triton.testing.do_bench (median) of the backend's own API called on tensors in its own
layout, against `bench`'s figure: the one in BENCH_JSON (an `attn-doctor bench --output` report,
the run a table is made from), else `bench`'s own timing (kernel.py's bench_case) in this process.
do_bench runs `--rounds` times (3) per case, and so does a timer of the GPU's own time: the
profiler's (CUPTI's) durations of the call's kernels, summed, each call after an L2 flush, all
queued behind a GPU spin (column gpu). Where the host's own time to issue a call is at least half of
do_bench's figure, do_bench's events time the host (forward+backward at 1k tokens:
tests/fixtures/h100-bench-regimes.txt), and `bench` times the GPU there (kernel.py's median_ms):
the reference is then the GPU's time ("kernels" under reference), else do_bench's. A CUDA graph
(do_bench_cudagraph) was that timer before, and it is not one: for SageAttention it read 3-4x
under do_bench where both time the GPU, and its time grew with seqlen, not with its square: the
attention kernel was not in the graph (tests/fixtures/h100-bench-agreement-five-ahead.json).
Prints TFLOP/s, do_bench's median and range, the GPU's time, the host's rate, and
bench/reference per case; a case agrees when bench is within 10% of the reference, or inside the
range that timer itself produced (said so: "its own spread"); exit 1 when one does neither.
(The timing `bench` did before it agreed at 4k-8k is in tests/fixtures/h100-bench-agreement.txt,
column "before".)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from triton.testing import do_bench

KERNEL = Path(__file__).resolve().parent.parent / "attn_doctor" / "trials" / "kernel.py"
SHAPES = [(4, s, 16, d) for d in (64, 128) for s in (1024, 4096, 8192)]  # trials/bench.py STANDARD
TOLERANCE = 0.10
SPIN_CYCLES = 400_000_000  # ~200 ms at most clocks ahead of timed or profiled calls: longer than the host needs
# host-bound here: the host's own time to issue a call (behind a spin) is at least this share of
# do_bench's figure (the checker's own test; kernel.py judges each timed batch by its own)
HOST_BOUND = 0.5


def load_kernel() -> Any:
    spec = importlib.util.spec_from_file_location("attn_doctor_kernel", KERNEL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def own_api(name: str) -> tuple[Callable[..., Any], bool]:
    """The backend's own call on tensors of its own layout, and whether those are (b, h, s, d)."""
    if name == "sdpa":
        return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)), True
    if name == "sage":
        from sageattention import sageattn

        return (lambda q, k, v: sageattn(q, k, v, tensor_layout="HND", is_causal=True)), True
    module = {"fa2": "flash_attn", "fa3": "flash_attn_interface", "fa4": "flash_attn.cute"}[name]
    api = importlib.import_module(module)

    def call(q: Any, k: Any, v: Any) -> Any:
        out = api.flash_attn_func(q, k, v, causal=True)
        return out[0] if isinstance(out, (tuple, list)) else out

    return call, False


def host_ms(step: Callable[[], Any], calls: int = 20) -> float:
    """The host's own time to issue one call, queued behind a GPU spin so that it never waits."""
    torch.cuda._sleep(SPIN_CYCLES)
    began = time.perf_counter()
    for _ in range(calls):
        step()
    took = (time.perf_counter() - began) * 1000 / calls
    torch.cuda.synchronize()
    return took


def case_steps(name: str, shape: tuple[int, int, int, int], backward: bool) -> dict[str, Callable[[], Any]]:
    """The backend's own API on tensors of its own layout: forward, and forward+backward."""
    b, s, h, d = shape
    call, heads_first = own_api(name)
    size = (b, h, s, d) if heads_first else (b, s, h, d)
    q, k, v = (torch.randn(size, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    grad = torch.randn(size, device="cuda", dtype=torch.bfloat16)

    def forward() -> None:
        with torch.no_grad():
            call(q, k, v)

    def forward_backward() -> None:
        torch.autograd.grad(call(q, k, v), (q, k, v), grad)

    return {"fwd": forward, "fwd+bwd": forward_backward} if backward else {"fwd": forward}


_NOT_THE_CALLS: list[set[str]] = []


def profiled(queue: Callable[[], Any]) -> list[tuple[str, float]]:
    """The name and duration (us) of each kernel the GPU ran for `queue`, queued behind a spin."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        torch.cuda._sleep(SPIN_CYCLES)
        queue()
        torch.cuda.synchronize()
    return [(e.name, e.time_range.elapsed_us()) for e in trace.events() if e.device_type == DeviceType.CUDA]


def kernels_ms(step: Callable[[], Any], kernel: Any, calls: int = 20) -> float:
    """The GPU's own time of one call by the profiler (CUPTI): the durations of its kernels, summed,
    no gaps between them; each call after an L2 flush, as do_bench's and bench's, all of them queued
    behind a spin as bench queues a host-bound call (matmuls there instead slowed the clocks: SDPA's
    kernels read 188 TFLOP/s at 4x1024x16x64 fwd where do_bench read 225,
    tests/fixtures/h100-bench-agreement-sdpa-matmul-filler.json). The flush is made of
    bytes, so that its kernel is not one a backend launches (they zero float and int32 buffers)."""
    flush = torch.empty(kernel.FLUSH_BYTES, dtype=torch.uint8, device="cuda")

    def flushes(with_calls: bool) -> Callable[[], None]:
        def queue() -> None:
            for _ in range(calls):
                flush.zero_()
                if with_calls:
                    step()

        return queue

    if not _NOT_THE_CALLS:  # the filler's and the flush's kernels, by name
        _NOT_THE_CALLS.append({name for name, _ in profiled(flushes(False))})
    ours = [us for name, us in profiled(flushes(True)) if name not in _NOT_THE_CALLS[0]]
    return sum(ours) / 1000 / calls


def independent_ms(step: Callable[[], Any], rounds: int, kernel: Any) -> dict[str, Any]:
    """do_bench's median and the GPU's own time (the profiler's kernel sum), `rounds` runs each
    (sorted), and the host's time."""
    step()
    torch.cuda.synchronize()
    return dict(
        do_bench=sorted(float(do_bench(step, return_mode="median")) for _ in range(rounds)),
        gpu=sorted(kernels_ms(step, kernel) for _ in range(rounds)),
        host=host_ms(step),
    )


def flops(shape: tuple[int, int, int, int], mode: str) -> float:
    b, s, h, d = shape
    forward = 4 * b * h * s * s * d * 0.5  # causal: half (trials/bench.py Shape.flops)
    return forward * (3.5 if mode == "fwd+bwd" else 1.0)


def tflops(shape: tuple[int, int, int, int], mode: str, ms: float) -> float:
    return flops(shape, mode) / (ms / 1000) / 1e12


def bench_report(path: Path) -> dict[tuple[str, str, str], float]:
    """An `attn-doctor bench --output` report's milliseconds by (backend, shape, mode)."""
    report = json.loads(path.read_text())
    return {(t["backend"], t["shape"], t["mode"]): float(t["ms"]) for t in report["timings"]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("backends", nargs="*", default=["sdpa", "fa2", "fa3", "fa4", "sage"])
    parser.add_argument("--bench", type=Path, help="an `attn-doctor bench --output` report to check")
    parser.add_argument("--rounds", type=int, default=3, help="do_bench runs per case")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    kernel = load_kernel()
    kernel.wake(torch)  # as kernel.main does before `bench`'s first case
    reported = bench_report(options.bench) if options.bench else None
    rows = []
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; TFLOP/s (bf16, causal)")
    print(f"bench: {options.bench or 'timed here by kernel.bench_case'}")
    print(
        f"{'backend':8} {'B×S×H×D':14} {'mode':8} {'bench':>7} {'do_bench':>8} {'its range':>11} {'gpu':>6}"
        f" {'host':>6} {'reference':>9} {'bench/it':>7}"
    )
    worst, failed = 0.0, 0
    for name in options.backends:
        try:
            adapter = kernel.ADAPTERS[name](torch)
            own_api(name)
        except Exception as error:  # not installed here: said, not timed
            print(f"{name:8} not importable: {type(error).__name__}: {error}"[:160])
            continue
        backward = name != "sage"  # SageAttention has no backward
        for shape in SHAPES:
            b, s, h, d = shape
            label = "x".join(map(str, shape))
            if reported is not None:
                ours = {m: reported[(name, label, m)] for m in ("fwd", "fwd+bwd") if (name, label, m) in reported}
                if not ours:
                    print(f"{name:8} {label:14} not in {options.bench}")
                    continue
            else:
                case = dict(dtype="bfloat16", batch=b, seqlen=s, heads=h, kv_heads=h, head_dim=d, causal=True)
                case.update(backward=backward, warmup=3, repeats=10)
                ours = kernel.bench_case(torch, adapter, case, "cuda", name)["ms"]
            for mode, step in case_steps(name, shape, backward and "fwd+bwd" in ours).items():
                found = independent_ms(step, options.rounds, kernel)
                host_bound = found["host"] >= HOST_BOUND * statistics.median(found["do_bench"])
                by = "gpu" if host_bound else "do_bench"
                runs = found[by]
                theirs = statistics.median(runs)
                ratio = theirs / ours[mode]  # TFLOP/s ratio bench/reference
                worst = max(worst, abs(ratio - 1))
                agrees = abs(ratio - 1) <= TOLERANCE
                in_spread = runs[0] <= ours[mode] <= runs[-1]
                failed += not (agrees or in_spread)
                tf = {
                    "bench": tflops(shape, mode, ours[mode]),
                    "do_bench": tflops(shape, mode, statistics.median(found["do_bench"])),
                    "gpu": tflops(shape, mode, statistics.median(found["gpu"])),
                    "host": tflops(shape, mode, found["host"]),
                }
                low, high = tflops(shape, mode, found["do_bench"][-1]), tflops(shape, mode, found["do_bench"][0])
                verdict = "" if agrees else "  its own spread" if in_spread else "  OFF"
                reference = "kernels" if host_bound else "do_bench"
                print(
                    f"{name:8} {label:14} {mode:8} {tf['bench']:7.0f} {tf['do_bench']:8.0f} {low:5.0f}-{high:<5.0f} "
                    f"{tf['gpu']:6.0f} {tf['host']:6.0f} {reference:>9} {ratio:7.3f}{verdict}"
                )
                rows.append(
                    dict(
                        backend=name,
                        shape=label,
                        mode=mode,
                        ms_bench=ours[mode],
                        ms=found,
                        host_bound=host_bound,
                        reference=reference,
                        tflops=tf,
                        ratio=ratio,
                        agrees=agrees,
                        within_its_spread=in_spread,
                    )
                )
            sys.stdout.flush()
    print(
        f"largest disagreement: {worst:.1%} (target {TOLERANCE:.0%}); outside the reference's own range too: {failed}"
    )
    if options.json:
        options.json.write_text(
            json.dumps(
                dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows, worst=worst, failed=failed),
                indent=1,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
