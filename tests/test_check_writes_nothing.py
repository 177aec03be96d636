"""`check` changes nothing on the machine, byte for byte: not the target environment (no bytecode
in a site-packages made without it, as uv makes them), not $HOME, not the working folder, not
$TMPDIR, whatever `--deep` imports."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import RealPackages, Venv, run


def manifest(*folders: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder under these, with its size and mtime (ns); the folders' own too."""
    seen = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in [".", *dirs, *files]:
                path = os.path.join(root, name)
                info = os.lstat(path)
                seen[os.path.normpath(path)] = (f"{info.st_mode:o}:{info.st_size}", info.st_mtime_ns)
    return seen


@pytest.mark.parametrize("options", [[], ["--deep"], ["-v", "--format", "markdown"], ["--deep", "--format", "json"]])
def test_check_leaves_every_byte_where_it_was(
    options: list[str], venv: Venv, real: RealPackages, tmp_path: Path
) -> None:
    venv.pip("install", "--no-deps", "--no-index", "--no-compile", real.fa4_wheel)
    # a .pth that imports a module at every start, as setuptools' distutils-precedence.pth does
    (venv.site / "starts.py").write_text("STARTED = True\n")
    (venv.site / "starts.pth").write_text("import starts\n")
    home, work, scratch = (tmp_path / name for name in ("home", "work", "tmp"))
    for folder in (home, work, scratch):
        folder.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(scratch), "VIRTUAL_ENV": str(venv.root)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    before = manifest(venv.root, home, work, scratch)
    done = run(sys.executable, "-m", "attn_doctor", "check", *options, env=env, check=False, cwd=work)
    assert done.returncode in (0, 1), done.stderr
    assert "flash-attn-4" in done.stdout
    after = manifest(venv.root, home, work, scratch)
    assert after == before, sorted(set(after.items()) ^ set(before.items()))[:5]
    assert not list(venv.site.rglob("__pycache__"))
