"""Text from outside the doctor, made safe to show: a package's METADATA, a RECORD path, a GPU or
host name in a saved report, a user's argument. Control characters (terminal escape sequences,
NUL, a newline that would start a line of its own under a finding) and the Unicode controls that
reorder or break lines are shown escaped (`\\x1b`, `\\n`, `\\u202e`), so every line the doctor prints
is the line it meant, in every format. JSON needs none of this: its encoder escapes them itself.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from attn_doctor.registry.backends import Backend

T = TypeVar("T")

# C0 and C1 controls (tab included: it is no part of a name or a version), DEL, the line and
# paragraph separators, and the bidirectional embeddings, overrides and isolates
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# multi-line by design, and the doctor's own: an Axolotl config block
_KEEP_LINES = {("Recommendation", "config")}


def printable(text: str) -> str:
    return _UNSAFE.sub(_escaped, text) if _UNSAFE.search(text) else text


def _escaped(found: re.Match[str]) -> str:
    char = found.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def cleaned(value: T) -> T:
    """The same result with every string in it printable; the object itself where none changes.
    The registry's backends are the doctor's own data, left as they are."""
    return _clean(value, None)  # type: ignore[no-any-return]


def _clean(value: Any, keep: tuple[str, str] | None) -> Any:
    if isinstance(value, str):
        return value if keep in _KEEP_LINES else printable(value)
    if isinstance(value, Backend) or value is None or isinstance(value, int | float | bool):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        owner = type(value).__name__
        changes = {
            f.name: new
            for f in dataclasses.fields(value)
            if f.init and (new := _clean(old := getattr(value, f.name), (owner, f.name))) is not old
        }
        return dataclasses.replace(value, **changes) if changes else value
    if isinstance(value, tuple | list):
        items = [_clean(v, None) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else type(value)(items)
    if isinstance(value, Mapping):
        pairs = {_clean(k, None): _clean(v, None) for k, v in value.items()}
        if all(k in value and value[k] is v for k, v in pairs.items()):
            return value
        return MappingProxyType(pairs) if isinstance(value, MappingProxyType) else dict(pairs)
    return value
