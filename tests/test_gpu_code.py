"""What the installed binaries can run on this GPU, read from real files: fatbins written by NVIDIA's
own nvcc for chosen -gencode lists, and the real ptxas of NVIDIA's CUDA 12.8.93 nvcc wheel (the
ptxas Triton 3.4 and 3.5 bundle) as Triton's."""

from __future__ import annotations

import ast
import base64
import dataclasses
import hashlib
import os
import re
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from attn_doctor.facts.collect import collect
from attn_doctor.facts.fatbin import FatbinError, cuda_code, torch_cuda_code
from attn_doctor.facts.given import with_given_gpu
from attn_doctor.facts.toolchain import release_of
from attn_doctor.registry.versions import release
from attn_doctor.report import Report, judge
from tests.conftest import CACHE, FIXTURES, RecordedNvml, Venv, cuda_toolkit, one_at_a_time, pip, run
from tests.test_binaries import EXTENSION, Machine, machine  # noqa: F401 (machine: FA2 next to a built torch)

KERNEL = "__global__ void scale(float* x) { x[threadIdx.x] *= 2.0f; }\n"


def nvcc() -> str:
    """NVIDIA's compiler, as this machine image carries it (CUDA 13.0)."""
    found = shutil.which("nvcc") or next(iter(sorted(Path("/usr/local").glob("cuda*/bin/nvcc"))), None)
    if found is None:
        pytest.fail("nvcc is needed to write real fatbins; this machine image has one in /usr/local/cuda")
    return str(found)


def gencode(*targets: str) -> list[str]:
    """-gencode flags: "sm_80" a cubin, "compute_90" PTX."""
    flags = []
    for target in targets:
        arch = target.replace("sm_", "compute_")
        flags += ["-gencode", f"arch={arch},code={target}"]
    return flags


def build(output: Path, source: str, *flags: str) -> Path:
    cu = output.with_suffix(".cu")
    cu.write_text(source)
    run(nvcc(), "-shared", "-Xcompiler", "-fPIC", "-o", output, cu, *flags)
    return output


@pytest.mark.parametrize(
    ("targets", "more"),
    [
        (("sm_80", "sm_90a", "compute_90"), ()),
        (("sm_89",), ("-Xfatbin", "-compress-all")),
        (("sm_100f", "sm_120", "compute_120"), ("-Xfatbin", "-compress-all")),
        (("sm_75", "sm_86"), ("-cudart", "shared")),
        (("sm_80",), ("-rdc=true",)),  # relocatable device code: __nv_relfatbin beside .nv_fatbin
    ],
)
def test_the_fatbin_reader_reads_what_nvcc_wrote(
    tmp_path: Path, targets: tuple[str, ...], more: tuple[str, ...]
) -> None:
    library = build(tmp_path / "k.so", KERNEL, *gencode(*targets), *more)
    assert set(cuda_code(str(library))) == set(targets)


def test_a_library_without_gpu_code_and_a_damaged_one(tmp_path: Path) -> None:
    plain = tmp_path / "plain.so"
    run("g++", "-shared", "-fPIC", "-o", plain, "-x", "c++", "/dev/null")
    assert cuda_code(str(plain)) == Counter()
    library = build(tmp_path / "k.so", KERNEL, *gencode("sm_90"))
    data = bytearray(library.read_bytes())
    start = data.index((0xBA55ED50).to_bytes(4, "little"))
    data[start : start + 4] = b"XXXX"  # the first fatbin header no longer is one
    (tmp_path / "broken.so").write_bytes(bytes(data))
    with pytest.raises(FatbinError):
        cuda_code(str(tmp_path / "broken.so"))


def test_torchs_code_is_what_most_of_its_kernels_carry(tmp_path: Path) -> None:
    """A few kernels carry another architecture (torch 2.13's sm_100a, sm_121a): not torch's list."""
    lib = tmp_path / "torch" / "lib"
    lib.mkdir(parents=True)
    objects = []
    for name, targets in (("a", ("sm_80", "sm_90")), ("b", ("sm_80", "sm_90")), ("c", ("sm_80", "sm_90", "sm_100a"))):
        cu = tmp_path / f"{name}.cu"
        cu.write_text(KERNEL.replace("scale", f"scale_{name}"))
        run(nvcc(), "-c", "-Xcompiler", "-fPIC", "-o", tmp_path / f"{name}.o", cu, *gencode(*targets))
        objects.append(tmp_path / f"{name}.o")
    run(nvcc(), "-shared", "-o", lib / "libtorch_cuda.so", *objects, "-cudart", "shared")
    assert cuda_code(str(lib / "libtorch_cuda.so"))["sm_100a"] == 1
    assert torch_cuda_code(str(tmp_path / "torch")) == ("sm_80", "sm_90")


def build_extension(made: Machine, *targets: str) -> None:
    """FA2's extension as nvcc builds it: torch's symbols, and kernels for these architectures."""
    build(made.extension, EXTENSION + KERNEL, f"-L{made.torch_lib}", "-lc10", "-ltorch", *gencode(*targets))


def codes(report: Report) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for f in report.findings:
        found.setdefault(f.code, []).append(f.title)
    return found


def test_an_extension_built_for_another_gpu_is_found_before_it_runs(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
) -> None:
    """FA2 compiled on an RTX 4090 (sm_89 only) and copied to an H100: it imports, and every kernel
    fails with `no kernel image`. The verdict, the finding and the fix say so; built for sm_90, it is fine."""
    build_extension(machine, "sm_89")
    report = judge(collect(str(machine.venv.python), nvml=h100))
    [binary] = report.facts.binaries
    assert binary.cuda_code == ("sm_89",)
    [title] = codes(report)["extension-no-gpu-code"]
    assert "carries no code for GPU 0 (NVIDIA H100 80GB HBM3, sm_90): it is built for sm_89" in title
    [found] = [f for f in report.findings if f.code == "extension-no-gpu-code"]
    assert "FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTN_CUDA_ARCHS='90'" in found.fix[0]  # narrowed to this GPU
    fa2 = report.assessments["fa2"]
    assert not fa2.usable and any("carries no code for GPU 0" in r for r in fa2.reasons)

    build_extension(machine, "sm_80", "sm_90")  # what the fix builds: this GPU's code
    again = judge(collect(str(machine.venv.python), nvml=h100))
    assert "extension-no-gpu-code" not in codes(again)
    assert again.facts.binaries[0].cuda_code == ("sm_80", "sm_90")


def test_a_torch_without_this_gpus_code_names_the_build_that_has_it(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
) -> None:
    """A torch built for sm_80 and sm_90 (a CUDA 12.4 build) on an RTX 5090: SDPA and flex cannot run,
    and the fix is this release's build that carries sm_120."""
    build(machine.torch_lib / "libtorch_cuda.so", KERNEL, *gencode("sm_80", "sm_90"), "-cudart", "shared")
    facts = collect(str(machine.venv.python), nvml=h100)
    assert facts.torch is not None and facts.torch.cuda_code == ("sm_80", "sm_90")
    assert "torch-no-gpu-code" not in codes(judge(facts))  # the H100 runs sm_90

    rtx = judge(with_given_gpu(facts, "RTX 5090"))
    [title] = codes(rtx)["torch-no-gpu-code"]
    assert "torch 2.99.0+cu130 carries no code for GPU 0 (RTX 5090 (given), sm_120)" in title
    [found] = [f for f in rtx.findings if f.code == "torch-no-gpu-code"]
    # the driver (the H100's, CUDA 13.0) runs a CUDA 13.0 build; this release has one with sm_120
    assert "--force-reinstall torch==2.99.0 --index-url https://download.pytorch.org/whl/cu130" in found.fix[0]
    for name in ("sdpa", "flex"):
        assert not rtx.assessments[name].usable, name
    assert rtx.recommendation is not None and not rtx.recommendation.runs_now  # never "Use sdpa" here

    pascal = judge(with_given_gpu(facts, "GTX 1080"))
    [found] = [f for f in pascal.findings if f.code == "torch-no-gpu-code"]
    assert "--index-url https://download.pytorch.org/whl/cu126" in found.fix[0]  # the last build with sm_60


def nvcc_12_8_ptxas() -> Path:
    """The ptxas of NVIDIA's nvidia-cuda-nvcc-cu12 12.8.93 wheel: the one Triton 3.4 and 3.5 bundle."""
    kept = CACHE / "ptxas-12.8.93"
    with one_at_a_time():
        if not kept.exists():
            wheels = CACHE / "wheels"
            pip("download", "--no-deps", "--only-binary=:all:", "nvidia-cuda-nvcc-cu12==12.8.93", "-d", wheels)
            [wheel] = wheels.glob("nvidia_cuda_nvcc_cu12-12.8.93-*.whl")
            with zipfile.ZipFile(wheel) as archive:
                kept.write_bytes(archive.read("nvidia/cuda_nvcc/bin/ptxas"))
    return kept


def make_wheel(
    folder: Path,
    name: str,
    version: str,
    files: dict[str, bytes],
    tag: str = "py3-none-any",
    requires: tuple[str, ...] = (),
) -> Path:
    """A wheel of these files, with its dist-info (Requires-Dist: `requires`) and a RECORD of their hashes."""
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"
    files = {
        **files,
        f"{info}/METADATA": (metadata + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n".encode(),
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    wheel = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return wheel


def triton_wheel(folder: Path, version: str, ptxas: Path) -> Path:
    """A wheel of Triton's files that matter here: its bundled ptxas, at its real path."""
    files = {
        "triton/__init__.py": f"__version__ = {version!r}\n".encode(),
        "triton/backends/nvidia/bin/ptxas": ptxas.read_bytes(),
    }
    return make_wheel(folder, "triton", version, files)


def test_a_triton_ptxas_older_than_the_gpu_points_at_a_newer_one(
    venv: Venv, tmp_path: Path, h100: RecordedNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Triton 3.5 bundles ptxas 12.8, which knows no sm_121: flex attention fails on a DGX Spark
    (triton-lang/triton#8539). The fix users found, TRITON_PTXAS_PATH to a newer ptxas, is printed,
    then applied: the finding is gone."""
    old = nvcc_12_8_ptxas()
    assert release_of(str(old)) == "12.8"
    venv.install(triton_wheel(tmp_path, "3.5.0", old))
    monkeypatch.delenv("TRITON_PTXAS_PATH", raising=False)
    # the machine's CUDA toolkit, named as a build names it (its nvcc on PATH may be a wrapper script)
    monkeypatch.setenv("CUDA_HOME", str(cuda_toolkit()))
    facts = collect(str(venv.python), nvml=h100)
    assert [(p.role, p.release, p.variable) for p in facts.ptxas] == [("ptxas", "12.8", None)]
    assert "triton-ptxas-too-old" not in codes(judge(facts))  # 12.8 knows the H100's sm_90

    spark = judge(with_given_gpu(facts, "GB10"))
    [found] = [f for f in spark.findings if f.code == "triton-ptxas-too-old"]
    assert "ptxas of CUDA 12.8, which knows no sm_121 (CUDA 12.9 is the first that does)" in found.title
    assert not spark.assessments["flex"].usable
    export = found.fix[0]
    assert export.startswith("export TRITON_PTXAS_PATH=") and "ptxas" in export, found.fix

    variable, value = export.split("  #")[0].removeprefix("export ").split("=", 1)
    assert release(release_of(value) or "0") >= (12, 9)  # a real ptxas that knows sm_121
    monkeypatch.setenv(variable, value)
    fixed = with_given_gpu(collect(str(venv.python), nvml=h100), "GB10")
    assert [(p.variable, p.release) for p in fixed.ptxas] == [(None, "12.8"), ("TRITON_PTXAS_PATH", release_of(value))]
    assert "triton-ptxas-too-old" not in codes(judge(fixed))


def test_a_saved_report_keeps_what_the_binaries_carry(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
) -> None:
    """--facts judges a saved machine as this one: the codes travel in the JSON report."""
    from attn_doctor.facts.model import Facts, from_data, to_data

    build_extension(machine, "sm_89")
    facts = collect(str(machine.venv.python), nvml=h100)
    again = from_data(Facts, to_data(facts))
    assert again.binaries[0].cuda_code == ("sm_89",) and again == dataclasses.replace(facts)
    assert codes(judge(again)) == codes(judge(facts))
    assert os.path.exists(machine.extension)


def test_the_rules_agree_with_launches_on_a_real_h100() -> None:
    """scripts/device_gpu_code.sh built one kernel per code with nvcc on an H100 and launched it
    (tests/fixtures/h100-extension-launches.txt): the compatibility rules must say what the GPU did."""
    from attn_doctor.registry.cuda import runs

    text = (FIXTURES / "h100-extension-launches.txt").read_text()
    launches = re.findall(r"^(\w+): launched: (runs|no kernel image[^\n]*\nfails)", text, re.MULTILINE)
    assert len(launches) == 8
    for code, launched in launches:
        assert runs(code, "9.0") == (launched == "runs"), code


def test_torchs_list_from_a_real_libtorch_cuda_is_get_arch_list() -> None:
    """The entry counts of torch 2.11.0+cu130's libtorch_cuda.so, read on the H100 beside
    torch.cuda.get_arch_list() (tests/fixtures/h100-torch-archs.txt)."""
    from attn_doctor.facts.fatbin import most_carried

    lines = dict(line.split(":", 1) for line in (FIXTURES / "h100-torch-archs.txt").read_text().splitlines())
    counts = ast.literal_eval(lines["every entry"].strip())
    assert counts["sm_121a"] == 1 and counts["sm_90"] == 444
    assert list(most_carried(counts)) == ast.literal_eval(lines["get_arch_list"].strip())


def test_a_kept_wheel_is_proven_to_fit_before_it_is_installed(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`install fa2 --find-links DIR` with a wheel built once on the cluster: its name says the release
    and the Python, not the torch nor the GPU. Read before installing, as check reads installed files:
    one built for this torch and sm_90 is chosen; one built for sm_89 or against another torch is
    passed over, said why, and the plan compiles instead."""
    from attn_doctor.actions.install import plan_install
    from attn_doctor.actions.recipes.context import InstallRequest
    from attn_doctor.registry.recipes import FA2_VERSION

    monkeypatch.setenv("CUDA_HOME", str(cuda_toolkit()))
    tag = run(machine.venv.python, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')").stdout
    wheelhouse = tmp_path / "wheelhouse"

    def kept_wheel(*targets: str) -> None:
        build_extension(machine, *targets)
        shutil.rmtree(wheelhouse, ignore_errors=True)
        wheelhouse.mkdir()
        python = tag.strip()
        files = {machine.extension.name: machine.extension.read_bytes(), "flash_attn/__init__.py": b""}
        make_wheel(wheelhouse, "flash_attn", FA2_VERSION, files, f"{python}-{python}-linux_x86_64")

    def planned() -> tuple[list[str], list[str]]:
        facts = collect(str(machine.venv.python), nvml=h100)
        job = plan_install(facts, InstallRequest("fa2", find_links=str(wheelhouse)), here=True)
        return [" ".join(s.describe() for s in job.plan.steps)], list(job.plan.notes)

    kept_wheel("sm_80", "sm_90")
    steps, notes = planned()
    assert not any("FLASH_ATTENTION_FORCE_BUILD" in s for s in steps), steps  # no compile
    assert any("proven before installing" in n for n in notes), notes

    kept_wheel("sm_89")  # built on an RTX 4090
    steps, notes = planned()
    assert any("FLASH_ATTENTION_FORCE_BUILD" in s for s in steps), steps  # compiles instead
    assert any("passed over" in n and "carries no code for sm_90 (it has sm_89)" in n for n in notes), notes

    kept_wheel("sm_90")
    machine.build_torch(set_device_argument="signed char")  # this torch changed under the kept build
    steps, notes = planned()
    assert any("FLASH_ATTENTION_FORCE_BUILD" in s for s in steps), steps
    assert any("passed over" in n and "torch symbol(s) torch 2.99.0+cu130 lacks" in n for n in notes), notes


def test_a_fatbin_section_of_padding_or_noise_costs_no_more_than_its_reading(tmp_path: Path) -> None:
    """8 MiB of zero padding is skipped in chunks, not 8 bytes a step; noise is a damaged file."""
    plain = tmp_path / "plain.so"
    run("g++", "-shared", "-fPIC", "-o", plain, "-x", "c++", "/dev/null")
    for name, fill in (("zeros", b"\0"), ("noise", b"\xff")):
        section = tmp_path / f"{name}.bin"
        section.write_bytes(fill * (8 << 20))
        library = tmp_path / f"{name}.so"
        run("objcopy", "--add-section", f".nv_fatbin={section}", plain, library)
        if name == "zeros":
            assert cuda_code(str(library)) == Counter()
        else:
            with pytest.raises(FatbinError):
                cuda_code(str(library))


def test_a_kept_sageattention_built_from_its_broken_tag_is_passed_over(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SageAttention 2.2.0 built from its v2.2.0 tag returns garbage on Hopper, and its version says
    nothing: the wheel's own sm90_compile.py tells it, read before installing, as check tells it once
    installed. The build of the fixed commit is chosen; the tag's is passed over, and the plan compiles."""
    from attn_doctor.actions.install import plan_install
    from attn_doctor.actions.recipes.context import InstallRequest

    monkeypatch.setenv("CUDA_HOME", str(cuda_toolkit()))
    build_extension(machine, "sm_90")  # a compiled extension for this torch and GPU
    python = run(machine.venv.python, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
    tag = python.stdout.strip()
    facts = collect(str(machine.venv.python), nvml=h100)

    def planned(compile_py: str) -> tuple[list[str], list[str]]:
        wheelhouse = tmp_path / compile_py
        wheelhouse.mkdir()
        files = {
            f"sageattention/_qattn_sm90{machine.extension.suffix}": machine.extension.read_bytes(),
            "sageattention/__init__.py": b"",
            "sageattention/sm90_compile.py": (FIXTURES / "sage" / compile_py).read_bytes(),
        }
        make_wheel(wheelhouse, "sageattention", "2.2.0", files, f"{tag}-{tag}-linux_x86_64")
        job = plan_install(facts, InstallRequest("sage", find_links=str(wheelhouse)), here=True)
        return [s.describe() for s in job.plan.steps], list(job.plan.notes)

    steps, notes = planned("sm90_compile-ff71e1e.py")
    assert len(steps) == 1 and "sageattention-2.2.0-" in steps[0], steps  # the proven file, by its path
    assert any("proven before installing" in n for n in notes), notes
    steps, notes = planned("sm90_compile-v2.2.0.py")
    assert any("compile SageAttention" in s for s in steps), steps
    assert any("passed over" in n and "built from its v2.2.0 tag" in n for n in notes), notes


def test_a_prebuilt_fa3_wheel_is_proven_and_planned_instead_of_a_compile(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`install fa3 --find-links DIR` with a prebuilt FA3 wheel named as PyTorch's index names them
    (flash_attn_3-3.0.0-cp39-abi3-…: the stable ABI, any CPython from 3.9; its name says neither the
    torch nor the GPUs): one carrying sm_90a code for this torch is installed without compiling; one
    built for Ampere only is passed over, said why, and the plan compiles FA3 narrowed as before."""
    from attn_doctor.actions.install import plan_install
    from attn_doctor.actions.recipes.context import InstallRequest
    from attn_doctor.registry.recipes import FA3_VERSION

    monkeypatch.setenv("CUDA_HOME", str(cuda_toolkit()))
    wheelhouse = tmp_path / "wheelhouse"

    def prebuilt(*targets: str) -> None:
        build_extension(machine, *targets)
        shutil.rmtree(wheelhouse, ignore_errors=True)
        wheelhouse.mkdir()
        files = {"flash_attn_3/_C.abi3.so": machine.extension.read_bytes(), "flash_attn_3/__init__.py": b""}
        make_wheel(wheelhouse, "flash_attn_3", FA3_VERSION, files, "cp39-abi3-manylinux_2_28_x86_64")

    def planned() -> tuple[str, list[str]]:
        facts = collect(str(machine.venv.python), nvml=h100)
        # PyTorch's index "mirrored" where nothing answers: the wheelhouse alone is read here
        # (tests/test_prebuilt_sources.py fetches from an index)
        nowhere = (("pytorch", "http://127.0.0.1:9/whl"),)
        job = plan_install(facts, InstallRequest("fa3", find_links=str(wheelhouse), mirrors=nowhere), here=True)
        return " ".join(s.describe() for s in job.plan.steps), list(job.plan.notes)

    prebuilt("sm_90a")
    steps, notes = planned()
    assert "compile FA3" not in steps and f"/flash_attn_3-{FA3_VERSION}-cp39-abi3" in steps, steps  # by its path
    assert any("prebuilt, installed without compiling" in n for n in notes), notes
    assert any("proven before installing" in n for n in notes), notes

    prebuilt("sm_80")  # an Ampere-only build: FA3's sm80 kernels, none for this H100
    steps, notes = planned()
    assert "compile FA3" in steps, steps
    assert any("passed over" in n and "carries no code for sm_90" in n for n in notes), notes

    shutil.rmtree(wheelhouse)
    wheelhouse.mkdir()  # nothing kept, the index not reached: the plan compiles, and says how else
    steps, notes = planned()
    assert "compile FA3" in steps, steps
    assert any("PyTorch's own index (pytorch) not reached" in n and "--find-links" in n for n in notes), notes
    facts = collect(str(machine.venv.python), nvml=h100)  # a plan for that machine, made elsewhere: where to get it
    notes = list(plan_install(facts, InstallRequest("fa3", force=True), here=False).plan.notes)
    assert any("--index-url https://download.pytorch.org/whl/cu130" in n for n in notes), notes
