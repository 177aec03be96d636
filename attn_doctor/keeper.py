"""Nothing the doctor starts outlives it.

Its children (the probe, `--deep` imports, verify's and bench's kernels) each run in a process
group of their own, so that a deadline kills what they started too. A group of its own is also
out of reach of what ends the doctor: a SIGKILL, or a closed terminal's SIGHUP, would leave a child
hung in `import flash_attn.cute` running on. So the first child starts a keeper, one small process
of its own session that holds the other end of a pipe: the doctor tells it each group it starts
and each one it has finished with, and when the pipe closes (the doctor has exited, however), the
keeper kills every group it was not told is finished. On a normal exit there is none.

A group is released after its leader is reaped. Its id could then in principle be reused by an
unrelated process before the release line is written; Linux hands out process ids in order up to
pid_max (4 million), so that takes the whole space wrapping within microseconds: it does not happen.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import IO

_KEEPER = """
import os, signal, sys
groups = set()
for line in sys.stdin:
    (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""

_lock = threading.Lock()
_pipe: IO[str] | None = None
_broken = False  # the keeper could not be started (or died): children run unkept, as before


def _tell(line: str) -> None:
    global _pipe, _broken
    with _lock:
        if _broken:
            return
        try:
            if _pipe is None:
                keeper = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _KEEPER],
                    stdin=subprocess.PIPE,
                    text=True,
                    start_new_session=True,  # what ends the doctor's group spares it
                )
                _pipe = keeper.stdin
            assert _pipe is not None
            _pipe.write(line + "\n")
            _pipe.flush()
        except OSError:
            _broken = True


def keep(group: int) -> None:
    """Kill this process group should the doctor exit before `release(group)`."""
    _tell(f"+{group}")


def release(group: int) -> None:
    """The group is finished with: its leader has been reaped, the rest killed or left to end."""
    _tell(f"-{group}")
