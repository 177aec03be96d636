"""`attn-doctor install`: the plan for every backend on every machine fixture (readings of real
machines, tests/fixtures/machines/), step by step. Planning reads facts only, so these run here."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from attn_doctor.actions.install import Install, plan_install, torch_record_digest, verify_install
from attn_doctor.actions.plan import Command, Refusal
from attn_doctor.actions.recipes.context import InstallRequest
from attn_doctor.facts.given import with_given_gpu, with_given_torch
from attn_doctor.facts.model import Facts, Toolchain
from attn_doctor.facts.saved import load_facts
from attn_doctor.registry.backends import backend_names
from attn_doctor.registry.recipes import FA3_TREE, SAGE_TREE, build_jobs, build_peak_gib, sage_parallelism
from tests.conftest import FIXTURES, doctor

MACHINES = FIXTURES / "machines"
INSTALLABLE = backend_names(installable=True)
PY = "/opt/torch/.venv/bin/python3"  # the fixtures' interpreter (the H100's torch venv)
PIP = (PY, "-m", "pip", "install")
TORCH = "torch==2.11.0"  # the dist-info version: what pip matches the installed torch by


def machine(name: str) -> Facts:
    return load_facts(MACHINES / f"{name}.json")


def plan(facts: Facts, backend: str, **options: object) -> Install:
    return plan_install(facts, InstallRequest(backend, **options), here=False)  # type: ignore[arg-type]


def commands(job: Install) -> list[Command]:
    assert all(isinstance(s, Command) for s in job.plan.steps)
    return [s for s in job.plan.steps if isinstance(s, Command)]


def with_tools(facts: Facts, **changes: object) -> Facts:
    return dataclasses.replace(facts, toolchain=dataclasses.replace(facts.toolchain, **changes))  # type: ignore[arg-type]


# Every installable backend on every machine: a plan, or a refusal that says why and what instead.
EXPECTED = {
    "h100": {"fa2": "plan", "fa3": "plan", "fa4": "plan", "sage": "plan", "xformers": "plan"},
    "a100": {"fa2": "plan", "fa3": "plan", "fa4": "plan", "sage": "plan", "xformers": "plan"},
    "a10": {"fa2": "plan", "fa3": "plan", "fa4": "plan", "sage": "plan", "xformers": "plan"},
    "l4": {"fa2": "plan", "fa3": "plan", "fa4": "plan", "sage": "plan", "xformers": "plan"},
    "t4": {"fa2": "not run on", "fa3": "not run on", "fa4": "not run on", "sage": "not run on", "xformers": "plan"},
    "b200": {"fa2": "plan", "fa3": "not run on", "fa4": "plan", "sage": "not run on", "xformers": "plan"},
    "rtx5090": {"fa2": "plan", "fa3": "not run on", "fa4": "plan", "sage": "plan", "xformers": "plan"},
    "mi250": {"fa2": "plan", "fa3": "no ROCm", "fa4": "no ROCm", "sage": "no ROCm", "xformers": "no ROCm"},
    "mi300x": {"fa2": "plan", "fa3": "no ROCm", "fa4": "no ROCm", "sage": "no ROCm", "xformers": "no ROCm"},
    "cpu": {b: "no GPU" for b in INSTALLABLE},
    "mixed-h100-a100": {"fa2": "plan", "fa3": "plan", "fa4": "plan", "sage": "plan", "xformers": "plan"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("backend", INSTALLABLE)
def test_every_backend_on_every_machine(name: str, backend: str) -> None:
    facts = machine(name)
    expected = EXPECTED[name][backend]
    if expected == "plan":
        job = plan(facts, backend)
        assert job.plan.steps
        for step in commands(job):
            if step.argv[:4] == PIP:  # every pip step keeps the installed torch
                assert step.argv[-1] == f"torch=={facts.package('torch').version}"  # type: ignore[union-attr]
                assert set(facts.python.site_packages) <= set(step.watch)
        return
    with pytest.raises(Refusal, match=expected) as refused:
        plan(facts, backend)
    assert "SDPA" in str(refused.value) or "attn-doctor install" in str(refused.value)  # says what instead


def test_refusals_are_overridden_by_force() -> None:
    job = plan(machine("cpu"), "fa4", force=True)
    assert any("--force" in note and "no GPU" in note for note in job.plan.notes)


def test_fa4_on_the_h100_is_one_pinned_pip_step_with_the_cu13_extra() -> None:
    job = plan(load_facts(FIXTURES / "h100-check.json"), "fa4")
    (step,) = commands(job)
    assert step.argv == (*PIP, "flash-attn-4[cu13]==4.0.0b36", TORCH)
    assert step.env == ()
    assert (job.distribution, job.version) == ("flash-attn-4", "4.0.0b36")
    assert job.plan.lines() == [
        f"1. run         {PY} -m pip install 'flash-attn-4[cu13]==4.0.0b36' {TORCH}  "
        "(FA4 and its CuTe DSL dependencies for CUDA 13)"
    ]


def test_fa4_for_a_cuda_12_torch_has_no_cu13_extra() -> None:
    facts = with_given_torch(machine("h100"), "2.9.1", "12.8")
    (step,) = commands(plan(facts, "fa4"))
    assert step.argv == (*PIP, "flash-attn-4==4.0.0b36", "torch==2.9.1")


def test_fa4_next_to_fa2_says_the_collision_is_repaired_after() -> None:
    job = plan(load_facts(FIXTURES / "h100-fa2-over-fa4.json"), "fa4")
    assert any("fix-shadow" in note for note in job.plan.notes)


def test_fa2_without_a_release_wheel_compiles_for_this_gpu_only() -> None:
    job = plan(machine("h100"), "fa2")  # torch 2.11 + CUDA 13: no FA2 wheel was ever built
    requirements, build = commands(job)
    assert requirements.argv == (*PIP, "ninja", "packaging", "setuptools", "wheel", TORCH)
    assert build.argv == (*PIP, "--no-build-isolation", "--no-cache-dir", "flash-attn==2.8.3.post2", TORCH)
    assert dict(build.env) == {
        "CUDA_HOME": "/usr/local/cuda",
        "FLASH_ATTENTION_FORCE_BUILD": "TRUE",  # only the exact string TRUE works (setup.py)
        "FLASH_ATTN_CUDA_ARCHS": "90",
        "MAX_JOBS": "16",  # 16 cores, 125.9 GiB, one arch: one nvcc thread a job, peak ~80 GiB
        "NVCC_THREADS": "4",
    }
    assert any("compiles" in note and "16 jobs" in note for note in job.plan.notes)
    assert any("expect a peak near 80 GiB" in note for note in job.plan.notes)
    # the route around the compile, named where the plan compiles; not when a build was asked for
    assert any(
        "or no compile at all, FlashAttention 2 from the Hub" in n and "explain hub-fa2" in n for n in job.plan.notes
    )
    built = plan(machine("h100"), "fa2", wheelhouse="/srv/wheels")
    assert not any("no compile at all" in n for n in built.plan.notes)
    released = plan(with_given_torch(machine("h100"), "2.8.0", "12.8"), "fa2")  # a release wheel: no compile
    assert not any("no compile at all" in n for n in released.plan.notes)


def test_fa2_for_two_gpu_generations_builds_both() -> None:
    (_, build) = commands(plan(machine("mixed-h100-a100"), "fa2"))
    assert dict(build.env)["FLASH_ATTN_CUDA_ARCHS"] == "80;90"


@pytest.mark.parametrize(
    ("cpus", "ram", "archs", "jobs"),
    [
        (16, 31.0, 4, 1),  # the machine: upstream's rule gave 3 jobs x 4 threads (~60 GB)
        (16, 31.0, 1, 5),  # narrowed to one arch: one nvcc thread a job
        (2, 24.0, 1, 2),
        (2, 8.0, 4, 1),
        (16, 125.9, 4, 4),
        (64, 2000.0, 4, 16),
        (0, 0.0, 4, 1),
    ],
)
def test_max_jobs_from_cores_memory_and_nvcc_threads(cpus: int, ram: float, archs: int, jobs: int) -> None:
    assert build_jobs(cpus, ram, archs) == jobs
    if jobs > 1:  # what it starts fits: every nvcc thread at ~5 GiB within 90% of the memory
        assert build_peak_gib(jobs, archs) <= 0.9 * ram


def test_fa2_plan_on_this_kind_of_ci_machine_sets_max_jobs_sanely() -> None:
    """2 cores, 24 GB (this project's own machine): upstream's default could start cpu//2=1..
    and RAM/9=2; the doctor says 2, and never more jobs than the memory holds."""
    facts = with_tools(machine("h100"), cpus=2, ram_gib=24.0)
    (_, build) = commands(plan(facts, "fa2"))
    assert dict(build.env)["MAX_JOBS"] == "2"


def test_fa2_with_a_release_wheel_takes_it_instead_of_compiling() -> None:
    facts = with_given_torch(machine("h100"), "2.8.0", "12.8")
    (step,) = commands(plan(facts, "fa2"))
    wheel = "flash_attn-2.8.3.post1%2Bcu12torch2.8cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"
    url = f"https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.3.post1/{wheel}"
    assert step.argv == (*PIP, f"flash-attn @ {url}", "einops", "torch==2.8.0")
    assert step.env == ()


@pytest.mark.parametrize(
    ("wheel", "compiles"),
    [
        ("flash_attn-2.8.3.post2-cp312-cp312-linux_x86_64.whl", False),  # built here before, kept
        ("flash_attn-2.8.3.post2-cp311-cp311-linux_x86_64.whl", True),  # another Python
        ("flash_attn-2.8.3.post2-cp312-cp312-linux_aarch64.whl", True),  # another machine
        ("flash_attn-2.8.3.post1-cp312-cp312-linux_x86_64.whl", False),  # the release the index offered then
        ("flash_attn-2.8.3.post2.whl", True),  # not a wheel's name
    ],
)
def test_fa2_built_before_is_installed_from_the_wheelhouse(tmp_path: Path, wheel: str, compiles: bool) -> None:
    """No release wheel exists for torch 2.11 (the H100's): a wheel that a first node compiled (~22 min
    there) and kept is what the others install: that very file, by its path (pip, given the name,
    could take another file of the release)."""
    (tmp_path / wheel).write_bytes(b"")  # only its name is read when planning
    job = plan(machine("h100"), "fa2", find_links=str(tmp_path), offline=True)
    steps = commands(job)
    assert any("FORCE_BUILD" in str(s.env) for s in steps) is compiles
    if not compiles:
        (step,) = steps
        assert step.argv == (
            *PIP,
            "--no-index",
            "--find-links",
            str(tmp_path),
            str(tmp_path / wheel),
            "einops",
            "torch==2.11.0",
        )
        assert any("in --find-links" in note and "installed without compiling" in note for note in job.plan.notes)


def test_fa2_from_a_wheelhouse_names_the_version() -> None:
    facts = with_given_torch(machine("h100"), "2.8.0", "12.8")
    (step,) = commands(plan(facts, "fa2", find_links="/wheels", offline=True))
    assert step.argv == (
        *PIP,
        "--no-index",
        "--find-links",
        "/wheels",
        "flash-attn==2.8.3.post1",
        "einops",
        "torch==2.8.0",
    )


def test_fa2_on_rocm_builds_ck_for_the_gpus_gfx() -> None:
    (_, build) = commands(plan(machine("mi300x"), "fa2"))
    assert dict(build.env)["GPU_ARCHS"] == "gfx942"
    assert "flash-attn==2.8.3.post2" in build.argv


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"nvcc": None, "nvcc_path": None}, "no nvcc"),
        ({"nvcc": None}, "tells no release .* set CUDA_HOME"),  # a wrapper script: what check says too
        ({"nvcc": "11.6"}, "older than 11.7"),
        ({"nvcc": "12.8"}, "differ in major version"),  # torch is a CUDA 13 build
        ({"cxx": None}, "no C\\+\\+ compiler"),
    ],
)
def test_a_compile_without_its_toolchain_is_refused(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(Refusal, match=reason):
        plan(with_tools(machine("h100"), **changes), "fa2")


def test_fa3_clones_the_pinned_commit_and_builds_hopper() -> None:
    job = plan(machine("h100"), "fa3")
    _, clone, checkout, build = commands(job)
    folder = f"/opt/torch/.venv/.attn-doctor/src/flash-attention-{FA3_TREE.commit[:12]}"
    assert clone.watch == (folder,)  # the runner backs up nothing there yet, and undo removes it whole
    assert clone.argv == ("/usr/bin/git", "clone", "--filter=blob:none", "--no-checkout", FA3_TREE.url, folder)
    assert checkout.argv == ("/usr/bin/git", "-C", folder, "checkout", "--detach", FA3_TREE.commit)
    assert build.argv == (*PIP, "--no-build-isolation", "--no-cache-dir", f"{folder}/hopper", TORCH)
    assert len(FA3_TREE.commit) == 40  # a commit, never a branch


def test_fa3_with_a_cuda_12_6_nvcc_warns_of_upstreams_download() -> None:
    facts = with_tools(with_given_torch(machine("h100"), "2.9.1", "12.6"), nvcc="12.6")
    job = plan(facts, "fa3")
    assert any("downloads nvcc 12.6" in note for note in job.plan.notes)


def test_source_builds_are_refused_offline() -> None:
    with pytest.raises(Refusal, match="needs the network"):
        plan(machine("h100"), "sage", find_links="/wheels", offline=True)


def test_sage_builds_only_this_gpus_arch_with_its_extensions_side_by_side() -> None:
    job = plan(machine("h100"), "sage")  # 16 cores, 125 GiB: 16 jobs
    build = commands(job)[-1]
    assert build.argv[-2] == f"/opt/torch/.venv/.attn-doctor/src/SageAttention-{SAGE_TREE.commit[:12]}"
    env = dict(build.env)
    assert env["TORCH_CUDA_ARCH_LIST"] == "9.0"
    # Hopper needs all four extensions (2 + 8 + 2 + 2 files): all at once, 8 jobs each, at most 14
    # nvcc's together
    assert (env["EXT_PARALLEL"], env["MAX_JOBS"]) == ("4", "8")
    assert any("no backward pass" in note for note in job.plan.notes)  # the caveat, corrected


@pytest.mark.parametrize(
    ("jobs", "capabilities", "expected"),
    [
        (16, {"9.0"}, (4, 8)),  # 2 + 8 + 2 + 2 = 14 <= 16
        (10, {"9.0"}, (4, 4)),  # 2 + 4 + 2 + 2 = 10
        (4, {"9.0"}, (4, 1)),
        (2, {"9.0"}, (2, 1)),  # fewer jobs than extensions
        (13, {"8.0"}, (2, 2)),  # an A100 builds _qattn_sm80 and _fused only
        (13, {"8.9"}, (3, 8)),  # Ada: no _qattn_sm90
    ],
)
def test_sage_never_runs_more_nvccs_than_jobs(jobs: int, capabilities: set[str], expected: tuple[int, int]) -> None:
    assert sage_parallelism(jobs, capabilities) == expected


def test_sage_on_hopper_needs_nvcc_12_3() -> None:
    facts = with_tools(with_given_torch(machine("h100"), "2.9.1", "12.2"), nvcc="12.2")
    with pytest.raises(Refusal, match=re.escape("needs nvcc >= 12.3")):
        plan(facts, "sage")


@pytest.mark.parametrize(
    ("torch", "cuda", "xformers"),
    [
        ("2.9.1", "12.8", "0.0.33.post2"),
        ("2.9.0", "12.8", "0.0.33.post1"),
        ("2.8.0", "12.8", "0.0.32.post2"),
        ("2.10.0", "12.8", "0.0.35"),
        ("2.7.1", "12.6", "0.0.31.post1"),
    ],
)
def test_xformers_is_the_release_built_for_the_installed_torch(torch: str, cuda: str, xformers: str) -> None:
    (step,) = commands(plan(with_given_torch(machine("h100"), torch, cuda), "xformers"))
    assert step.argv == (*PIP, f"xformers=={xformers}", f"torch=={torch}")


def test_xformers_for_a_cuda_13_torch_comes_from_pytorchs_index() -> None:
    (step,) = commands(plan(machine("h100"), "xformers"))
    assert step.argv == (*PIP, "--index-url", "https://download.pytorch.org/whl/cu130", "xformers==0.0.35", TORCH)


def test_no_xformers_for_an_unbuilt_torch() -> None:
    with pytest.raises(Refusal, match=re.escape("no xFormers release is built for torch 2.3.1")):
        plan(with_given_torch(machine("h100"), "2.3.1", "12.1"), "xformers")


def test_a_pep_668_python_is_refused_unless_asked() -> None:
    facts = machine("h100")
    system = dataclasses.replace(facts, python=dataclasses.replace(facts.python, externally_managed=True))
    with pytest.raises(Refusal, match="PEP 668"):
        plan(system, "fa4")
    (step,) = commands(plan(system, "fa4", allow_system=True))
    assert "--break-system-packages" in step.argv


def test_no_torch_is_refused_whatever_the_options() -> None:
    facts = dataclasses.replace(machine("h100"), torch=None)
    with pytest.raises(Refusal, match="never chooses torch"):
        plan(facts, "fa4", force=True)


def test_uv_when_asked() -> None:
    facts = machine("h100")
    (step,) = commands(plan(facts, "fa4", installer="uv"))
    assert step.argv == (
        facts.python.uv,
        "pip",
        "install",
        "--python",
        PY,
        "flash-attn-4[cu13]==4.0.0b36",
        TORCH,
    )


def test_fixture_toolchain_is_the_h100s() -> None:
    """The expectations above read the H100's recorded toolchain: guard against a changed fixture."""
    assert machine("h100").toolchain == Toolchain(
        nvcc="13.0",
        nvcc_path="/usr/local/cuda/bin/nvcc",
        cuda_home="/usr/local/cuda",
        ninja="/opt/torch/.venv/bin/ninja",
        cxx="/usr/bin/c++",
        git="/usr/bin/git",
        cpus=16,
        ram_gib=125.9,
    )
    assert Path(MACHINES / "h100.json").is_file()


def test_the_h100_plan_is_the_one_that_ran_there() -> None:
    """The plan made here from the H100's facts is, line for line, the one that installed FA4 on
    the real H100, with pip and with uv (its venv is uv-made): installed, imported, ran, verified."""
    facts = load_facts(FIXTURES / "h100-check.json")  # read before the probe knew uv_managed
    for installer, log in (("pip", "h100-install-fa4.txt"), ("uv", "h100-install-fa4-uv.txt")):
        job = plan(facts, "fa4", find_links="/tmp/wh", offline=True, installer=installer)
        ran = (FIXTURES / log).read_text()
        assert job.plan.lines()[0] in ran.splitlines()
        assert "Verified: flash-attn-4 4.0.0b36 installed" in ran


def installed_fa4() -> tuple[Install, Facts]:
    after = load_facts(FIXTURES / "h100-fa4-check.json")  # the real H100 after `install fa4`
    return plan(load_facts(FIXTURES / "h100-check.json"), "fa4"), after


def test_the_h100_install_verifies() -> None:
    job, after = installed_fa4()
    before = load_facts(FIXTURES / "h100-check.json")
    assert verify_install(job, before, after, torch_record_digest(before)) == []


def test_an_fa4_without_the_hopper_backward_fails_verification_on_hopper() -> None:
    job, after = installed_fa4()
    before = load_facts(FIXTURES / "h100-check.json")
    without = dataclasses.replace(after, fa4_sm90_backward=False)
    (problem,) = verify_install(job, before, without, torch_record_digest(before))
    assert "no Hopper backward kernel" in problem and "pip install -e flash_attn/cute" in problem


def test_an_install_that_left_a_requirement_missing_fails_verification() -> None:
    """FA4 without its CuTe DSL, as `--no-deps` left it on the H100 (`No module named 'cutlass'`):
    the unmet requirement's problem ends in "is not installed", and is not the package's own."""
    before = load_facts(FIXTURES / "h100-check.json")
    after = load_facts(FIXTURES / "h100-fa2-over-fa4-requirements.json")  # the real one, read there
    problems = verify_install(plan(before, "fa4"), before, after, torch_record_digest(before))
    assert any("nvidia-cutlass-dsl>=4.6.2 is not installed" in p for p in problems), problems


def test_a_reinstalled_torch_of_the_same_version_fails_verification(tmp_path: Path) -> None:
    job, after = installed_fa4()
    before = load_facts(FIXTURES / "h100-check.json")
    dist_info = tmp_path / "torch-2.11.0.dist-info"
    dist_info.mkdir()
    (dist_info / "RECORD").write_text("torch/__init__.py,sha256=old,1\n")

    def with_torch_at(facts: Facts) -> Facts:
        packages = tuple(
            dataclasses.replace(p, dist_info=str(dist_info)) if p.name == "torch" else p for p in facts.packages
        )
        return dataclasses.replace(facts, packages=packages)

    recorded = torch_record_digest(with_torch_at(before))
    (dist_info / "RECORD").write_text("torch/__init__.py,sha256=new,1\n")  # what a reinstall does
    (problem,) = verify_install(job, with_torch_at(before), with_torch_at(after), recorded)
    assert "torch was reinstalled" in problem


def test_a_venv_made_by_uv_is_installed_into_with_uv() -> None:
    facts = machine("h100")
    made_by_uv = dataclasses.replace(facts, python=dataclasses.replace(facts.python, uv_managed=True))
    (step,) = commands(plan(made_by_uv, "fa4"))
    assert step.argv[:5] == (facts.python.uv, "pip", "install", "--python", PY)
    (step,) = commands(plan(made_by_uv, "fa4", installer="pip"))  # unless asked otherwise
    assert step.argv[:4] == PIP


def test_sage_is_built_past_its_v2_2_0_tag() -> None:
    """At tag v2.2.0 sageattn() on Hopper returns torch.empty() (the fake op shadows the real one in
    sm90_compile.py): built on the H100 with nvcc 13.0 it was off the float32 reference by 6-14 in
    every layout (tests/fixtures/h100-sage2-layouts.txt). The pinned commit is past the fix."""
    notes = plan(machine("h100"), "sage").plan.notes
    assert any("issues/288" in note and SAGE_TREE.commit[:7] in note for note in notes)
    assert SAGE_TREE.commit.startswith("ff71e1e")  # PR #307's merge
    seen = (FIXTURES / "h100-sage2-layouts.txt").read_text()
    assert "NHD as is 13.8 HND views 13.8 HND contiguous 13.8" in seen


def test_the_plan_says_when_the_backend_ranks_after_sdpa_here() -> None:
    """On the H100 FA2 trained at 0.64-0.77x SDPA (h100-bench-five-gpu.json): installing it there buys
    no speed over what torch has, and the plan says so; on an A100, where FA2 ranks first, it does not."""
    h100 = load_facts(FIXTURES / "h100-check.json")
    notes = " ".join(plan(h100, "fa2").plan.notes)
    assert "ranks FlashAttention 2 after PyTorch SDPA" in notes and "attn-doctor explain fa2" in notes
    assert "0.64-0.77x SDPA" in doctor("explain", "fa2")[1]  # the measurement behind it
    assert "after PyTorch SDPA" not in " ".join(plan(machine("a100"), "fa2").plan.notes)
    assert "after PyTorch SDPA" not in " ".join(plan(h100, "fa4").plan.notes)


def with_fa4(facts: Facts, version: str) -> Facts:
    from attn_doctor.facts.model import Package

    package = Package("flash-attn-4", version, f"/site/flash_attn_4-{version}.dist-info", "/site")
    return dataclasses.replace(facts, packages=(*[p for p in facts.packages if p.name != "flash-attn-4"], package))


def test_a_newer_working_fa4_is_never_downgraded_to_the_pin() -> None:
    """Seen on the H200: flash-attn-4 4.0.0b40 installed and verified, and `install fa4` planned b36."""
    newer = plan(with_fa4(load_facts(FIXTURES / "h100-check.json"), "4.0.0b40"), "fa4")
    step, again = commands(newer)  # the release kept, and its own files put in again
    assert "flash-attn-4[cu13]==4.0.0b40" in step.argv and newer.version == "4.0.0b40"
    assert "--force-reinstall" in again.argv and "flash-attn-4[cu13]==4.0.0b40" in again.argv
    assert any("kept, not downgraded" in note and "verify fa4" in note for note in newer.plan.notes)
    older = plan(with_fa4(load_facts(FIXTURES / "h100-check.json"), "4.0.0b30"), "fa4")
    assert "flash-attn-4[cu13]==4.0.0b36" in commands(older)[0].argv  # an older one is upgraded
    # a newer release known bad on this GPU is replaced, and the plan says why
    b300 = with_given_gpu(with_fa4(load_facts(FIXTURES / "h100-check.json"), "4.0.0b37"), "B300")
    installed = tuple(i for i in b300.installed if i.name != "nvidia-cutlass-dsl")
    from attn_doctor.facts.model import Installed

    bad = dataclasses.replace(b300, installed=(*installed, Installed("nvidia-cutlass-dsl", "4.6.1")))
    replaced = plan(bad, "fa4", force=True)
    assert "flash-attn-4[cu13]==4.0.0b36" in commands(replaced)[0].argv
    assert any("known bad here" in note for note in replaced.plan.notes)


def test_a_wheelhouse_offers_only_releases_worth_planning(tmp_path: Path) -> None:
    """As the index's versions are judged: FA3's beta published as flash_attn 3.0.0b1 is another
    backend's, and a pre-release is not taken beside a final release."""
    for wheel in (
        "flash_attn-3.0.0b1-cp312-cp312-linux_x86_64.whl",
        "flash_attn-2.8.4rc1-cp312-cp312-linux_x86_64.whl",
        "flash_attn-2.8.3.post2-cp312-cp312-linux_x86_64.whl",
    ):
        (tmp_path / wheel).write_bytes(b"")  # only the names are read when planning for another machine
    (step,) = commands(plan(machine("h100"), "fa2", find_links=str(tmp_path), offline=True))
    assert str(tmp_path / "flash_attn-2.8.3.post2-cp312-cp312-linux_x86_64.whl") in step.argv


def test_fa3s_compile_names_the_hub_build_where_it_serves() -> None:
    """kernels-community/flash-attn3 serves Hopper and Ampere from torch 2.9 on: the compile plan
    names it there, and not for a torch the Hub builds nothing for."""
    job = plan(machine("h100"), "fa3")
    assert any("or no compile at all, FlashAttention 3 from the Hub" in n for n in job.plan.notes), job.plan.notes
    older = with_tools(with_given_torch(machine("h100"), "2.8.0", "12.8"), nvcc="12.8")
    assert not any("no compile at all" in n for n in plan(older, "fa3").plan.notes)


def test_a_compile_over_the_same_release_installed_builds_it_again() -> None:
    """FA2 2.8.3.post2 installed and broken (an undefined symbol after a torch upgrade): pip, asked
    for flash-attn==2.8.3.post2, answers "Requirement already satisfied" and compiles nothing. The
    plan builds it again over the installed files, with torch and FA2's dependencies left alone."""
    facts = load_facts(FIXTURES / "h100-fa2-over-fa4.json")
    (_, build) = commands(plan(facts, "fa2", force=True))
    assert build.argv[-1] == "flash-attn==2.8.3.post2" and "--force-reinstall" in build.argv
    assert "--no-deps" in build.argv and not any(a.startswith("torch==") for a in build.argv)
    assert "over the installed flash-attn 2.8.3.post2" in build.why
    (_, fresh) = commands(plan(machine("h100"), "fa2"))  # nothing installed: the plain compile, torch held
    assert "--force-reinstall" not in fresh.argv and fresh.argv[-1].startswith("torch==")


def test_an_install_over_the_same_release_puts_its_files_in_again() -> None:
    """FA4 4.0.0b36 installed (its files damaged, say): pip, asked for it, answers "Requirement already
    satisfied". The plan resolves what is missing first, then puts the release's own files in again."""
    facts = load_facts(FIXTURES / "h100-fa2-over-fa4.json")
    resolve, again = commands(plan(facts, "fa4", force=True))
    assert "--force-reinstall" not in resolve.argv and resolve.argv[-1].startswith("torch==")
    assert again.argv[-3:] == ("--force-reinstall", "--no-deps", "flash-attn-4[cu13]==4.0.0b36"), again.argv
    (only,) = commands(plan(load_facts(FIXTURES / "h100-check.json"), "fa4"))  # not installed: one step
    assert "--force-reinstall" not in only.argv
