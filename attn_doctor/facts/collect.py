"""Collect every fact about this machine and the target interpreter. Read-only."""

from __future__ import annotations

import datetime
import socket
from pathlib import Path
from typing import Any

from attn_doctor import __version__
from attn_doctor.facts.gpu import read_gpus
from attn_doctor.facts.imports import IMPORT_CHECKS, import_all
from attn_doctor.facts.model import Facts
from attn_doctor.facts.target import RunningProbe, resolve_python
from attn_doctor.facts.toolchain import read_toolchain


def collect(python: str | None = None, deep: bool = False, nvml: Any | None = None) -> Facts:
    """Raises TargetError when the target interpreter cannot be inspected."""
    executable = resolve_python(python)
    probe = RunningProbe(executable, deep)  # runs while the GPUs and the toolchain are read
    driver, gpus = read_gpus(nvml)
    toolchain = read_toolchain(str(Path(executable).parent))
    seen = probe.result()
    imports = ()
    if deep:
        installed = {p.name for p in seen.packages}
        imports = import_all(executable, [m for d, m in IMPORT_CHECKS.items() if d in installed])
    return Facts(
        gpus=gpus,
        driver=driver,
        python=seen.python,
        torch=seen.torch,
        packages=seen.packages,
        resolutions=seen.resolutions,
        toolchain=toolchain,
        imports=imports,
        torch_problem=seen.torch_problem,
        hostname=socket.gethostname(),
        collected_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        doctor_version=__version__,
    )
