"""Why `bench` and do_bench part at 1k tokens (issue 15, item 5): one case, five timings. Run on a
GPU machine in the target interpreter:

    python3 scripts/bench_regimes.py [BACKEND ...] [--rounds 3] [--json FILE]

Per backend, standard shape and mode (bf16, causal), each timed `--rounds` times:
  bench     kernel.py's median_ms, as `attn-doctor bench` times (events per call, L2 flushed)
  do_bench  triton.testing.do_bench, median (the same, written by triton)
  graph     triton.testing.do_bench_cudagraph, median: the calls replayed from a CUDA graph, so
            no host work at all between kernels: the GPU's own time
  ahead     events per call as `bench`, L2 flushed, but queued behind a GPU spin long enough for
            the host to enqueue every timed call first: the GPU's time with the eager launches
  host      the host's own time to issue one call (queued behind a spin, so never waiting on it)
If host >= bench's per-call time, a call is host-bound and an event pair around it times the host.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from triton.testing import do_bench, do_bench_cudagraph

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_agreement import SHAPES, case_steps, host_ms, load_kernel, tflops

AHEAD_CALLS = 40  # few enough that their launches fit the launch queue behind the spin
SPIN_CYCLES_PER_MS = 1_800_000  # an H100's SM clock is ~1.8 GHz at most: a spin of at least that long


def spin(ms: float) -> None:
    torch.cuda._sleep(int(ms * SPIN_CYCLES_PER_MS))


def ahead_ms(step: Callable[[], Any], flush: Any) -> float:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(AHEAD_CALLS)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(AHEAD_CALLS)]
    spin(200)
    for index in range(AHEAD_CALLS):
        flush.zero_()
        starts[index].record()
        step()
        ends[index].record()
    torch.cuda.synchronize()
    return float(statistics.median(starts[i].elapsed_time(ends[i]) for i in range(AHEAD_CALLS)))


def timers_of(kernel: Any, step: Callable[[], Any], flush: Any) -> dict[str, Callable[[], float]]:
    return {
        "bench": lambda: kernel.median_ms(torch, step, "cuda", 3, 10),
        "do_bench": lambda: float(do_bench(step, return_mode="median")),
        "graph": lambda: float(do_bench_cudagraph(step, return_mode="median")),
        "ahead": lambda: ahead_ms(step, flush),
        "host": lambda: host_ms(step),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("backends", nargs="*", default=["sdpa", "fa2"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    kernel = load_kernel()
    kernel.wake(torch)
    flush = torch.empty(kernel.FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    rows = []
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; TFLOP/s median (min-max) of {options.rounds}")
    methods = ("bench", "do_bench", "graph", "ahead", "host")
    print(f"{'backend':7} {'B×S×H×D':14} {'mode':8} " + " ".join(f"{m:>15}" for m in methods))
    for name in options.backends:
        for shape in SHAPES:
            label = "x".join(map(str, shape))
            for mode, step in case_steps(name, shape, name != "sage").items():
                step()
                torch.cuda.synchronize()
                timers = timers_of(kernel, step, flush)
                found: dict[str, Any] = {}
                for method, timer in timers.items():
                    try:
                        found[method] = sorted(timer() for _ in range(options.rounds))
                    except Exception as error:  # a backend a graph cannot capture: said, not fatal
                        found[method] = f"{type(error).__name__}: {error}"[:120]
                cells = []
                for method in methods:
                    runs = found[method]
                    if isinstance(runs, str):
                        cells.append(f"{'failed':>15}")
                        continue
                    mid = tflops(shape, mode, statistics.median(runs))
                    cells.append(
                        f"{mid:5.0f} ({tflops(shape, mode, runs[-1]):3.0f}-{tflops(shape, mode, runs[0]):3.0f})"
                    )
                print(f"{name:7} {label:14} {mode:8} " + " ".join(cells))
                sys.stdout.flush()
                rows.append(dict(backend=name, shape=label, mode=mode, ms=found))
    if options.json:
        options.json.write_text(json.dumps(dict(gpu=torch.cuda.get_device_name(), rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
