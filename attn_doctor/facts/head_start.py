"""What `check` waits on longest, started before the doctor's own imports.

`check` spends most of its time waiting on the probe in the target interpreter (that
interpreter's start-up, its `.pth` files, the scan of its distributions), and the doctor's own
imports (typer, the registry, the collectors) take about as long again. So the entry point starts
the probe first, with the standard library only (`facts/locate.py`), and gives it its request
(what to read, which comes from the registry) on standard input as soon as the registry is
imported: the probe starts up and reads the target while the doctor imports typer, the rules and
the renderers. `collect` takes it over when it was started for the target and request it was asked
about; one it does not take ends on its own, or its process group is killed with the doctor
(`attn_doctor.keeper`).

NVML is read here too, in a process of its own (`facts/gpu_child.py`), not a thread: measured on
an H100 (tests/fixtures/h100-head-start-timeline-*.txt), reading it in a thread beside the doctor's
imports slowed those imports more than it saved (0.225 s against 0.201 s for the probe alone, by
the image's python3; 0.192 s against 0.174 s from a venv of its own).
"""

from __future__ import annotations

import os
import sys

from attn_doctor.facts.child import Child
from attn_doctor.facts.locate import TargetError, find_target, start_probe


class Started:
    """The probe started for `executable` and fed the request for `deep`: its child and the marker
    its answer follows."""

    __slots__ = ("deep", "executable", "probe")

    def __init__(self, executable: str, deep: bool, probe: tuple[Child, str]) -> None:
        self.executable, self.deep, self.probe = executable, deep, probe


_started: Started | None = None
_gpus: Child | None = None

NVIDIA_DEVICE = "/dev/nvidiactl"
# the GPU reading's child: the doctor's interpreter with the doctor's own sys.path (not the working
# folder's modules), running facts/gpu_child.py
_GPU_READING = """import sys
sys.path[:] = {path!r}
from attn_doctor.facts.gpu_child import answer
answer()
"""


def start_gpu_reading(device: str = NVIDIA_DEVICE) -> Child | None:
    """The child reading the GPUs (facts/gpu_child.py), or None where there is no NVIDIA device
    node (NVML then fails at once, in-process) or no process could be started."""
    if not os.path.exists(device):
        return None
    try:
        return Child([sys.executable, "-B", "-c", _GPU_READING.format(path=sys.path)])
    except OSError:
        return None


def start(python: str | None, deep: bool) -> None:
    """Start the probe of the target `check` will judge, then import the registry and give the
    probe its request: it then reads the target while the doctor imports the rest (typer, the
    rules, the renderers). Anything that goes wrong here is left for `collect` to meet and report
    in its own words."""
    global _started, _gpus
    try:
        executable, _ = find_target(python)
        child, marker = start_probe(executable)
    except (TargetError, OSError):
        return
    _gpus = start_gpu_reading()
    try:
        from attn_doctor.facts.target import probe_request

        child.feed(probe_request(deep))
    except Exception:  # the CLI imports the same next, and reports what fails in its own words
        return  # the probe, never fed, is killed with the doctor (keeper)
    _started = Started(executable, deep, (child, marker))


def take(executable: str, deep: bool) -> Started | None:
    """What was started for this target and request, once; None when nothing was, or another."""
    global _started
    started, _started = _started, None
    if started is None or started.executable != executable or started.deep != deep:
        return None
    return started


def take_gpus() -> Child | None:
    """The GPU reading started beside the probe, once; None when none was."""
    global _gpus
    started, _gpus = _gpus, None
    return started
