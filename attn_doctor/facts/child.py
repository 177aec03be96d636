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
import threading
import time
from collections import deque

from attn_doctor import keeper

TYPE_CHECKING = False  # typing itself is not imported: the head start starts the probe before it
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import IO

POLL_S = 0.2  # how often a waiting read looks whether the child has exited
# Once the child has exited, how long what it left behind may keep its pipes open (a wrapper's
# background job) before that is killed and the output read so far is the answer.
LINGER_S = 1.0
MAX_OUTPUT_BYTES = 32 << 20  # what is kept of each of a child's pipes: the last part, where its answer is


class ChildTimeout(Exception):
    """The child did not finish in time; it and its process group were killed."""


class Finished:
    """A child's exit status and what it wrote."""

    __slots__ = ("returncode", "stderr", "stdout")

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class _Tail:
    """One of the child's pipes read to its end by a thread of its own, keeping only the last
    MAX_OUTPUT_BYTES: what a child writes is bounded in the doctor's memory whatever it writes (a
    .pth file printing 256 MiB), and the answer, which comes last, is kept."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe = pipe
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := self._pipe.read1(1 << 16):  # type: ignore[attr-defined]
                self._chunks.append(chunk)
                self._size += len(chunk)
                while self._size > MAX_OUTPUT_BYTES and len(self._chunks) > 1:
                    self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        return _text(b"".join(list(self._chunks))[-MAX_OUTPUT_BYTES:])


class Child:
    """Started at once (OSError when it cannot be); `finish` collects it."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None, fed: bool = False) -> None:
        """`fed`: its standard input is a pipe that `feed` writes once; else it reads nothing."""
        self._process = subprocess.Popen(
            list(argv),
            env=None if env is None else dict(env),
            stdin=subprocess.PIPE if fed else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: killpg reaches what it starts
        )
        keeper.keep(self._process.pid)  # and dies with the doctor, whatever ends it
        assert self._process.stdout is not None and self._process.stderr is not None
        self._out, self._err = _Tail(self._process.stdout), _Tail(self._process.stderr)

    def feed(self, data: bytes) -> None:
        """Write `data` to its standard input and close it; a child that has gone already (its
        output will say why) is not an error here."""
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.write(data)
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()

    def finish(self, timeout: float) -> Finished:
        """Its exit status and output; ChildTimeout when it is still running after `timeout` s."""
        deadline = time.monotonic() + timeout
        exited_at: float | None = None
        while True:
            # Its pipes close when it exits: waiting on the threads that read them wakes at that
            # moment, where Popen.wait(timeout) polls with sleeps that grow to 50 ms (as long again
            # as `check` waits for its probe).
            for tail in (self._out, self._err):
                tail.thread.join(timeout=max(0.0, min(POLL_S, deadline - time.monotonic())))
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=POLL_S)
            now = time.monotonic()
            if self._process.poll() is not None:
                exited_at = now if exited_at is None else exited_at
                read = not self._out.thread.is_alive() and not self._err.thread.is_alive()
                if read or now - exited_at >= LINGER_S:
                    if not read:
                        self._stop()
                    keeper.release(self._process.pid)
                    return Finished(self._process.returncode, self._out.text(), self._err.text())
            elif now >= deadline:
                self._stop()
                keeper.release(self._process.pid)
                raise ChildTimeout(f"no answer in {timeout:.0f} s")

    def _stop(self) -> None:
        """Kill the process group; what it wrote is read until the pipes close or LINGER_S passes.
        A process that left the group with setsid may hold them for ever: its reading threads are
        left to it (daemons, blocked in a read that no close would wake), the answer is what came."""
        with contextlib.suppress(ProcessLookupError, PermissionError):  # all gone, or a setuid one
            os.killpg(self._process.pid, signal.SIGKILL)
        for tail in (self._out, self._err):
            tail.thread.join(timeout=LINGER_S)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=LINGER_S)


def run_child(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None) -> Finished:
    """Start and finish one child: OSError when it cannot start, ChildTimeout past `timeout`."""
    return Child(argv, env).finish(timeout)


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")
