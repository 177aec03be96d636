"""`check --deep`: import each installed backend in a child process of the target interpreter.

An import can crash, hang or take seconds (FA4's CuTe DSL: 9.5 s on an H100), so it never
happens in the doctor's own process, and each runs with a timeout. The failure is classified
from its message: the classes are what the user must do differently.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from attn_doctor.facts.child import ChildTimeout, run_child
from attn_doctor.facts.model import ImportResult

IMPORT_TIMEOUT_S = 120.0

# (outcome, pattern) in order: the first match classifies the error text.
_CLASSES = (
    ("undefined-symbol", re.compile(r"undefined symbol: (\S+)")),
    # the loader's "version `GLIBCXX_3.4.30' not found (required by …)": a glibc or libstdc++ too old
    ("missing-symbol-version", re.compile(r"version [`'](\S+)' not found")),
    (
        "missing-cuda-library",
        re.compile(
            r"(lib(?:cuda|cudart|cublas\w*|cudnn\w*|nvrtc\w*|cusparse\w*|nccl|cufft\w*|"
            r"curand\w*|cusolver\w*|nvJitLink\w*|amdhip64|rocblas)[\w.\-]*\.so[\w.]*): "
            r"cannot open shared object file"
        ),
    ),
    (
        "unsupported-gpu",
        re.compile(
            r"no kernel image is available|not supported on (?:this|your) GPU|"
            r"(?:requires|needs) (?:compute capability|sm_?\d+)|unsupported (?:GPU|architecture)",
            re.IGNORECASE,
        ),
    ),
)


def classify(stderr: str) -> tuple[str, str]:
    """(outcome, the line that says why) for a failed import's error output."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    for outcome, pattern in _CLASSES:
        for line in reversed(lines):
            if pattern.search(line):
                return outcome, line
    return "failed", lines[-1] if lines else "no error output"


def import_one(
    python: str, module: str, timeout: float = IMPORT_TIMEOUT_S, env: Mapping[str, str] | None = None
) -> ImportResult:
    started = time.perf_counter()
    try:
        done = run_child([python, "-B", "-c", f"import {module}"], timeout, env)
    except ChildTimeout:
        return ImportResult(module, "timeout", timeout, f"no answer in {timeout:.0f} s")
    except OSError as error:
        return ImportResult(module, "failed", 0.0, f"cannot run {python}: {error.strerror}")
    seconds = round(time.perf_counter() - started, 2)
    if done.returncode == 0:
        return ImportResult(module, "ok", seconds)
    outcome, detail = classify(done.stderr)
    return ImportResult(module, outcome, seconds, detail)


def import_all(python: str, modules: list[str], timeout: float = IMPORT_TIMEOUT_S) -> tuple[ImportResult, ...]:
    """Imports run side by side: each is its own process, and most of their time is waiting
    on the disk and on CUDA initialisation."""
    if not modules:
        return ()
    # in shared memory where there is some: a folder made and removed in $TMPDIR changes its mtime
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
    with tempfile.TemporaryDirectory(prefix="attn-doctor-imports-", dir=shm) as scratch:
        env = scratch_environment(scratch)
        with ThreadPoolExecutor(max_workers=min(4, len(modules))) as pool:
            return tuple(pool.map(lambda m: import_one(python, m, timeout, env), modules))


def scratch_environment(scratch: str) -> dict[str, str]:
    """The imports' environment: every cache they would write goes under `scratch`, removed
    afterwards (torch's inductor in $TMPDIR/torchinductor_*, Triton in ~/.triton, the CuTe DSL in
    ~/cutlass_python_cache, anything else in ~/.cache); the user site stays where it is, so the
    imports see the same sys.path as the training job does."""
    import site

    user_base = os.environ.get("PYTHONUSERBASE") or site.getuserbase()
    return {
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUSERBASE": user_base,
        "HOME": scratch,
        "TMPDIR": scratch,
        "XDG_CACHE_HOME": os.path.join(scratch, "cache"),
        "TRITON_CACHE_DIR": os.path.join(scratch, "triton"),
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(scratch, "inductor"),
    }
