"""The Hugging Face `kernels` route: transformers' own window on `kernels` (real transformers and
kernels wheels from PyPI), the build variants of a Hub kernel judged against this torch (as
`kernels` resolves them), the local Hub cache as the cache lays it out (real folders, a real YAML
config), and the recommendation taking the prebuilt route where FA2 would need a compiler that is
not there (machine fixtures recorded on real machines)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from attn_doctor.facts.collect import collect
from attn_doctor.facts.model import Installed, Interpreter, Package, Torch
from attn_doctor.facts.saved import load_facts
from attn_doctor.registry.hub import variant_fits
from attn_doctor.report import CheckRequest, judge
from attn_doctor.rules.recommend import Recommendation
from attn_doctor.workload import Workload, axolotl_workload
from tests.conftest import CACHE, FIXTURES, RealPackages, RecordedNvml, Venv, h100_recording, pypi_wheel
from tests.test_binaries import Machine, machine  # noqa: F401 (machine: a torch built here)
from tests.test_fixes import run_fix

TORCH_210_CU128 = Torch("2.10.0+cu128", "12.8", None, "/x/torch", cxx11_abi=True)
LINUX_312 = Interpreter("/x/python", "3.12.3", "cpython", "linux-x86_64", "venv", "/x")


@pytest.mark.parametrize(
    ("variant", "fits"),
    [
        # kernels 0.19.1's own resolver on torch 2.10 cu128, Linux x86_64 (its parse_variant and
        # resolve_variants run on these names): taken in this order, the cu130 ones refused
        ("torch-stable-abi29-cu128-x86_64-linux", True),
        ("torch-2.10-cuda-12.8-cpython-3.9-abi3-x86_64-linux", True),
        ("torch210-cxx11-cu126-x86_64-linux", True),  # an older CUDA minor runs on a newer one
        ("torch-cuda", True),
        ("torch-universal", True),
        ("torch-stable-abi29-cu130-x86_64-linux", False),  # CUDA 13.0 on a 12.8 torch
        ("torch210-cxx11-cu130-x86_64-linux", False),
        ("torch211-cxx11-cu128-x86_64-linux", False),  # another torch
        ("torch-stable-abi211-cu128-x86_64-linux", False),  # needs torch 2.11 at least
        ("torch210-cxx98-cu128-x86_64-linux", False),  # the other C++ ABI
        ("torch210-cxx11-cu128-aarch64-linux", False),
        ("torch210-cxx11-rocm71-x86_64-linux", False),
        ("torch-rocm", False),
        ("torch27-metal-aarch64-darwin", False),
        ("torch-2.10-cuda-12.8-cpython-3.13-abi3-x86_64-linux", False),  # Python 3.13 and later only
        ("tvm-ffi01-cu128-x86_64-linux", None),  # judged by tvm-ffi's release, which the facts do not hold
        ("not-a-variant", None),
    ],
)
def test_a_build_variant_fits_as_kernels_decides(variant: str, fits: bool | None) -> None:
    assert variant_fits(variant, TORCH_210_CU128, LINUX_312) is fits


def test_a_kernels_release_transformers_refuses_is_found_and_fixed(venv: Venv, monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers 5.25.0 names kernels>=0.19.1,<0.20 and refuses any other at load: with 0.18.3
    installed, check says so, and its fix line (run against the real wheels) clears it."""
    venv.install(pypi_wheel("transformers==5.25.0"), pypi_wheel("kernels==0.18.3"))
    nvml = RecordedNvml(h100_recording())
    [refused] = [
        f for f in judge(collect(str(venv.python), nvml=nvml)).findings if f.code == "kernels-refused-by-transformers"
    ]
    assert "kernels 0.18.3 is outside what transformers 5.25.0" in refused.title and "<0.20,>=0.19.1" in refused.title
    pypi_wheel("kernels==0.19.1")  # the fix installs offline from the wheelhouse: the release it names is there
    monkeypatch.setenv("PIP_NO_DEPS", "1")  # the wheels' own dependencies are not what is tested
    run_fix(refused.fix[0], CACHE / "wheels")
    after = judge(collect(str(venv.python), nvml=nvml))
    assert "kernels-refused-by-transformers" not in {f.code for f in after.findings}
    kernels = after.facts.package("kernels")
    assert kernels is not None and kernels.version == "0.19.1"


def cached_kernel(cache: Path, repo: str, *variants: str, kind: str = "kernels") -> None:
    """A kernel as huggingface_hub caches it: <cache>/<kind>--ORG--NAME/snapshots/<commit>/build/<variant>/."""
    owner, name = repo.split("/")
    for variant in variants:
        build = cache / f"{kind}--{owner}--{name}" / "snapshots" / "3f9c2b1" / "build" / variant
        build.mkdir(parents=True)
        (build / "__init__.py").write_text("")


@pytest.fixture(scope="module")
def transformers_venv(tmp_path_factory: pytest.TempPathFactory, real: RealPackages) -> Venv:
    """One venv for the cache cases (they change only the cache and the environment): the real CPU
    torch, transformers 5.25.0 and the kernels release it takes."""
    venv = Venv(tmp_path_factory.mktemp("hub") / "venv")
    venv.see_packages_of(real.torch_python)
    venv.install(pypi_wheel("transformers==5.25.0"), pypi_wheel("kernels==0.19.1"))
    return venv


@pytest.mark.parametrize(
    ("cached", "offline", "expected"),
    [
        (("torch213-cxx11-cpu-x86_64-linux",), False, set()),  # a build for this (CPU) torch is there
        (("torch-universal",), True, set()),  # Python only: any torch, offline too
        (("torch212-cxx11-cu126-x86_64-linux",), False, {"config-hub-kernel-no-build"}),
        (("torch212-cxx11-cu126-x86_64-linux",), True, {"config-hub-kernel-offline"}),
        ((), False, {"config-hub-kernel-not-cached"}),
        ((), True, {"config-hub-kernel-offline"}),
    ],
)
def test_a_hub_kernel_in_the_config_is_judged_by_the_local_cache(
    transformers_venv: Venv,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cached: tuple[str, ...],
    offline: bool,
    expected: set[str],
) -> None:
    cache = tmp_path / "hub"
    cache.mkdir()
    if cached:
        cached_kernel(cache, "kernels-community/flash-attn3", *cached)
    cached_kernel(cache, "kernels-community/sage-attention", "torch213-cxx11-cpu-x86_64-linux", kind="models")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    config = tmp_path / "axolotl.yaml"
    config.write_text("base_model: m\nattn_implementation: kernels-community/flash-attn3@v2\nadapter: lora\n")
    facts = collect(str(transformers_venv.python), nvml=RecordedNvml(h100_recording()))
    assert {k.repo for k in facts.hub_kernels} == {"kernels-community/sage-attention"} | (
        {"kernels-community/flash-attn3"} if cached else set()
    )
    report = judge(facts, CheckRequest(workload=axolotl_workload(config)))
    assert {f.code for f in report.findings if f.code.startswith("config-hub")} == expected


A100 = load_facts(FIXTURES / "machines" / "a100.json")  # torch 2.11.0+cu130: no FA2 release wheel for it


def a100(*, nvcc: bool, kernels: bool) -> Recommendation:
    installed = A100.installed
    packages = A100.packages
    if kernels:
        transformers = Package("transformers", "5.25.0", "/x/t.dist-info", "/x", requires=("kernels<0.20,>=0.19.1",))
        packages = (*packages, transformers, Package("kernels", "0.19.1", "/x/k.dist-info", "/x"))
        installed = (*installed, Installed("transformers", "5.25.0"), Installed("kernels", "0.19.1"))
    toolchain = A100.toolchain if nvcc else dataclasses.replace(A100.toolchain, nvcc=None, nvcc_path=None)
    facts = dataclasses.replace(A100, packages=packages, installed=installed, toolchain=toolchain)
    recommendation = judge(facts, CheckRequest(workload=Workload(training="lora"))).recommendation
    assert recommendation is not None
    return recommendation


def test_without_a_compiler_the_recommendation_takes_fa2_prebuilt_from_the_hub() -> None:
    assert A100.toolchain.nvcc is not None and A100.torch is not None
    compiled = a100(nvcc=True, kernels=False)
    assert compiled.backend == "sdpa" and compiled.better == "fa2"  # FA2 compiles here: said as before
    no_compiler = a100(nvcc=False, kernels=False)
    assert no_compiler.backend == "sdpa" and no_compiler.better == "hub-fa2"
    assert "transformers[kernels]" in no_compiler.better_how
    assert any("no nvcc to build it" in r for r in no_compiler.reasons)
    ready = a100(nvcc=False, kernels=True)
    assert ready.backend == "hub-fa2" and ready.better is None
    assert ready.config == "attn_implementation: kernels-community/flash-attn2"


def test_the_cached_build_kernels_would_load_is_read_as_an_installed_extension(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any Hub kernel, not only those the registry knows: the build that `kernels` would load for this
    torch (torch299-cxx11-cu130 for the machine's torch 2.99.0+cu130) is a shared object like any
    extension. One built here with nvcc for sm_80 only, cached as the Hub lays it out: on the H100 the
    config that names it is told it carries no code for sm_90; rebuilt for sm_90a, nothing is said."""
    from tests.test_gpu_code import build_extension

    info = machine.venv.site / "kernels-0.19.1.dist-info"  # what loads Hub kernels, installed
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kernels\nVersion: 0.19.1\n")
    (info / "RECORD").write_text("")
    cache = tmp_path / "hub"
    variant = "torch299-cxx11-cu130-x86_64-linux"
    cached_kernel(cache, "acme/attention", variant, "torch299-cxx11-cu128-x86_64-linux")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    build = cache / "kernels--acme--attention" / "snapshots" / "3f9c2b1" / "build" / variant / "attention"
    build.mkdir()
    config = tmp_path / "axolotl.yaml"
    config.write_text("base_model: m\nattn_implementation: acme/attention\nadapter: lora\n")

    def judged(*targets: str) -> list[str]:
        build_extension(machine, *targets)
        shutil.copy(machine.extension, build / "_attention_3f9c2b1.abi3.so")
        facts = collect(str(machine.venv.python), nvml=h100)
        [kernel] = facts.hub_kernels
        assert [Path(b.path).parent.parent.name for b in kernel.binaries] == [variant]  # not the cu128 build
        report = judge(facts, CheckRequest(workload=axolotl_workload(config)))
        return [f.title for f in report.findings if f.code.startswith("config-")]

    [said] = judged("sm_80")
    assert "acme/attention: the cached build `kernels` would load here does not fit" in said
    assert "carries no code for sm_90 (it has sm_80)" in said, said
    assert judged("sm_90a") == []


def test_a_hub_cache_build_folder_is_walked_within_bounds(tmp_path: Path) -> None:
    """A build folder holding 20,000 files and no shared object (a hostile or broken cache) is
    looked through up to the bound, not to its end."""
    from attn_doctor.facts import hub_cache

    cache = tmp_path / "hub"
    cached_kernel(cache, "acme/huge", "torch299-cxx11-cu130-x86_64-linux")
    build = cache / "kernels--acme--huge" / "snapshots" / "3f9c2b1" / "build" / "torch299-cxx11-cu130-x86_64-linux"
    for index in range(20):
        folder = build / f"d{index:02}"
        folder.mkdir()
        for name in range(1000):
            (folder / f"{name}.py").touch()
    (build / "zz").mkdir()
    (build / "zz" / "_late.so").touch()  # past the bound
    [kernel] = hub_cache.read_hub_kernels({"HF_HUB_CACHE": str(cache)})
    assert hub_cache.compiled_files(kernel, lambda variant: True) == []
    (build / "_early.so").touch()
    assert [Path(f).name for f in hub_cache.compiled_files(kernel, lambda variant: True)] == ["_early.so"]
