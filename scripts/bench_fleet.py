"""How `attn-doctor fleet` scales, measured on this machine:

    python scripts/bench_fleet.py [--nodes 1,2,4] [--reports 1000] [--python PATH] [--repeats 3]

- a one-node `attn-doctor check --format json` (the baseline: what each node runs);
- `fleet --ray` against a real local Ray cluster (ray.cluster_utils.Cluster: one raylet per node,
  num_cpus=1 each) of each size, the cluster started before the clock starts;
- `fleet --reports` over N report files: one real report of this machine written N times under N
  hostnames, 1 in 100 given another torch so that there are groups to tell apart.

Each figure is the median wall time of --repeats runs of the real CLI, and its ratio to the
one-node check of the same run. Several raylets on one small machine share its cores: a node's
check here competes with the others', which a real cluster's nodes do not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def timed(argv: list[str], repeats: int) -> tuple[float, int]:
    """Median seconds of `repeats` runs, and the last exit code."""
    times, code = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        code = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False).returncode
        times.append(time.perf_counter() - started)
    return statistics.median(times), code


def doctor(*args: str) -> list[str]:
    return [sys.executable, "-m", "attn_doctor", *args]


def ray_figures(sizes: list[int], python: list[str], repeats: int) -> list[tuple[int, float, int]]:
    from ray.cluster_utils import Cluster

    found = []
    for size in sizes:
        cluster: Any = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})  # ray is untyped here
        try:
            for _ in range(size - 1):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            seconds, code = timed(
                doctor("fleet", "--ray", "--address", cluster.address, "--format", "json", *python), repeats
            )
            found.append((size, seconds, code))
        finally:
            cluster.shutdown()
    return found


def reports_figure(count: int, python: list[str], repeats: int) -> tuple[float, int]:
    one = subprocess.run(doctor("check", "--format", "json", *python), capture_output=True, text=True, check=False)
    base = json.loads(one.stdout)
    with tempfile.TemporaryDirectory() as folder:
        for index in range(count):
            node = {**base, "hostname": f"node-{index:04d}"}
            if index % 100 == 99:  # 1 node in 100 has another torch (or, without torch, another Python)
                if base.get("torch"):
                    node["torch"] = {**base["torch"], "version": "2.8.0+cu128"}
                else:
                    node["python"] = {**base["python"], "version": "3.9.18"}
            Path(folder, f"attn-doctor-node-{index:04d}.json").write_text(json.dumps(node))
        return timed(doctor("fleet", "--reports", f"{folder}/*.json", "--format", "json"), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1,2,4", help="Ray cluster sizes, comma-separated")
    parser.add_argument("--reports", type=int, default=1000, help="how many report files to merge")
    parser.add_argument("--python", help="the target interpreter each check reads (default: check's own)")
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    python = ["--python", options.python] if options.python else []

    check, _ = timed(doctor("check", "--format", "json", *python), options.repeats)
    print(f"one-node check:                   {check:6.2f} s  (1.0x)")
    for size, seconds, code in ray_figures([int(n) for n in options.nodes.split(",")], python, options.repeats):
        print(f"fleet --ray, {size:3d} node(s):         {seconds:6.2f} s  ({seconds / check:.1f}x)  exit {code}")
    seconds, code = reports_figure(options.reports, python, options.repeats)
    print(f"fleet --reports, {options.reports} files:   {seconds:6.2f} s  ({seconds / check:.1f}x)  exit {code}")


if __name__ == "__main__":
    main()
