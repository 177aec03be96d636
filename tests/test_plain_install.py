"""The README's commands from a plain `pip install .` venv (no test extras): what a command
imports at run time must be a runtime dependency (seen: `check --config` needed PyYAML, which
only the test extras had)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, run

ROOT = Path(__file__).resolve().parent.parent
H100 = str(FIXTURES / "h100-check.json")
CONFIG = "base_model: m\nattn_implementation: flash_attention_2\nsample_packing: true\n"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("plain") / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", str(ROOT))
    return venv / "bin" / "attn-doctor"


@pytest.mark.parametrize(
    ("args", "codes"),
    [
        (["--help"], {0}),
        (["check", "--facts", str(FIXTURES / "h100-check.json"), "--config", "CONFIG"], {0, 1}),
        (["check", "--facts", str(FIXTURES / "h100-check.json"), "--format", "junit", "--require", "fa4"], {1}),
        (["check", "--facts", str(FIXTURES / "h100-check.json"), "--format", "markdown"], {0, 1}),
        (["explain", "fa4"], {0}),
        (["explain", "--markdown"], {0}),
        (["install", "fa4", "--facts", str(FIXTURES / "h100-check.json"), "--dry-run"], {0}),
        (["explain", "sage"], {0}),  # a bad release told by a file
        (["install", "fa3", "--facts", H100, "--dry-run", "--head-dim", "64", "--head-dim", "128"], {0}),
        # a wheel kept from an earlier build: read with packaging's wheel-name parser
        (["install", "fa2", "--facts", H100, "--dry-run", "--find-links", "WHEELS", "--offline"], {0}),
        (["check", "--no-gpu-ok"], {0, 1}),
        # its imports (the wheel proof, the HTTP reader): this venv has no torch, so it refuses in one line
        (["build", "fa2", "--wheelhouse", "WHEELS", "--dry-run"], {2}),
        (["install", "fa3", "--facts", H100, "--dry-run", "--mirror", "pytorch=https://mirror.example/whl"], {0}),
        (["fleet", "--ray"], {2}),  # Ray is an optional extra: one line saying how to install it
    ],
)
def test_readme_commands_run_without_the_test_extras(
    plain: Path, tmp_path: Path, args: list[str], codes: set[int]
) -> None:
    config = tmp_path / "axolotl.yml"
    config.write_text(CONFIG)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "flash_attn-2.8.3.post2-cp312-cp312-linux_x86_64.whl").write_bytes(b"")  # only its name is read
    given = {"CONFIG": str(config), "WHEELS": str(wheels)}
    done = run(plain, *[given.get(a, a) for a in args], check=False, cwd=tmp_path)
    assert done.returncode in codes, done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr


def test_a_tool_install_judges_the_project_venv_or_says_it_judges_its_own(plain: Path, tmp_path: Path) -> None:
    """Installed in a venv of its own (as pipx or `uv tool` install it), with no environment active:
    a `.venv` in the working folder or a parent is the target, as uv finds it; with none, the report
    says that the doctor's own Python is judged and how to judge another. A conda base env is no
    project's."""
    import json
    import os

    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    run(sys.executable, "-m", "venv", "--without-pip", project / ".venv")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV")}

    def report(cwd: Path, **more: str) -> dict[str, object]:
        done = run(plain, "check", "--format", "json", check=False, cwd=cwd, env={**env, **more})
        assert done.returncode in (0, 1), done.stderr
        return dict(json.loads(done.stdout))

    found = report(project / "src")  # from a folder below the project
    assert found["python"]["executable"] == str(project / ".venv" / "bin" / "python")  # type: ignore[index]
    assert found["target_found_by"] == str(project / ".venv")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    own = report(elsewhere)
    assert own["target_found_by"] == "this Python"
    assert own["python"]["executable"] == str(plain.parent / "python")  # type: ignore[index]
    text = run(plain, "check", check=False, cwd=elsewhere, env=env).stdout
    assert "judged: the Python attn-doctor runs in" in text and "--python PATH" in text

    base = report(elsewhere, CONDA_PREFIX=str(project / ".venv"), CONDA_DEFAULT_ENV="base")
    assert base["target_found_by"] == "this Python"  # conda's base env is passed over
    folder = run(plain, "check", "--python", str(project / ".venv"), "--format", "json", check=False, cwd=elsewhere)
    assert json.loads(folder.stdout)["python"]["executable"] == str(project / ".venv" / "bin" / "python")
