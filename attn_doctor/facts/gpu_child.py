"""The GPUs read in a process of its own, started by `check`'s head start beside the probe.

NVML's initialisation is the longest wait of `collect` once the probe answers before the doctor's
imports end (on an H100, from a venv of the doctor's own: `import pynvml; nvmlInit()` 46 ms of a
0.064 s collect, tests/fixtures/h100-head-start-round-2-2026-12-06.txt). In a thread it
competes with the doctor's imports for the interpreter (measured slower); in a process of its own,
started before those imports, it is done before `collect` asks. The child is the doctor's own
interpreter with the doctor's own `sys.path` (not the working folder's modules), runs
`read_gpus()` and prints its reading as JSON. Whatever goes wrong with it (no answer in time, a
crash, unreadable output) leaves `collect` to read the GPUs itself, as before: the head start
never changes an answer, only when it comes. One thing it adds: NVML that gives no answer (a hung
driver) is an NVML failure after 10 s, where read in-process it would hang `check`.

The head start starts it (`head_start.start_gpu_reading`, only where an NVIDIA device node exists:
without one NVML fails at once and in-process); this module is what the child runs and what
`collect` reads its answer with, so the head start imports none of it.
"""

from __future__ import annotations

import json
import sys

from attn_doctor.facts.child import Child, ChildTimeout
from attn_doctor.facts.gpu import nvml_unanswered, read_gpus
from attn_doctor.facts.model import Driver, Gpu, from_data, to_data

# NVML answers in well under a second; a driver that hangs it is said as an NVML failure after this
# long (read in-process, it would hang `check` itself)
TIMEOUT_S = 10.0


def answer() -> None:
    """In the child: the GPUs as `read_gpus` reads them, as JSON on standard output."""
    driver, gpus = read_gpus()
    sys.stdout.write(json.dumps({"driver": to_data(driver), "gpus": to_data(gpus)}))


def taken(child: Child) -> tuple[Driver, tuple[Gpu, ...]] | None:
    """The child's reading as (Driver, tuple of Gpu): an NVML failure where it gave no answer in
    TIMEOUT_S (it is then killed); None where it failed otherwise (read the GPUs here)."""
    try:
        finished = child.finish(TIMEOUT_S)
    except ChildTimeout:
        return nvml_unanswered(f"NVML gave no answer in {TIMEOUT_S:.0f} s (a hung driver?); nvidia-smi may hang too")
    if finished.returncode != 0:
        return None
    try:
        data = json.loads(finished.stdout)
        return from_data(Driver, data["driver"]), tuple(from_data(Gpu, g) for g in data["gpus"])
    except (ValueError, KeyError, TypeError):
        return None
