"""What `check` waits on longest, started before the CLI's own imports.

`check` spends most of its time waiting: on the probe in the target interpreter (that
interpreter's start-up, its `.pth` files, the scan of its distributions) and on NVML's
initialisation. The doctor's own imports (typer, the registry, the collectors) take about as long
again. So the entry point starts the probe first, with the standard library only
(`facts/locate.py`): it starts up while the doctor imports, and waits for its request (what to
read, which comes from the registry) on standard input. NVML is read in a thread meanwhile.
`collect` takes both over when they were started for the target it was asked about; anything it
does not take is discarded (the probe reads end-of-file and ends, or its process group is killed
with the doctor, see `attn_doctor.keeper`).
"""

from __future__ import annotations

from concurrent.futures import Future
from threading import Thread
from typing import Any, NamedTuple

from attn_doctor.facts.child import Child
from attn_doctor.facts.locate import TargetError, find_target, start_probe


class Started(NamedTuple):
    executable: str
    probe: tuple[Child, str]  # the probe's child and the marker its answer follows
    gpus: Future[Any] | None  # read_gpus()'s answer, (Driver, tuple[Gpu, ...]); None: not started


_started: Started | None = None


def start(python: str | None, read_nvml: bool = True) -> None:
    """Start the probe of the target `check` will judge, and NVML's reading (`read_nvml`), in the
    background. Anything that goes wrong here is left for `collect` to meet and report in its own
    words."""
    global _started
    try:
        executable, _ = find_target(python)
        probe = start_probe(executable)
    except (TargetError, OSError):
        return
    if not read_nvml:
        _started = Started(executable, probe, None)
        return
    gpus: Future[Any] = Future()

    def read() -> None:
        try:
            from attn_doctor.facts.gpu import read_gpus  # its imports, too, off the main thread

            gpus.set_result(read_gpus())
        except BaseException as error:  # handed to collect, which raises it where it always did
            gpus.set_exception(error)

    Thread(target=read, daemon=True).start()
    _started = Started(executable, probe, gpus)


def take(executable: str) -> Started | None:
    """What was started for this target, once; None when nothing was, or for another one."""
    global _started
    started, _started = _started, None
    if started is None or started.executable != executable:
        return None
    return started
