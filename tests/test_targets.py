"""Target interpreters other than the doctor's own: older Pythons, a Debian system Python."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import interpreter, run


def check_json(python: Path) -> tuple[int, dict[str, object], str]:
    done = run(sys.executable, "-m", "attn_doctor", "check", "--python", python, "--format", "json", check=False)
    return done.returncode, json.loads(done.stdout) if done.stdout else {}, done.stderr


def test_python_3_8_target() -> None:
    """The probe keeps to 3.8's syntax and library: the oldest Python it reads."""
    code, data, err = check_json(interpreter("/root/.pyenv/versions/3.8.*/bin/python3.8"))
    assert code == 0, err
    assert str(data["python"]["version"]).startswith("3.8.")  # type: ignore[index]


def test_python_3_7_target_is_refused_in_one_line() -> None:
    code, _, err = check_json(interpreter("/root/.pyenv/versions/3.7.*/bin/python3.7"))
    assert code == 3
    assert err.strip().endswith("Python 3.7 is older than 3.8, the oldest attn-doctor can read")
    assert err.count("\n") == 1


def test_debian_system_python_is_externally_managed() -> None:
    python = interpreter("/usr/bin/python3.1[0-9]")
    if not Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])").stdout.strip(),
        "EXTERNALLY-MANAGED",
    ).exists():
        pytest.skip(f"{python} carries no PEP 668 marker")
    code, data, _ = check_json(python)
    assert data["python"]["environment"] == "system"  # type: ignore[index]
    assert data["python"]["externally_managed"] is True  # type: ignore[index]
    codes = {f["code"] for f in data["findings"]}  # type: ignore[attr-defined]
    assert "python-externally-managed" in codes and code == 0  # info only: not a failure


def test_default_target_is_the_active_venv(tmp_path: Path) -> None:
    venv = tmp_path / "env"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    env = {"VIRTUAL_ENV": str(venv), "PATH": "/usr/bin:/bin"}
    done = run(sys.executable, "-m", "attn_doctor", "check", "--format", "json", env=env, check=False)
    assert json.loads(done.stdout)["python"]["executable"] == str(venv / "bin" / "python")


def test_a_venv_made_by_uv_says_so(tmp_path: Path) -> None:
    """uv marks the venvs it makes with a `uv = VERSION` line in pyvenv.cfg; the probe reads it.
    Made by uv where uv is installed, else by venv with the line uv would have written."""
    made = tmp_path / "made-by-uv"
    uv = shutil.which("uv")
    if uv:
        run(uv, "venv", "-q", made, "--python", sys.executable)
    else:
        run(sys.executable, "-m", "venv", "--without-pip", made)
        with (made / "pyvenv.cfg").open("a") as config:
            config.write("uv = 0.13.9\n")
    _, data, _ = check_json(made / "bin" / "python")
    assert data["python"]["uv_managed"] is True  # type: ignore[index]
    run(sys.executable, "-m", "venv", "--without-pip", tmp_path / "made-by-venv")
    _, data, _ = check_json(tmp_path / "made-by-venv" / "bin" / "python")
    assert data["python"]["uv_managed"] is False  # type: ignore[index]
