"""Standard output as the doctor's verdict needs it: whatever reads it (a pipe to `head`, an ASCII
terminal, COLUMNS=0) may cut or mangle the report, but never change the exit code."""

from __future__ import annotations

import io
import os
import sys
from typing import Any, TextIO, cast


def prepare_stdout() -> None:
    """Called once, before anything is printed."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        # PYTHONIOENCODING=ascii: a ✓ the terminal cannot show becomes '?', not an internal error
        sys.stdout.reconfigure(errors="replace")
    columns = os.environ.get("COLUMNS")
    if columns is not None and not (columns.isdigit() and int(columns) > 0):
        # rich takes COLUMNS=0 as a width of 0 and prints nothing; the terminal's own width is right
        del os.environ["COLUMNS"]
    if sys.stdout is not None and not isinstance(sys.stdout, _UntilTheReaderLeaves):
        sys.stdout = cast(TextIO, _UntilTheReaderLeaves(sys.stdout))


class _UntilTheReaderLeaves:
    """sys.stdout, but a reader that went away (`check | head -1`) ends the output, not the run:
    click would turn the EPIPE into exit 1, a healthy machine reported as failing. The rest of
    the report then goes to /dev/null, so the check still ends with its own exit code."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_left()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_left()

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, fileno... as the stream has them
        return getattr(self._stream, name)

    def _reader_left(self) -> None:
        # fd 1 itself now points at /dev/null: what is still buffered, and the interpreter's last
        # flush at exit, go there instead of failing again
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)
