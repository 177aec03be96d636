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

Started only where an NVIDIA device node exists: without one NVML fails at once and in-process.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from attn_doctor.facts.child import Child, ChildTimeout

if TYPE_CHECKING:  # the head start imports this module: the facts' classes only when read
    from attn_doctor.facts.model import Driver, Gpu

NVIDIA_DEVICE = "/dev/nvidiactl"
# NVML answers in well under a second; a driver that hangs it is said as an NVML failure after this
# long (read in-process, it would hang `check` itself)
TIMEOUT_S = 10.0

_SOURCE = """import sys
sys.path[:] = {path!r}
from attn_doctor.facts.gpu_child import answer
answer()
"""


def start(device: str = NVIDIA_DEVICE) -> Child | None:
    """The child reading the GPUs, or None where there is no NVIDIA device node (or no process
    could be started)."""
    if not os.path.exists(device):
        return None
    try:
        return Child([sys.executable, "-B", "-c", _SOURCE.format(path=sys.path)])
    except OSError:
        return None


def answer() -> None:
    """In the child: the GPUs as `read_gpus` reads them, as JSON on standard output."""
    from attn_doctor.facts.gpu import read_gpus
    from attn_doctor.facts.model import to_data

    driver, gpus = read_gpus()
    sys.stdout.write(json.dumps({"driver": to_data(driver), "gpus": to_data(gpus)}))


def taken(child: Child) -> tuple[Driver, tuple[Gpu, ...]] | None:
    """The child's reading as (Driver, tuple of Gpu): an NVML failure where it gave no answer in
    TIMEOUT_S (it is then killed); None where it failed otherwise (read the GPUs here)."""
    from attn_doctor.facts.gpu import nvml_unanswered
    from attn_doctor.facts.model import Driver, Gpu, from_data

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
