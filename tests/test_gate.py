"""`check` as a CI gate: every exit code through real environments, the settings' precedence,
lock files and drift, JUnit read back by a real parser, GitHub annotations, and the README's
Actions job run as it is written."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from junitparser import Failure, JUnitXml, Skipped

from attn_doctor.facts.given import given_gpu
from attn_doctor.facts.saved import load_facts
from attn_doctor.registry.backends import by_name
from attn_doctor.registry.findings import RULES
from attn_doctor.rules.drift import drift, lock_data
from tests.conftest import FIXTURES, REPO, RealPackages, Venv, pypi_wheel, run

H100 = FIXTURES / "h100-check.json"
H100_COLLIDING = FIXTURES / "h100-fa2-over-fa4.json"
GATE_ENV = (
    "ATTN_DOCTOR_FAIL_ON",
    "ATTN_DOCTOR_IGNORE",
    "ATTN_DOCTOR_REQUIRE",
    "ATTN_DOCTOR_NO_GPU_OK",
    "GITHUB_ACTIONS",
)


def doctor(*args: str | Path, cwd: Path | None = None, **env: str) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in GATE_ENV}
    done = run(sys.executable, "-m", "attn_doctor", *args, env={**clean, **env}, check=False, cwd=cwd)
    return done.returncode, done.stdout, done.stderr


def with_real_torch(venv: Venv, real: RealPackages) -> Venv:
    """The venv sees the real (CPU) torch of the build venv."""
    venv.see_packages_of(real.torch_python)
    return venv


def requirements(out: str) -> dict[str, Any]:
    return {r["require"]: r for r in json.loads(out)["requirements"]}


def test_required_backend_met(venv: Venv, real: RealPackages) -> None:
    with_real_torch(venv, real)
    code, out, err = doctor(
        "check", "--python", venv.python, "--require", "sdpa>=2.5", "--no-gpu-ok", "--format", "json"
    )
    assert code == 0, err
    assert requirements(out)["sdpa>=2.5"]["met"] is True
    assert "nvml-library-missing" in json.loads(out)["ignored"]  # forgiven on a machine without a GPU


def test_required_backend_missing(venv: Venv, real: RealPackages) -> None:
    with_real_torch(venv, real)
    code, out, _ = doctor("check", "--python", venv.python, "--require", "fa4", "--no-gpu-ok", "--format", "json")
    assert code == 1
    fa4 = requirements(out)["fa4"]
    assert fa4["reasons"] == ["flash-attn-4 is not installed"]
    assert fa4["fix"][0].startswith("attn-doctor install fa4") and "flash-attn-4==4.0.0b36" in fa4["fix"][0]


def test_required_version_and_import(venv: Venv, real: RealPackages) -> None:
    with_real_torch(venv, real)
    venv.install(real.fa2_wheel)
    code, out, _ = doctor("check", "--python", venv.python, "--require", "fa2>=2.9", "--no-gpu-ok", "--format", "json")
    reasons = requirements(out)["fa2>=2.9"]["reasons"]
    assert code == 1
    assert "flash-attn 2.8.3.post2 does not satisfy >=2.9" in reasons
    # the real import in a child process fails too: this FA2 has no CUDA extension
    assert any("import flash_attn: failed" in r and "flash_attn_2_cuda" in r for r in reasons)


def test_without_a_gpu_the_gate_fails_unless_told(venv: Venv, real: RealPackages) -> None:
    with_real_torch(venv, real)
    code, out, _ = doctor("check", "--python", venv.python, "--require", "sdpa", "--format", "json")
    assert code == 1 and "no GPU to run it on" in requirements(out)["sdpa"]["reasons"][0]


@pytest.mark.parametrize(
    ("gpu", "runs"),
    [
        ("T4", {"sdpa", "flex", "xformers"}),
        ("A100", {"sdpa", "flex", "fa2", "hub-fa2", "fa3", "hub-fa3", "fa4", "sage", "xformers"}),
        ("RTX 4090", {"sdpa", "flex", "fa2", "hub-fa2", "fa3", "hub-fa3", "fa4", "sage", "xformers"}),
        ("H100", {"sdpa", "flex", "fa2", "hub-fa2", "fa3", "hub-fa3", "fa4", "sage", "xformers"}),
        ("B200", {"sdpa", "flex", "fa2", "hub-fa2", "fa4", "xformers"}),
        ("RTX 5090", {"sdpa", "flex", "fa2", "hub-fa2", "fa4", "sage", "xformers"}),
        ("MI300X", {"sdpa", "flex", "fa2"}),
        ("sm_70", {"sdpa", "flex"}),
    ],
)
def test_which_backends_run_on_which_gpu(gpu: str, runs: set[str]) -> None:
    assert {name for name, backend in by_name().items() if backend.runs_on(given_gpu(gpu))} == runs


def test_gpu_support_is_judged_for_the_given_gpu() -> None:
    code, out, _ = doctor("check", "--facts", H100, "--gpu", "T4", "--require", "fa4", "--format", "json")
    assert code == 1
    assert "FlashAttention 4 does not run on GPU 0 (T4 (given), sm_75)" in requirements(out)["fa4"]["reasons"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--require", "fa9"], "no backend 'fa9'"),
        (["--require", "fa2>>2"], "--require 'fa2>>2'"),
        (["--ignore", "not-a-code"], "no finding code not-a-code"),
        (["--gpu", "a toaster"], "--gpu 'a toaster'"),
    ],
)
def test_bad_gate_arguments_exit_2(args: list[str], message: str) -> None:
    code, out, err = doctor("check", "--facts", H100, *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err


def test_ignore_by_code() -> None:
    assert doctor("check", "--facts", H100_COLLIDING)[0] == 1
    code, out, _ = doctor(
        "check",
        "--facts",
        H100_COLLIDING,
        "--ignore",
        "fa4-files-overwritten",
        "--ignore",
        "fa2-extension-missing",
        "--format",
        "json",
    )
    assert code == 0 and json.loads(out)["ignored"] == ["fa2-extension-missing", "fa4-files-overwritten"]


def test_settings_precedence(tmp_path: Path) -> None:
    """pyproject.toml < ATTN_DOCTOR_* < the command line."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.attn-doctor]\nfail-on = "warning"\nignore = ["fa4-files-overwritten", "fa2-extension-missing"]\n'
    )
    # only the warning fa2-uninstall-breaks-fa4 is left: pyproject's fail-on=warning fails on it
    assert doctor("check", "--facts", H100_COLLIDING, cwd=tmp_path)[0] == 1
    assert doctor("check", "--facts", H100_COLLIDING, cwd=tmp_path, ATTN_DOCTOR_FAIL_ON="never")[0] == 0
    assert (
        doctor("check", "--facts", H100_COLLIDING, "--fail-on", "warning", cwd=tmp_path, ATTN_DOCTOR_FAIL_ON="never")[0]
        == 1
    )
    # the environment's ignore list replaces pyproject's: the errors count again
    assert doctor("check", "--facts", H100_COLLIDING, cwd=tmp_path, ATTN_DOCTOR_IGNORE="")[0] == 1
    code, out, _ = doctor(
        "check",
        "--facts",
        H100,
        "--format",
        "json",
        cwd=tmp_path,
        ATTN_DOCTOR_REQUIRE="sage; fa2>=2.7,<3",
        ATTN_DOCTOR_NO_GPU_OK="1",
    )
    assert set(requirements(out)) == {"sage", "fa2>=2.7,<3"} and code == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[tool.attn-doctor\n", "is not valid TOML"),
        ('[tool.attn-doctor]\nfail-on = "sometimes"\n', "fail-on must be one of"),
        ("[tool.attn-doctor]\nignore = 'mig-enabled'\n", "ignore must be a list of strings"),
        ("[tool.attn-doctor]\nfail_on = 'error'\n", "unknown key(s) in [tool.attn-doctor]: fail_on"),
    ],
)
def test_bad_pyproject_exits_2(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "pyproject.toml").write_text(content)
    code, _, err = doctor("check", "--facts", H100, cwd=tmp_path)
    assert code == 2 and message in err and err.count("\n") == 1


def test_lock_then_drift(venv: Venv, real: RealPackages, tmp_path: Path) -> None:
    venv.install(real.fa4_wheel)
    code, out, _ = doctor("lock", "--python", venv.python)
    lock = tmp_path / "attn-doctor.lock.json"
    lock.write_text(out)
    assert code == 0 and json.loads(out)["packages"]["flash-attn-4"]["version"] == "4.0.0b36"
    # FA4 alone, without its requirements, is broken (package-requirements-unmet): drift is what this is about
    unmet = ("--ignore", "package-requirements-unmet")
    assert doctor("check", "--python", venv.python, "--against", lock, "--no-gpu-ok", *unmet)[0] == 0

    venv.pip("install", "--no-deps", "--no-index", pypi_wheel("flash-attn-4==4.0.0b35"))
    venv.install(real.fa2_wheel)
    code, out, _ = doctor(
        "check", "--python", venv.python, "--against", lock, "--no-gpu-ok", "--format", "json", *unmet
    )
    drifts = sorted(f["title"] for f in json.loads(out)["findings"] if f["code"] == "drift-package")
    assert code == 1
    assert drifts == ["flash-attn 2.8.3.post2 was added", "flash-attn-4 changed: 4.0.0b36 (locked) -> 4.0.0b35"]


def test_drift_of_torch_gpu_and_a_reinstall() -> None:
    facts = load_facts(H100_COLLIDING)
    lock = lock_data(facts)
    assert drift(facts, lock) == []
    assert facts.torch is not None
    newer = dataclasses.replace(facts, torch=dataclasses.replace(facts.torch, version="2.12.0+cu130"))
    [torch] = drift(newer, lock)
    assert torch.title == "torch changed: 2.11.0+cu130 (CUDA 13.0) (locked) -> 2.12.0+cu130 (CUDA 13.0)"
    t4 = dataclasses.replace(facts, gpus=(given_gpu("T4"),))
    assert [f.title for f in drift(t4, lock)] == ["GPUs changed: Hopper 9.0 (locked) -> Turing 7.5"]
    fa2 = next(p for p in facts.packages if p.name == "flash-attn")
    rebuilt = dataclasses.replace(fa2, record_sha256="0" * 64)
    reinstalled = dataclasses.replace(facts, packages=tuple(rebuilt if p is fa2 else p for p in facts.packages))
    assert [f.title for f in drift(reinstalled, lock)] == [
        "flash-attn 2.8.3.post2 was reinstalled: its files are not the locked ones"
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON text"),
        ('{"schema": "attn-doctor/lock-2", "gpus": [], "torch": null, "packages": {}}', "written by another"),
        ('{"schema": "attn-doctor/report-1"}', "is not an attn-doctor lock file"),
        ('{"schema": "attn-doctor/lock-1", "gpus": "Hopper", "torch": null, "packages": {}}', '"gpus" must be'),
        ('{"schema": "attn-doctor/lock-1", "gpus": [], "torch": {"version": 2}, "packages": {}}', '"torch" must be'),
        ('{"schema": "attn-doctor/lock-1", "gpus": [], "packages": {}}', 'no "torch"'),  # was an internal error
        (
            '{"schema": "attn-doctor/lock-1", "gpus": [], "torch": null, "packages": {"fa": {"version": "1"}}}',
            '"packages" must map',
        ),
    ],
)
def test_bad_lock_files_exit_2(tmp_path: Path, content: str, message: str) -> None:
    lock = tmp_path / "lock.json"
    lock.write_text(content)
    code, out, err = doctor("check", "--facts", H100, "--against", lock)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_junit_read_back_by_a_real_parser(tmp_path: Path) -> None:
    code, out, _ = doctor(
        "check",
        "--facts",
        H100_COLLIDING,
        "--require",
        "fa4",
        "--require",
        "sdpa",
        "--ignore",
        "fa2-extension-missing",
        "--format",
        "junit",
    )
    report = tmp_path / "junit.xml"
    report.write_text(out)
    [suite] = list(JUnitXml.fromfile(str(report)))
    cases = {case.name: case for case in suite}
    assert code == 1 and suite.tests == len(RULES) + 2 == len(cases)
    assert isinstance(cases["fa4-files-overwritten"].result[0], Failure)
    assert cases["fa4-files-overwritten"].result[0].message.startswith("20 of flash-attn-4's files")
    assert isinstance(cases["fa2-extension-missing"].result[0], Skipped)
    assert cases["sdpa"].is_passed and not cases["fa4"].is_passed  # no flex of FA4's import recorded there
    assert cases["fa2-uninstall-breaks-fa4"].is_passed  # a warning, below --fail-on error
    assert suite.failures == sum(1 for c in cases.values() if c.result and isinstance(c.result[0], Failure))


def test_github_annotations_and_output_file(tmp_path: Path) -> None:
    saved = tmp_path / "report.json"
    code, out, err = doctor("check", "--facts", H100_COLLIDING, "--output", saved, GITHUB_ACTIONS="true")
    assert code == 1
    assert "::error title=attn-doctor fa4-files-overwritten::20 of flash-attn-4's files" in err
    assert "::warning title=attn-doctor fa2-uninstall-breaks-fa4::" in err
    assert "%0Aattn-doctor fix-shadow --python /tmp/collide/bin/python" in err  # newlines escaped
    assert "Findings" in out and "::" not in out  # the human report, untouched, on stdout
    assert json.loads(saved.read_text())["summary"]["exit_code"] == 1
    assert "::error" not in doctor("check", "--facts", H100_COLLIDING)[2]  # only on GitHub


def test_unwritable_output_exits_2(tmp_path: Path) -> None:
    code, _, err = doctor("check", "--facts", H100, "--output", tmp_path / "missing-folder" / "r.json")
    assert code == 2 and "cannot write --output" in err


def test_an_internal_error_exits_3(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A bug in the doctor must never pass a gate: one line, exit 3."""
    import attn_doctor.report
    from attn_doctor import cli

    def broken(*_: object) -> None:
        raise RuntimeError("judge fell over")

    monkeypatch.setattr(attn_doctor.report, "judge", broken)
    monkeypatch.setattr(sys, "argv", ["attn-doctor", "check", "--facts", str(H100)])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 3
    assert capsys.readouterr().err == "attn-doctor: internal error, please report it: RuntimeError: judge fell over\n"


def readme_job() -> dict[str, Any]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"### GitHub Actions\n.*?```yaml\n(.*?)```", text, re.DOTALL)
    assert block is not None, "README has no GitHub Actions job"
    return dict(yaml.safe_load(block.group(1)))


def test_the_readme_actions_job(tmp_path: Path, real: RealPackages) -> None:
    """The gate step of the README's job, run as written, in a checkout whose .venv has a CPU
    torch: judged for the H100s, it must fail for the right reason and leave its reports."""
    steps = readme_job()["jobs"]["attn-doctor"]["steps"]
    [gate] = [s for s in steps if "attn-doctor check" in s.get("run", "")]
    venv = with_real_torch(Venv(tmp_path / ".venv"), real)
    assert venv.python.exists()
    clean = {k: v for k, v in os.environ.items() if k not in GATE_ENV}
    done = run(
        "bash",
        "-e",
        "-c",
        gate["run"],
        env={**clean, **gate.get("env", {}), "GITHUB_ACTIONS": "true"},
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    [suite] = list(JUnitXml.fromfile(str(tmp_path / "attn-doctor-junit.xml")))
    failed = {case.name for case in suite if case.result and isinstance(case.result[0], Failure)}
    assert failed == {"torch-cpu-only"}  # a CPU torch cannot serve an H100
    report = json.loads((tmp_path / "attn-doctor.json").read_text())
    assert report["requirements"] == [{"require": "sdpa>=2.5", "met": True, "reasons": [], "fix": []}]
    assert report["python"]["executable"] == str(venv.python)


def test_a_check_that_crashes_is_a_finding_and_the_rest_of_the_report_stands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One concern's bug ends nothing: it is reported as check-crashed (an error), and every other
    check's findings and the recommendation are all still there."""
    from attn_doctor import cli
    from attn_doctor.rules import diagnose
    from attn_doctor.rules.checks import torch

    def report() -> tuple[int, dict[str, Any]]:
        argv = ["attn-doctor", "check", "--facts", str(H100_COLLIDING), "--format", "json", "--fail-on", "never"]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as stopped:
            cli.main()
        return int(str(stopped.value.code)), json.loads(capsys.readouterr().out)

    _, whole = report()

    def crashing(facts: object) -> list[object]:
        raise KeyError("torch.version")

    checks = tuple(crashing if c is torch.torch_findings else c for c in diagnose.CHECKS)
    assert checks != diagnose.CHECKS
    monkeypatch.setattr(diagnose, "CHECKS", checks)
    code, crashed = report()
    (said,) = [f for f in crashed["findings"] if f["code"] == "check-crashed"]
    assert said["severity"] == "error" and "test_gate.crashing" in said["title"] and "KeyError" in said["title"]
    others = [f for f in crashed["findings"] if f["code"] != "check-crashed"]
    assert len(others) == 3 and others == whole["findings"]  # the collisions, each as before
    assert crashed["recommendation"] == whole["recommendation"] and code == 0  # --fail-on never: the report


def test_a_required_backend_that_is_not_installed_is_only_that(venv: Venv) -> None:
    """`--require fa2` where flash-attn is not installed: "not installed" with its install line, no
    import error on top of it (nothing was there to import)."""
    done = run(
        sys.executable, "-m", "attn_doctor", "check", "--python", venv.python, "--require", "fa2", "--format",
        "json", check=False,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert done.returncode == 1
    assert not [f for f in report["findings"] if f["code"].startswith("import-")], report["findings"]
    [required] = report["requirements"]
    assert not required["met"] and "flash-attn is not installed" in required["reasons"]
