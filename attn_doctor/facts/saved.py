"""Facts from a saved `check --format json` report (`check --facts FILE`)."""

from __future__ import annotations

import json
from pathlib import Path

from attn_doctor.facts.model import SCHEMA, Facts, FactsError, from_data

_FAMILY = SCHEMA.rsplit("-", 1)[0]  # "attn-doctor/report": any version of it is tried


def load_facts(path: Path) -> Facts:
    """Raises FactsError with one line that says what is wrong with the file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise FactsError(f"cannot read {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise FactsError(f"{path} is not UTF-8 text") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise FactsError(f"{path} is not JSON: {error.msg} at line {error.lineno}") from error
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(_FAMILY):
        raise FactsError(f'{path} is not an attn-doctor report (no "schema": "{SCHEMA}")')
    if data["schema"] != SCHEMA:
        raise FactsError(f"{path} has schema {data['schema']}; this attn-doctor reads {SCHEMA}")
    try:
        return from_data(Facts, data)
    except FactsError as error:
        raise FactsError(f"{path}: {error}") from error
