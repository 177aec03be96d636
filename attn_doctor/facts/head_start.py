"""What `check` waits on longest, started before the doctor's own imports.

`check` spends most of its time waiting on the probe in the target interpreter (that
interpreter's start-up, its `.pth` files, the scan of its distributions), and the doctor's own
imports (typer, the registry, the collectors) take about as long again. So the entry point starts
the probe first, with the standard library only (`facts/locate.py`): it starts up while the doctor
imports, and waits for its request (what to read, which comes from the registry) on standard
input. `collect` takes it over when it was started for the target it was asked about; one it does
not take reads end-of-file and ends, or its process group is killed with the doctor
(`attn_doctor.keeper`).

NVML is not started here too: measured on an H100 (tests/fixtures/h100-head-start-timeline-*.txt),
reading it in a thread beside the doctor's imports slowed those imports more than it saved
(0.225 s against 0.201 s for the probe alone, by the image's python3; 0.192 s against 0.174 s from a
venv of its own); `collect` reads it beside the probe's answer as before.
"""

from __future__ import annotations

from typing import NamedTuple

from attn_doctor.facts.child import Child
from attn_doctor.facts.locate import TargetError, find_target, start_probe


class Started(NamedTuple):
    executable: str
    probe: tuple[Child, str]  # the probe's child and the marker its answer follows


_started: Started | None = None


def start(python: str | None) -> None:
    """Start the probe of the target `check` will judge. Anything that goes wrong here is left for
    `collect` to meet and report in its own words."""
    global _started
    try:
        executable, _ = find_target(python)
        _started = Started(executable, start_probe(executable))
    except (TargetError, OSError):
        return


def take(executable: str) -> Started | None:
    """What was started for this target, once; None when nothing was, or for another one."""
    global _started
    started, _started = _started, None
    if started is None or started.executable != executable:
        return None
    return started
