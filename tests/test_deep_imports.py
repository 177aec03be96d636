"""`check --deep`: real imports in child processes, with real ELF extensions built by the system
compiler standing in for a CUDA build of FA2 that no longer fits its torch."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from attn_doctor.facts.collect import collect
from attn_doctor.facts.imports import classify, import_one
from attn_doctor.report import judge
from tests.conftest import RealPackages, RecordedNvml, Venv, run

# c10::cuda::SetDevice(int), as a torch of another release would have exported it
MISSING_SYMBOL = "_ZN3c104cuda9SetDeviceEi"


def extension_suffix(venv: Venv) -> str:
    return run(venv.python, "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))").stdout.strip()


def compile_shared(source: str, output: Path, *flags: str) -> None:
    c_file = output.with_suffix(".c")
    c_file.write_text(source)
    run("cc", "-shared", "-fPIC", "-o", output, c_file, *flags)
    c_file.unlink()


def fa2_with_torch(venv: Venv, real: RealPackages) -> None:
    """FA2's real files in a venv that also sees the real (CPU) torch of the build venv."""
    venv.install(real.fa2_wheel)
    torch_site = run(real.torch_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (venv.site / "torch-from-build-venv.pth").write_text(torch_site.stdout.strip() + "\n")


@pytest.fixture(scope="module")
def compiler() -> None:
    if subprocess.run(["cc", "--version"], capture_output=True).returncode != 0:
        pytest.fail("a C compiler (cc) is needed: .ci/run installs build-essential")


def test_undefined_symbol(venv: Venv, real: RealPackages, h100: RecordedNvml, compiler: None) -> None:
    fa2_with_torch(venv, real)
    compile_shared(
        f"extern void {MISSING_SYMBOL}(int);\n"
        f"void *PyInit_flash_attn_2_cuda(void) {{ {MISSING_SYMBOL}(0); return 0; }}\n",
        venv.site / f"flash_attn_2_cuda{extension_suffix(venv)}",
    )
    report = judge(collect(str(venv.python), deep=True, nvml=h100))
    results = {r.module: r for r in report.facts.imports}
    assert results["torch"].outcome == "ok"
    assert results["flash_attn"].outcome == "undefined-symbol"
    assert MISSING_SYMBOL in results["flash_attn"].detail
    [found] = [f for f in report.findings if f.code == "import-undefined-symbol"]
    assert "built for another torch than torch 2.13.0" in found.title
    assert found.fix[0].startswith("FLASH_ATTENTION_FORCE_BUILD=TRUE")  # never the same wheel again
    assert "flash-attn==2.8.3.post2  # no release wheel for torch 2.13.0+cpu: compiles against it" in found.fix[0]
    # the extension is there now, so it is not reported missing
    assert "fa2-extension-missing" not in {f.code for f in report.findings}


def test_missing_cuda_library(venv: Venv, real: RealPackages, tmp_path: Path, compiler: None) -> None:
    fa2_with_torch(venv, real)
    # a CUDA runtime this machine lacks (it may have CUDA 13's): as an FA2 built for cu12 meets a cu13 box
    known = run("ldconfig", "-p").stdout
    runtime = next(n for n in ("libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2") if n not in known)
    libs = tmp_path / "libs"
    libs.mkdir()
    compile_shared("int cudaGetDeviceCount(int *n) { *n = 0; return 0; }\n", libs / runtime, f"-Wl,-soname,{runtime}")
    compile_shared(
        "int cudaGetDeviceCount(int *);\n"
        "void *PyInit_flash_attn_2_cuda(void) { int n; cudaGetDeviceCount(&n); return 0; }\n",
        venv.site / f"flash_attn_2_cuda{extension_suffix(venv)}",
        f"-L{libs}",
        f"-l:{runtime}",
    )
    (libs / runtime).unlink()  # linked against it, then it is gone
    result = import_one(str(venv.python), "flash_attn")
    assert result.outcome == "missing-cuda-library"
    assert f"{runtime}: cannot open shared object file" in result.detail


def test_fa4_without_the_cute_dsl(venv: Venv, real: RealPackages) -> None:
    """FA4's wheel alone (no nvidia-cutlass-dsl): the import fails on `cutlass`, as seen on the H100."""
    fa2_with_torch(venv, real)  # torch, for FA4's own imports
    venv.uninstall("flash-attn")
    venv.install(real.fa4_wheel)
    result = import_one(str(venv.python), "flash_attn.cute")
    assert result.outcome == "failed"
    assert "No module named 'cutlass'" in result.detail


def test_timeout(venv: Venv) -> None:
    (venv.site / "slow_backend.py").write_text("import time\ntime.sleep(30)\n")
    result = import_one(str(venv.python), "slow_backend", timeout=1.0)
    assert result.outcome == "timeout" and result.seconds == 1.0


@pytest.mark.parametrize(
    ("stderr", "outcome"),
    [
        (
            "ImportError: /x/flash_attn_2_cuda.cpython-312-x86_64-linux-gnu.so: "
            "undefined symbol: _ZN3c104cuda9SetDeviceEi",
            "undefined-symbol",
        ),
        (
            "ImportError: libcudart.so.12: cannot open shared object file: No such file or directory",
            "missing-cuda-library",
        ),
        (
            "RuntimeError: CUDA error: no kernel image is available for execution on the device",
            "unsupported-gpu",
        ),
        ("ModuleNotFoundError: No module named 'cutlass'", "failed"),
        ("", "failed"),
    ],
)
def test_classify(stderr: str, outcome: str) -> None:
    assert classify("Traceback (most recent call last):\n  ...\n" + stderr)[0] == outcome
