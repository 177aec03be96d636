"""`build`: a backend compiled once into a wheel in a wheelhouse, proven before it is kept, for
every node's `install --find-links`. Planned from real facts; run for real with the real FA2
sdist, whose build here (no CUDA torch) can only skip its CUDA extension: the proof must refuse
that wheel, remove it and undo the build."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from attn_doctor.actions.install import plan_install
from attn_doctor.actions.plan import Command, Refusal
from attn_doctor.actions.recipes.context import InstallRequest
from attn_doctor.facts.given import with_given_gpu
from tests.conftest import REPO, Venv, pypi_sdist, run, snapshot
from tests.test_install_plans import machine as machine_facts


def build_plan(backend: str, wheelhouse: str, **options: object) -> list[Command]:
    facts = with_given_gpu(machine_facts("h100"), "H100", "A100")
    job = plan_install(facts, InstallRequest(backend, "pip", wheelhouse=wheelhouse, **options), here=False)  # type: ignore[arg-type]
    assert job.plan.action == f"build-{backend}"
    return [s for s in job.plan.steps if isinstance(s, Command)]


@pytest.mark.parametrize("backend", ["fa2", "fa3", "sage"])
def test_the_compile_writes_a_wheel_into_the_wheelhouse_and_installs_nothing(backend: str) -> None:
    *_, compile_ = build_plan(backend, "/shared/wheels")
    argv = compile_.argv
    assert argv[argv.index("wheel") :][:5] == (
        "wheel",
        "--no-deps",
        "--wheel-dir",
        "/shared/wheels",
        "--no-build-isolation",
    )
    assert "install" not in argv


def test_it_builds_for_the_gpus_asked_not_only_this_machines() -> None:
    *_, compile_ = build_plan("fa2", "/w")
    assert dict(compile_.env)["FLASH_ATTN_CUDA_ARCHS"] == "80;90"  # H100 and A100, as asked


def test_a_prebuilt_wheel_is_not_what_build_is_for() -> None:
    """Even where a release wheel exists for this torch (FA2's for torch 2.8), build compiles."""
    from attn_doctor.facts.given import with_given_torch

    facts = with_given_torch(with_given_gpu(machine_facts("h100"), "H100"), "2.8.0", "12.8")
    job = plan_install(facts, InstallRequest("fa2", "pip", force=True, wheelhouse="/w"), here=False)
    assert "FLASH_ATTENTION_FORCE_BUILD" in dict([s for s in job.plan.steps if isinstance(s, Command)][-1].env)


def test_build_refuses_what_is_installed_from_wheels_and_uv() -> None:
    with pytest.raises(Refusal, match="build compiles fa2, fa3, sage"):
        build_plan("fa4", "/w")
    facts = with_given_gpu(machine_facts("h100"), "H100")
    with pytest.raises(Refusal, match="uv has no `pip wheel`"):
        plan_install(facts, InstallRequest("fa2", "uv", wheelhouse="/w"), here=False)


def test_a_built_wheel_that_does_not_fit_is_removed_and_the_build_undone(torch_venv: Venv, tmp_path: Path) -> None:
    """The real FA2 sdist built with FLASH_ATTENTION_SKIP_CUDA_BUILD (what a build without a CUDA
    torch can make): its wheel installs and imports, and carries no extension. The proof refuses
    it: removed from the wheelhouse, the source tree taken back, exit 1."""
    sdist = pypi_sdist("flash-attn==2.8.3.post2")
    wheelhouse = tmp_path / "wheelhouse"
    before = snapshot(torch_venv)
    env = {**os.environ, "FLASH_ATTENTION_SKIP_CUDA_BUILD": "TRUE"}
    argv: list[str | Path] = [
        "build",
        "fa2",
        "--wheelhouse",
        wheelhouse,
        "--python",
        torch_venv.python,
        "--source",
        sdist,
    ]
    done = run(
        sys.executable, "-m", "attn_doctor", *argv, "--gpu", "H100", "--force", "--yes", env=env, check=False, cwd=REPO
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "wheel --no-deps --wheel-dir" in out  # pip wheel ran
    assert "flash_attn-2.8.3.post2-py3-none-any.whl does not fit (it carries no compiled extension): removed" in out
    assert list(wheelhouse.glob("*.whl")) == []
    assert snapshot(torch_venv) == before


def test_an_offline_build_takes_its_requirements_from_the_wheelhouse_only(tmp_path: Path) -> None:
    *_, compile_ = build_plan("fa2", "/w", offline=True, find_links="/cluster/wheels")
    argv = compile_.argv
    assert "--no-index" in argv and argv[argv.index("--find-links") + 1] == "/cluster/wheels"
    done = run(
        sys.executable,
        "-m",
        "attn_doctor",
        "build",
        "fa2",
        "--wheelhouse",
        tmp_path,
        "--offline",
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 2 and "--offline needs --find-links DIR (or --source)" in done.stderr
