"""Run `kernel.py` in a child process of the target interpreter: one backend per child, so a
crash, a hang or a CUDA error in one cannot take the others (or the doctor) with it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from attn_doctor import keeper

KERNEL = Path(__file__).with_name("kernel.py")


@dataclass(frozen=True)
class Case:
    """One call of a backend: shapes as (batch, seqlen, heads, dim); `lengths` packs sequences
    of those lengths into one row (the varlen API)."""

    name: str
    dtype: str  # "bfloat16" | "float16"
    causal: bool
    batch: int
    seqlen: int
    heads: int
    kv_heads: int
    head_dim: int
    lengths: tuple[int, ...] = ()
    backward: bool = True
    tolerance: float = 0.0  # verify: the largest relative error that passes
    warmup: int = 3  # bench
    repeats: int = 10  # bench


@dataclass(frozen=True)
class Outcome:
    """What one case did. status: passed | wrong | missing-kernel | crashed | timed-out (verify),
    timed (bench)."""

    backend: str
    case: str
    status: str
    message: str = ""
    errors: tuple[tuple[str, float], ...] = ()  # verify: relative error of out, dq, dk, dv
    ms: tuple[tuple[str, float], ...] = ()  # bench: median milliseconds per mode
    host_bound: tuple[str, ...] = ()  # bench: the modes whose calls the host issued no faster than the GPU ran them


def run_kernels(
    python: str,
    backend: str,
    mode: str,
    cases: list[Case],
    timeout: float,
    on_outcome: Callable[[Outcome], None] | None = None,
    ceiling: bool = False,
) -> list[Outcome]:
    """Every case's outcome, in order. Cases the child never reported are `timed-out` (killed at
    `timeout` seconds) or `crashed` (the child died: its last line of stderr says how)."""
    spec = {"backend": backend, "mode": mode, "cases": [asdict(c) for c in cases], "ceiling": ceiling}
    outcomes: list[Outcome] = []
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errors:
        try:
            child = subprocess.Popen(
                [python, "-c", KERNEL.read_text(encoding="utf-8"), json.dumps(spec)],
                stdout=subprocess.PIPE,
                stderr=errors,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                start_new_session=True,  # its own group: a timeout kills what it started too (compilers)
            )
        except OSError as error:
            return [Outcome(backend, c.name, "crashed", f"cannot run {python}: {error.strerror}") for c in cases]
        keeper.keep(child.pid)  # a hung import dies with the doctor, whatever ends it

        def read() -> None:
            assert child.stdout is not None
            for line in child.stdout:
                outcome = _parse(backend, line)
                if outcome is not None:
                    outcomes.append(outcome)
                    if on_outcome is not None:
                        on_outcome(outcome)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            child.wait(timeout=timeout)
            status, why = "crashed", ""
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            status, why = "timed-out", f"no answer within {timeout:.0f} s"
        keeper.release(child.pid)
        reader.join(timeout=5)
        if not why:
            errors.seek(0)
            lines = [line.strip() for line in errors.read().splitlines() if line.strip()]
            why = lines[-1] if lines else f"the child exited with {child.returncode}"
    done = {o.case for o in outcomes}
    for case in cases:
        if case.name not in done:
            outcome = Outcome(backend, case.name, status, why)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    return outcomes


def _parse(backend: str, line: str) -> Outcome | None:
    try:
        data: dict[str, Any] = json.loads(line)
    except ValueError:
        return None  # a backend printing to stdout: not ours
    if not isinstance(data, dict) or "case" not in data:
        return None
    return Outcome(
        backend,
        str(data["case"]),
        str(data.get("status", "crashed")),
        str(data.get("message", "")),
        tuple((str(k), float(v)) for k, v in (data.get("errors") or {}).items()),
        tuple((str(k), float(v)) for k, v in (data.get("ms") or {}).items()),
        tuple(str(mode) for mode in (data.get("host_bound") or ())),
    )
