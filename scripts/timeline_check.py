"""`check`'s path in one process, phase by phase, with and without the head start: where the time
goes once the probe starts early. Each mode runs in a fresh interpreter, alternately.

    python scripts/timeline_check.py --python TARGET [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

ONE_RUN = r"""
import json, sys, time
marks = [("interpreter up", time.perf_counter())]
def mark(label): marks.append((label, time.perf_counter()))
target, mode = sys.argv[1], sys.argv[2]
if mode != "plain":
    from attn_doctor.facts import head_start
    head_start.start(target, False)
mark("head start")
import attn_doctor.cli
mark("import the CLI")
from attn_doctor.facts import target as target_module
from attn_doctor.facts.collect import collect
from attn_doctor.render.json import render_json
from attn_doctor.report import judge
mark("import collect, judge, render")
waited = []
result = target_module.RunningProbe.result
def timed(self):
    started = time.perf_counter()
    try:
        return result(self)
    finally:
        waited.append(time.perf_counter() - started)
target_module.RunningProbe.result = timed
facts = collect(target)
mark("collect")
render_json(judge(facts), 0)
mark("judge and render")
phases = {after[0]: after[1] - before[1] for before, after in zip(marks, marks[1:])}
phases["of which: waiting for the probe"] = waited[0]
print(json.dumps(phases))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--python", required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"head-start": [], "plain": []}
    for _ in range(args.runs + 1):  # the first round warms the page cache
        for mode in runs:
            done = subprocess.run(
                [sys.executable, "-c", ONE_RUN, args.python, mode], capture_output=True, text=True, check=True
            )
            runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    for mode, measured in runs.items():
        print(f"== {mode} (median of {args.runs})")
        for phase in measured[1]:
            print(f"  {statistics.median(m[phase] for m in measured[1:]):6.3f} s  {phase}")
        total = statistics.median(sum(v for k, v in m.items() if not k.startswith("of which")) for m in measured[1:])
        print(f"  {total:6.3f} s  in all, after the interpreter's start")


if __name__ == "__main__":
    main()
