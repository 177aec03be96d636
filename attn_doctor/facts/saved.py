"""Facts from a saved `check --format json` report (`check --facts FILE`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attn_doctor.facts.model import SCHEMA, Facts, FactsError, from_data
from attn_doctor.inputs import MIB, InputError, read_json

_FAMILY = SCHEMA.rsplit("-", 1)[0]  # "attn-doctor/report": any version of it is tried
# A report is tens of kilobytes (one with every file of every package modified, a few MiB).
MAX_REPORT_BYTES = 16 * MIB
MAX_LOCK_BYTES = 1 * MIB  # a lock names a few packages


def load_facts(path: Path) -> Facts:
    """Raises FactsError with one line that says what is wrong with the file."""
    try:
        data = read_json(path, "--facts", MAX_REPORT_BYTES)
    except InputError as error:
        raise FactsError(str(error)) from error
    return facts_of_report(data, str(path))


def facts_of_report(data: Any, what: str) -> Facts:
    """The facts of a report's JSON (`check --format json`), or FactsError naming `what`."""
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(_FAMILY):
        raise FactsError(f'{what} is not an attn-doctor report (no "schema": "{SCHEMA}")')
    if data["schema"] != SCHEMA:
        raise FactsError(f"{what} has schema {data['schema']}; this attn-doctor reads {SCHEMA}")
    try:
        return from_data(Facts, data)
    except FactsError as error:
        raise FactsError(f"{what}: {error}") from error


# what `attn-doctor lock` writes (rules/drift.py) and `check --against` reads here
LOCK_SCHEMA = "attn-doctor/lock-1"


def load_lock(path: Path) -> dict[str, Any]:
    """A lock file from `attn-doctor lock`, checked field by field; FactsError says what is wrong."""
    try:
        data = read_json(path, "lock file", MAX_LOCK_BYTES)
    except InputError as error:
        raise FactsError(str(error)) from error
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("attn-doctor/lock-"):
        raise FactsError(f'{path} is not an attn-doctor lock file (no "schema": "{LOCK_SCHEMA}")')
    if data["schema"] != LOCK_SCHEMA:
        raise FactsError(
            f"lock file {path} has schema {data['schema']}: written by another attn-doctor; "
            f"this one reads {LOCK_SCHEMA}"
        )
    gpus = data.get("gpus")
    if not isinstance(gpus, list) or not all(isinstance(g, str) for g in gpus):
        raise FactsError(f'lock file {path}: "gpus" must be a list of strings')
    if "torch" not in data:  # `lock` writes null where there is none: a missing key is a damaged file
        raise FactsError(f'lock file {path}: no "torch" (null where the locked machine had none)')
    torch = data["torch"]
    if torch is not None and not (isinstance(torch, dict) and isinstance(torch.get("version"), str)):
        raise FactsError(f'lock file {path}: "torch" must be null or an object with a "version" string')
    packages = data.get("packages")
    if not isinstance(packages, dict) or not all(
        isinstance(v, dict)
        and set(v) == {"version", "record_sha256"}
        and all(x is None or isinstance(x, str) for x in v.values())
        for v in packages.values()
    ):
        raise FactsError(f'lock file {path}: "packages" must map names to {{"version", "record_sha256"}}')
    return data
