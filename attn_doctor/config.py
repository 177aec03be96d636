"""The gate's settings from `[tool.attn-doctor]` in pyproject.toml and ATTN_DOCTOR_* variables.

The command line wins over the environment, which wins over pyproject.toml:

    [tool.attn-doctor]               ATTN_DOCTOR_FAIL_ON=warning
    fail-on = "warning"              ATTN_DOCTOR_IGNORE="mig-enabled build-tool-missing"
    ignore = ["mig-enabled"]         ATTN_DOCTOR_REQUIRE="fa4; fa2>=2.7"
    require = ["fa4", "fa2>=2.7"]    ATTN_DOCTOR_NO_GPU_OK=1
    no-gpu-ok = false

An empty variable never makes the gate more lenient than pyproject.toml: CI systems pass an
undefined setting as "". An ATTN_DOCTOR_REQUIRE that names nothing counts as unset (the
pyproject's requirements stay); an empty ATTN_DOCTOR_IGNORE ignores nothing, an empty
ATTN_DOCTOR_NO_GPU_OK is 0, and an empty ATTN_DOCTOR_FAIL_ON is an error.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attn_doctor.inputs import MIB, InputError, read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

KEYS = {"fail-on", "ignore", "require", "no-gpu-ok"}
FAIL_ON = ("error", "warning", "info", "never")
MAX_PYPROJECT_BYTES = 1 * MIB  # the largest pyprojects are tens of kilobytes
# a gate names a few backends and codes: more is no gate (120,000 `require` entries took 38 s and
# printed 120,040 lines), said in one line instead
MAX_ENTRIES = 256


class ConfigError(ValueError):
    """A setting that cannot be used (exit 2)."""


@dataclass(frozen=True)
class GateConfig:
    fail_on: str | None = None
    ignore: tuple[str, ...] = ()
    require: tuple[str, ...] = ()
    no_gpu_ok: bool | None = None


def load(folder: Path, environ: Mapping[str, str] = os.environ) -> GateConfig:
    from_file = _pyproject(folder / "pyproject.toml")
    return GateConfig(
        fail_on=_fail_on(environ.get("ATTN_DOCTOR_FAIL_ON"), "ATTN_DOCTOR_FAIL_ON") or from_file.fail_on,
        ignore=_bounded(tuple(environ["ATTN_DOCTOR_IGNORE"].replace(",", " ").split()), "ATTN_DOCTOR_IGNORE")
        if "ATTN_DOCTOR_IGNORE" in environ
        else from_file.ignore,
        require=_bounded(_requirements(environ.get("ATTN_DOCTOR_REQUIRE", "")), "ATTN_DOCTOR_REQUIRE")
        or from_file.require,
        no_gpu_ok=_flag(environ["ATTN_DOCTOR_NO_GPU_OK"])
        if "ATTN_DOCTOR_NO_GPU_OK" in environ
        else from_file.no_gpu_ok,
    )


def _requirements(variable: str) -> tuple[str, ...]:
    """ATTN_DOCTOR_REQUIRE's requirements. Specs carry commas ("fa2>=2.7,<3"): they are parted by
    ';' or whitespace. None at all (unset, "", " ; ") leaves the pyproject's in force."""
    return tuple(r for r in re.split(r"[;\s]+", variable) if r)


def _pyproject(path: Path) -> GateConfig:
    if not path.exists():  # a dangling link counts as no file, as it did with open()
        return GateConfig()
    try:
        text = read_text(path, "", MAX_PYPROJECT_BYTES)
    except InputError as error:
        raise ConfigError(str(error)) from error
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from error
    except RecursionError as error:  # arrays nested thousands deep: the parser's stack, not ours
        raise ConfigError(f"{path} is nested too deeply to read") from error
    tool = document.get("tool", {})
    if not isinstance(tool, dict):  # `tool = 5`: valid TOML, but no table to look in
        raise ConfigError(f"{path}: [tool] must be a table")
    table: Any = tool.get("attn-doctor", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.attn-doctor] must be a table")
    unknown = set(table) - KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [tool.attn-doctor]: {', '.join(sorted(unknown))}")
    return GateConfig(
        fail_on=_fail_on(table.get("fail-on"), f"{path}: fail-on"),
        ignore=_strings(table.get("ignore", []), f"{path}: ignore"),
        require=_strings(table.get("require", []), f"{path}: require"),
        no_gpu_ok=_boolean(table.get("no-gpu-ok"), f"{path}: no-gpu-ok"),
    )


def _fail_on(value: object, where: str) -> str | None:
    if value is None:
        return None
    if value not in FAIL_ON:
        raise ConfigError(f"{where} must be one of {', '.join(FAIL_ON)}, not {value!r}")
    return str(value)


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return _bounded(tuple(value), where)


def _bounded(entries: tuple[str, ...], where: str) -> tuple[str, ...]:
    if len(entries) > MAX_ENTRIES:
        raise ConfigError(f"{where} lists {len(entries)} entries: at most {MAX_ENTRIES}")
    return entries


def _boolean(value: object, where: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false")
    return value


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no", ""):
        return False
    raise ConfigError(f"ATTN_DOCTOR_NO_GPU_OK must be 1 or 0, not {value!r}")
