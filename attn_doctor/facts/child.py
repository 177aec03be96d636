"""A child process of the target interpreter (the probe, a `--deep` import, `sys.prefix`), read
with a deadline that holds even when something it started keeps its output open.

`--python` may be a wrapper script whose own child outlives it with our pipes open: killing the
wrapper alone and reading to EOF would then wait forever. So each child starts in its own
session, its whole process group is killed at the deadline, and no read waits past it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

POLL_S = 0.2  # how often a waiting read looks whether the child has exited
# Once the child has exited, how long what it left behind may keep its pipes open (a wrapper's
# background job) before that is killed and the output read so far is the answer.
LINGER_S = 1.0


class ChildTimeout(Exception):
    """The child did not finish in time; it and its process group were killed."""


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


class Child:
    """Started at once (OSError when it cannot be); `finish` collects it."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self._process = subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: killpg reaches what it starts
        )

    def finish(self, timeout: float) -> Finished:
        """Its exit status and output; ChildTimeout when it is still running after `timeout` s."""
        deadline = time.monotonic() + timeout
        exited_at: float | None = None
        while True:
            try:
                out, err = self._process.communicate(timeout=POLL_S)
                return Finished(self._process.returncode, _text(out), _text(err))
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if self._process.poll() is not None:
                exited_at = now if exited_at is None else exited_at
                if now - exited_at >= LINGER_S:
                    out, err = self._stop()
                    return Finished(self._process.returncode, _text(out), _text(err))
            elif now >= deadline:
                self._stop()
                raise ChildTimeout(f"no answer in {timeout:.0f} s")

    def _stop(self) -> tuple[bytes, bytes]:
        """Kill the process group; what it wrote, read until the pipes close or LINGER_S passes
        (a process that left the group with setsid may hold them for ever)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):  # all gone, or a setuid one
            os.killpg(self._process.pid, signal.SIGKILL)
        out: bytes | None
        err: bytes | None
        try:
            out, err = self._process.communicate(timeout=LINGER_S)
        except subprocess.TimeoutExpired as still:
            out, err = still.output, still.stderr
            for pipe in (self._process.stdout, self._process.stderr):
                if pipe is not None:
                    pipe.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=LINGER_S)
        return out or b"", err or b""


def run_child(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None) -> Finished:
    """Start and finish one child: OSError when it cannot start, ChildTimeout past `timeout`."""
    return Child(argv, env).finish(timeout)


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")
