"""Where `attn-doctor check` spends its time, phase by phase, in one process.

    python scripts/profile_check.py [--python TARGET]

Complements scripts/bench_check.py (which times whole runs against a peer): this one says
which part to make faster.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    marks: list[tuple[str, float]] = [("start", time.perf_counter())]

    def mark(label: str) -> None:
        marks.append((label, time.perf_counter()))

    bare = subprocess.run([args.python, "-c", "pass"], check=False)
    mark(f"target interpreter start-up alone (exit {bare.returncode})")
    import attn_doctor.cli  # noqa: F401  (typer, the CLI's own imports)

    mark("import attn_doctor.cli (typer)")
    from attn_doctor.facts.gpu import read_gpus
    from attn_doctor.facts.target import RunningProbe
    from attn_doctor.facts.toolchain import read_toolchain

    mark("import the collectors")
    probe = RunningProbe(args.python, deep=False)
    read_gpus()
    mark("NVML (probe running meanwhile)")
    read_toolchain()
    mark("toolchain (nvcc --version)")
    seen = probe.result()
    mark("wait for the probe")
    from attn_doctor.facts.binaries import check_binaries
    from attn_doctor.facts.collect import extensions

    found = extensions(seen)
    check_binaries(found, seen.torch.location if seen.torch else None)
    mark(f"read {len(found)} compiled extension(s) as ELF")
    from attn_doctor.facts.collect import collect
    from attn_doctor.render.json import render_json
    from attn_doctor.report import judge

    mark("import judge and renderer")
    started = time.perf_counter()
    render_json(judge(collect(args.python)), 0)
    mark(f"collect+judge+render again, concurrently ({time.perf_counter() - started:.3f} s)")
    for (_, before), (label, after) in itertools.pairwise(marks):
        print(f"{after - before:7.3f} s  {label}")


if __name__ == "__main__":
    main()
