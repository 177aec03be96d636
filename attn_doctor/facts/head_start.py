"""What `check` waits on longest, started before the CLI's own imports.

`check` spends most of its time waiting: on the probe in the target interpreter (that
interpreter's start-up, its `.pth` files, the scan of its distributions) and on NVML's
initialisation. The CLI's imports (typer, the registry) take about as long again. So the entry
point starts the probe and NVML's reading first, and `collect` takes them over when they were
started for what it was asked; anything it does not take is discarded (the probe's process group
is killed with the doctor, see `attn_doctor.keeper`).
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from threading import Thread

from attn_doctor.facts.gpu import read_gpus
from attn_doctor.facts.model import Driver, Gpu
from attn_doctor.facts.target import RunningProbe, TargetError, find_target


@dataclass(frozen=True)
class Started:
    executable: str
    deep: bool
    probe: RunningProbe
    gpus: Future[tuple[Driver, tuple[Gpu, ...]]]


_started: Started | None = None


def start(python: str | None, deep: bool) -> None:
    """Start the probe of the target `check` will judge, and NVML's reading, in the background.
    Anything that goes wrong here is left for `collect` to meet and report in its own words."""
    global _started
    try:
        executable, _ = find_target(python)
        probe = RunningProbe(executable, deep)
    except TargetError:
        return
    gpus: Future[tuple[Driver, tuple[Gpu, ...]]] = Future()

    def read() -> None:
        try:
            gpus.set_result(read_gpus())
        except BaseException as error:  # handed to collect, which raises it where it always did
            gpus.set_exception(error)

    Thread(target=read, daemon=True).start()
    _started = Started(executable, deep, probe, gpus)


def take(executable: str, deep: bool) -> Started | None:
    """What was started for this target, once; None when nothing was, or for another one."""
    global _started
    started, _started = _started, None
    if started is None or (started.executable, started.deep) != (executable, deep):
        return None
    return started
