"""Benchmark: `attn-doctor check` against `python -m torch.utils.collect_env`, side by side.

Both run in the same target environment (which must hold torch), alternately, several times;
the medians and the ratio are printed, and the peak memory of the doctor's process tree.
The issue's targets: check at least 10x faster than collect_env, under 0.5 s on an H100
machine, peak memory under 80 MB.

    python scripts/bench_check.py --python /path/to/venv/bin/python [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def timed(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one run. wait4's ru_maxrss covers the
    process and the descendants it waited for (the probe), so the figure is the tree's peak."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss / 1024, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="target interpreter, with torch installed")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--deep", action="store_true", help="time `check --deep` as well")
    args = parser.parse_args()

    doctor = [sys.executable, "-m", "attn_doctor", "check", "--python", args.python, "--format", "json"]
    peer = [args.python, "-m", "torch.utils.collect_env"]
    timed(doctor)  # warm the page cache for both before measuring
    if timed(peer)[2] != 0:
        sys.exit(f"{' '.join(peer)} failed: is torch installed in {args.python}?")
    results: dict[str, list[tuple[float, float, int]]] = {"check": [], "collect_env": []}
    for _ in range(args.runs):
        results["check"].append(timed(doctor))
        results["collect_env"].append(timed(peer))
    if args.deep:
        results["check --deep"] = [timed([*doctor, "--deep"]) for _ in range(max(1, args.runs // 2))]

    medians = {name: statistics.median(r[0] for r in runs) for name, runs in results.items()}
    for name, runs in results.items():
        peak = max(r[1] for r in runs)
        print(f"{name:14} median {medians[name]:6.3f} s   peak RSS {peak:6.1f} MB   ({len(runs)} runs)")
    ratio = medians["collect_env"] / medians["check"]
    print(f"ratio: attn-doctor check is {ratio:.1f}x faster than torch.utils.collect_env")


if __name__ == "__main__":
    main()
