"""Bad input gets one clear line or a finding, never a traceback, and changes nothing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import RealPackages, Venv, run


def doctor(*args: str | Path) -> tuple[int, str, str]:
    done = run(sys.executable, "-m", "attn_doctor", *args, check=False)
    return done.returncode, done.stdout, done.stderr


def tree(root: Path) -> list[tuple[str, int, float]]:
    """Every path under root with its size and mtime: what a read-only command must leave alone."""
    found = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            stat = path.lstat()
            found.append((str(path), stat.st_size, stat.st_mtime))
    return sorted(found)


def dist_info(venv: Venv) -> Path:
    return next(venv.site.glob("flash_attn-*.dist-info"))


def break_metadata_missing(venv: Venv) -> str:
    (dist_info(venv) / "METADATA").unlink()
    return "no METADATA file"


def break_record_missing(venv: Venv) -> str:
    (dist_info(venv) / "RECORD").unlink()
    return "no RECORD file"


def break_version(venv: Venv) -> str:
    metadata = dist_info(venv) / "METADATA"
    metadata.write_text(metadata.read_text().replace("Version: 2.8.3.post2", "Version: 2.8.3-really?!"))
    return "invalid version '2.8.3-really?!'"


def break_encoding(venv: Venv) -> str:
    metadata = dist_info(venv) / "METADATA"
    metadata.write_bytes(metadata.read_bytes().replace(b"Summary:", b"Summary: \xff\xfe caf\xe9"))
    return "METADATA is not valid UTF-8"


def break_metadata_is_a_folder(venv: Venv) -> str:
    metadata = dist_info(venv) / "METADATA"
    metadata.unlink()
    metadata.mkdir()
    return "METADATA unreadable"


def break_dangling_dist_info(venv: Venv) -> str:
    """An unreadable dist-info: a link to a folder that is gone (root reads through chmod 000)."""
    (venv.site / "sageattention-2.2.0.dist-info").symlink_to(venv.root / "gone")
    return "no METADATA file"


BREAKAGES = [
    break_metadata_missing,
    break_record_missing,
    break_version,
    break_encoding,
    break_metadata_is_a_folder,
    break_dangling_dist_info,
]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[b.__name__ for b in BREAKAGES])
def test_broken_dist_info_is_a_finding(venv: Venv, real: RealPackages, breakage: object) -> None:
    venv.install(real.fa2_wheel)
    expected = breakage(venv)  # type: ignore[operator]
    before = tree(venv.root)
    code, out, err = doctor("check", "--python", venv.python, "--format", "json")
    assert tree(venv.root) == before, "check changed the environment"
    assert "Traceback" not in err and err == ""
    assert code == 1
    broken = [f for f in json.loads(out)["findings"] if f["code"] == "package-metadata-broken"]
    assert len(broken) == 1 and expected in broken[0]["title"], broken
    assert "really" not in " ".join(broken[0]["fix"])  # an invalid version is never pinned


def test_missing_interpreter() -> None:
    code, out, err = doctor("check", "--python", "/nonexistent/bin/python")
    assert (code, out) == (3, "")
    assert err == "attn-doctor: target interpreter /nonexistent/bin/python does not exist\n"


def test_interpreter_not_on_path() -> None:
    code, _, err = doctor("check", "--python", "python-that-is-not-there")
    assert code == 3 and "is not on PATH" in err


def test_interpreter_is_a_folder(tmp_path: Path) -> None:
    code, _, err = doctor("check", "--python", tmp_path)
    assert code == 3 and "is not an executable file" in err


def test_interpreter_that_crashes(tmp_path: Path) -> None:
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\necho 'Fatal Python error: init_fs_encoding' >&2\nexit 1\n")
    crashing.chmod(0o755)
    code, out, err = doctor("check", "--python", crashing)
    assert (code, out) == (3, "")
    assert err.count("\n") == 1 and "probe crashed" in err and "init_fs_encoding" in err


def test_interpreter_that_talks_nonsense(tmp_path: Path) -> None:
    chatty = tmp_path / "python"
    chatty.write_text("#!/bin/sh\necho 'Hello from a wrapper'\n")
    chatty.chmod(0o755)
    code, _, err = doctor("check", "--python", chatty)
    assert code == 3 and "unreadable output" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "--format", "yaml"], "Invalid value for '--format'"),
        (["check", "--fail-on", "sometimes"], "Invalid value for '--fail-on'"),
        (["check", "--bogus"], "No such option: --bogus"),
        (["frobnicate"], "No such command"),
        (["explain", "no-such-code"], "no finding code 'no-such-code'"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    code, out, err = doctor(*args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err


def test_version_and_help() -> None:
    code, out, _ = doctor("--version")
    assert code == 0 and out.startswith("attn-doctor 0.")
    code, out, _ = doctor()
    assert code == 0 and "check" in out and "explain" in out
