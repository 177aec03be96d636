"""Collect every fact about this machine and the target interpreter. Read-only."""

from __future__ import annotations

import datetime
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from attn_doctor import __version__
from attn_doctor.facts.gpu import read_gpus
from attn_doctor.facts.imports import IMPORT_CHECKS, import_all
from attn_doctor.facts.model import Facts, ImportResult
from attn_doctor.facts.target import RunningProbe, resolve_python
from attn_doctor.facts.toolchain import read_toolchain


def collect(python: str | None = None, deep: bool = False, nvml: Any | None = None) -> Facts:
    """Raises TargetError when the target interpreter cannot be inspected."""
    executable = resolve_python(python)
    # Three waits overlap: the probe's interpreter start-up, NVML's initialisation (0.14 s on
    # an H100) and `nvcc --version`.
    probe = RunningProbe(executable, deep)
    with ThreadPoolExecutor(max_workers=1) as pool:
        toolchain = pool.submit(read_toolchain, str(Path(executable).parent))
        driver, gpus = read_gpus(nvml)
        seen = probe.result()
        tools = toolchain.result()
    imports: tuple[ImportResult, ...] = ()
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
        toolchain=tools,
        imports=imports,
        torch_problem=seen.torch_problem,
        hostname=socket.gethostname(),
        collected_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        doctor_version=__version__,
    )
