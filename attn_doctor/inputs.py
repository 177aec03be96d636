"""Reading a file the doctor does not control (`--facts`, `--config`, `pyproject.toml`, a CUDA
toolkit's version file): a regular file only, up to a size, as UTF-8 text or bounded JSON.

A FIFO blocks open() and read() forever and /dev/zero never ends, so the path is judged by
stat() before it is opened (opening a device can itself do something), opened without blocking,
judged again by fstat() on the descriptor that is read, and read no further than one byte past
the limit: a /proc file says size 0 and a file may grow while it is read.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

MIB = 1 << 20
MAX_JSON_DEPTH = 64  # the doctor's own files nest 5 deep, a Hugging Face config.json about as much
MAX_NUMBER_DIGITS = 64  # no count, size or version in these files is longer; int() of more is slow

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
# A string (closed or not: an unclosed one runs to the end, so no text is scanned twice) or a bracket.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


class InputError(ValueError):
    """A file that cannot be used as input; the message is one line that says why (exit 2)."""


def read_text(path: Path, what: str, limit: int) -> str:
    """The file's text; InputError for anything but a regular UTF-8 file of at most `limit` bytes.
    `what` names it for the user ("--facts"); empty where the path says it alone."""
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{_name(what, path)} is not UTF-8 text") from error


def read_bytes(path: Path, what: str, limit: int) -> bytes:
    try:
        _require_regular(os.stat(path).st_mode, what, path)
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise InputError(f"cannot read {_name(what, path)}: {error.strerror}") from error
    with open(descriptor, "rb") as handle:
        # swapped for a FIFO between stat() and open(): what is read is what fstat() describes
        _require_regular(os.fstat(descriptor).st_mode, what, path)
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise InputError(f"cannot read {_name(what, path)}: {error.strerror}") from error
    if len(data) > limit:
        raise InputError(f"{_name(what, path)} is over {_size(limit)}")
    return data


def read_json(path: Path, what: str, limit: int) -> Any:
    """The file as JSON, refused before json.loads when it nests deeper than MAX_JSON_DEPTH (the
    parser recurses once per level) and while parsing at a number it would be slow to convert."""
    return parse_json(read_text(path, what, limit), _name(what, path))


def parse_json(text: str, name: str) -> Any:
    """JSON text from anywhere (a file, another node's output), checked as read_json checks a
    file; InputError names it as `name`."""
    depth = nesting(text, MAX_JSON_DEPTH)
    if depth > MAX_JSON_DEPTH:
        raise InputError(f"{name} nests over {MAX_JSON_DEPTH} levels deep: refused")
    try:
        return json.loads(text, parse_int=_integer, parse_float=_real, parse_constant=_constant)
    except json.JSONDecodeError as error:
        raise InputError(f"{name} is not JSON text: {error.msg} at line {error.lineno}") from error
    except _NumberRefused as error:
        raise InputError(f"{name}: {error}") from error


def nesting(text: str, stop_above: int) -> int:
    """How deep JSON's brackets nest, strings left out; counting stops once past `stop_above`."""
    depth = deepest = 0
    for token in _TOKEN.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > stop_above:
                break
        elif bracket in ("]", "}"):
            depth -= 1
    return deepest


class _NumberRefused(ValueError):
    pass


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _NumberRefused(f"a number of {len(text)} digits: refused")
    return int(text)


def _real(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or len(text) > 4 * MAX_NUMBER_DIGITS:
        raise _NumberRefused(f"a number out of range ({text[:20]}): refused")
    return value


def _constant(text: str) -> float:
    # NaN and Infinity are not JSON; Python's json accepts them, and int(inf) raises far away
    raise _NumberRefused(f"{text} is not a JSON number")


def _require_regular(mode: int, what: str, path: Path) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a plain file")
        raise InputError(f"{_name(what, path)} is {kind}, not a regular file")


def _name(what: str, path: Path) -> str:
    return f"{what} {path}" if what else str(path)


def _size(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit % MIB == 0 else f"{limit} bytes"
