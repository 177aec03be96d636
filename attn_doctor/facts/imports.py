"""`check --deep`: import each installed backend in a child process of the target interpreter.

An import can crash, hang or take seconds (FA4's CuTe DSL: 9.5 s on an H100), so it never
happens in the doctor's own process, and each runs with a timeout. The failure is classified
from its message: the classes are what the user must do differently.
"""

from __future__ import annotations

import re
import time
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


def import_one(python: str, module: str, timeout: float = IMPORT_TIMEOUT_S) -> ImportResult:
    started = time.perf_counter()
    try:
        done = run_child([python, "-c", f"import {module}"], timeout)
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
    with ThreadPoolExecutor(max_workers=min(4, len(modules))) as pool:
        return tuple(pool.map(lambda m: import_one(python, m, timeout), modules))
