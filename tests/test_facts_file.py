"""`check --facts`: reports recorded on the real H100 judged here, and the rules on their facts."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from attn_doctor.actions.install import plan_install
from attn_doctor.actions.recipes.context import InstallRequest
from attn_doctor.facts.model import Facts, FactsError, Gpu, Torch
from attn_doctor.facts.saved import load_facts
from attn_doctor.render.json import render_json
from attn_doctor.render.markdown import render_markdown
from attn_doctor.report import judge
from tests.conftest import FIXTURES, run

H100 = FIXTURES / "h100-check.json"  # `check --format json` on the H100 (scripts/device_check.sh)
H100_COLLIDING = FIXTURES / "h100-fa2-over-fa4.json"  # the same machine, FA2 installed over FA4


def doctor(*args: str | Path) -> tuple[int, str, str]:
    done = run(sys.executable, "-m", "attn_doctor", *args, check=False)
    return done.returncode, done.stdout, done.stderr


def codes(facts: Facts) -> set[str]:
    return {f.code for f in judge(facts).findings}


def test_h100_report_renders() -> None:
    code, out, err = doctor("check", "--facts", H100)
    assert (code, err) == (0, "")
    assert "GPU 0: NVIDIA H100 80GB HBM3, Hopper sm_90 (compute capability 9.0), 80 GiB" in out
    assert "NVIDIA driver 580.159.04, CUDA up to 13.0" in out
    assert "torch 2.11.0+cu130, CUDA 13.0" in out
    assert "Flex Attention (torch.nn.attention.flex_attention)" in out and "Triton (triton) 3.6.0" in out
    assert "healthy: 0 error(s)" in out


def test_verbose_shows_evidence() -> None:
    _, plain, _ = doctor("check", "--facts", H100)
    _, verbose, _ = doctor("check", "--facts", H100, "-v")
    uuid = f"uuid {json.loads(H100.read_text())['gpus'][0]['uuid']}"
    assert uuid not in plain and uuid in verbose


def test_colliding_h100_report() -> None:
    code, out, _ = doctor("check", "--facts", H100_COLLIDING, "--format", "json")
    assert code == 1
    data = json.loads(out)
    found = {f["code"]: f for f in data["findings"]}
    assert set(found) == {"fa2-extension-missing", "fa4-files-overwritten", "fa2-uninstall-breaks-fa4"}
    assert found["fa4-files-overwritten"]["fix"] == [
        "attn-doctor fix-shadow --python /tmp/collide/bin/python",
        "# or by hand:",
        "/tmp/collide/bin/python -m pip install --force-reinstall --no-deps flash-attn-4==4.0.0b36",
    ]
    assert data["gpus"][0]["compute_capability"] == "9.0" and data["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert data["torch"]["version"] == "2.11.0+cu130"


def test_fail_on_levels() -> None:
    assert doctor("check", "--facts", H100_COLLIDING, "--fail-on", "never")[0] == 0
    assert doctor("check", "--facts", H100, "--fail-on", "info")[0] == 0
    facts = load_facts(H100_COLLIDING)
    assert judge(facts).fails(None) is False


def test_json_round_trip(tmp_path: Path) -> None:
    facts = load_facts(H100_COLLIDING)
    saved = tmp_path / "again.json"
    saved.write_text(render_json(judge(facts), 1))
    assert load_facts(saved) == facts


def test_markdown_for_a_bug_report() -> None:
    code, out, _ = doctor("check", "--facts", H100_COLLIDING, "--format", "markdown")
    assert code == 1
    assert "### GPU" in out and "- ✓ GPU 0: NVIDIA H100 80GB HBM3" in out
    assert "**error** `fa4-files-overwritten`" in out
    assert (
        "  ```sh\n  attn-doctor fix-shadow --python /tmp/collide/bin/python\n  # or by hand:\n"
        "  /tmp/collide/bin/python -m pip install --force-reinstall --no-deps flash-attn-4==4.0.0b36\n  ```"
    ) in out
    assert "evidence" not in out and "evidence" in render_markdown(judge(load_facts(H100_COLLIDING)), verbose=True)


def test_deep_report_from_the_h100() -> None:
    facts = load_facts(FIXTURES / "h100-check-deep.json")
    assert {(i.module, i.outcome) for i in facts.imports} == {("torch", "ok"), ("triton", "ok")}
    code, out, _ = doctor("check", "--facts", FIXTURES / "h100-check-deep.json")
    assert code == 0 and "import torch (" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"not json", "is not JSON"),
        (b"\xff\xfe\x00garbage", "is not UTF-8"),
        (b'{"gpus": []}', "is not an attn-doctor report"),
        (b'{"schema": "attn-doctor/report-9"}', "this attn-doctor reads attn-doctor/report-1"),
        (b'{"schema": "attn-doctor/report-1", "gpus": "none"}', "expected a list"),
        (b'{"schema": "attn-doctor/report-1", "gpus": []}', "missing field 'driver'"),
    ],
)
def test_bad_facts_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_bytes(content)
    code, out, err = doctor("check", "--facts", path)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_facts_wrong_field_type(tmp_path: Path) -> None:
    data = json.loads(H100.read_text())
    data["gpus"][0]["memory_mib"] = "lots"
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FactsError, match=r"Facts.gpus\[0\].memory_mib: expected int"):
        load_facts(path)


def test_facts_cannot_mix_with_python() -> None:
    code, _, err = doctor("check", "--facts", H100, "--python", sys.executable)
    assert code == 2 and "cannot be combined" in err


# The torch/driver rules, on the H100's facts with one thing changed.


def with_torch(facts: Facts, **changes: Any) -> Facts:
    assert facts.torch is not None
    return dataclasses.replace(facts, torch=dataclasses.replace(facts.torch, **changes))


def test_torch_cuda_against_driver() -> None:
    h100 = load_facts(H100)
    old_driver = dataclasses.replace(h100, driver=dataclasses.replace(h100.driver, cuda_driver_version="12.8"))
    assert "torch-cuda-too-new" in codes(old_driver)  # cu130 torch on a CUDA 12.8 driver
    assert "torch-cuda-minor-newer" in codes(with_torch(old_driver, cuda="12.9"))
    # no driver finding for a cu126 torch; only the H100's nvcc 13.0 no longer matches it
    assert codes(with_torch(old_driver, cuda="12.6")) == {"nvcc-torch-cuda-mismatch"}
    assert not codes(h100)


def test_torch_build_against_the_gpu() -> None:
    h100 = load_facts(H100)
    assert "torch-cpu-only" in codes(with_torch(h100, cuda=None))
    assert "torch-wrong-gpu-vendor" in codes(with_torch(h100, cuda=None, hip="6.4"))
    mi300 = Gpu(index=0, vendor="amd", name="AMD Instinct MI300X", architecture="CDNA3", gfx_target="gfx942")
    amd_machine = dataclasses.replace(h100, gpus=(mi300,))
    assert "torch-wrong-gpu-vendor" in codes(amd_machine)  # a CUDA torch on an AMD GPU
    assert "torch-wrong-gpu-vendor" not in codes(with_torch(amd_machine, cuda=None, hip="6.4"))


def test_no_torch_and_no_gpu() -> None:
    h100 = load_facts(H100)
    bare = dataclasses.replace(
        h100, torch=None, gpus=(), driver=dataclasses.replace(h100.driver, nvidia_status="no-gpu")
    )
    assert {"torch-missing", "no-gpu"} <= codes(bare)
    hidden = dataclasses.replace(
        h100, gpus=(), driver=dataclasses.replace(h100.driver, hidden_gpus=1, cuda_visible_devices="")
    )
    assert "gpus-hidden" in codes(hidden)
    assert "gpus-hidden" not in codes(h100)


def test_mig_and_nvcc_mismatch() -> None:
    h100 = load_facts(H100)
    mig = dataclasses.replace(h100, gpus=(dataclasses.replace(h100.gpus[0], mig=True),))
    assert "mig-enabled" in codes(mig)
    cu12_nvcc = dataclasses.replace(h100, toolchain=dataclasses.replace(h100.toolchain, nvcc="12.8"))
    assert "nvcc-torch-cuda-mismatch" in codes(cu12_nvcc)
    no_tools = dataclasses.replace(h100, toolchain=dataclasses.replace(h100.toolchain, ninja=None, nvcc_path=None))
    [missing] = [f for f in judge(no_tools).findings if f.code == "build-tool-missing"]
    assert missing.title == "missing for source builds: nvcc, ninja"


@pytest.mark.parametrize("python", [{"pip_version": None}, {"uv_managed": True}], ids=["no pip", "made by uv"])
def test_uv_venvs_get_uv_in_fixes_as_in_install_plans(python: dict[str, object]) -> None:
    """check's fix commands and install's plan make one choice of installer (uv in a uv-made venv)."""
    facts = load_facts(H100_COLLIDING)
    uv_venv = dataclasses.replace(facts, python=dataclasses.replace(facts.python, **python))  # type: ignore[arg-type]
    [overwritten] = [f for f in judge(uv_venv).findings if f.code == "fa4-files-overwritten"]
    uv = "/usr/local/bin/uv pip install --python /tmp/collide/bin/python"
    assert overwritten.fix[-1] == f"{uv} --force-reinstall --no-deps flash-attn-4==4.0.0b36"
    plan = plan_install(uv_venv, InstallRequest("fa4", force=True), here=False).plan
    assert " ".join(plan.steps[0].argv).startswith(uv)  # type: ignore[union-attr]


def test_torch_version_text_is_what_the_probe_parses(tmp_path: Path) -> None:
    """The H100's torch/version.py, as recorded there, read the way the probe reads it."""
    from attn_doctor.facts import probe

    torch_dir = tmp_path / "torch"
    torch_dir.mkdir()
    (torch_dir / "version.py").write_text(
        json.loads((FIXTURES / "h100-ground-truth.json").read_text())["torch_version_py"]
    )
    read = probe.torch_version({"kind": "package", "origin": str(torch_dir / "__init__.py")})
    assert read == {
        "location": str(torch_dir),
        "version": "2.11.0+cu130",
        "cuda": "13.0",
        "hip": None,
        "git_version": "70d99e998b4955e0049d13a98d77ae1b14db1f45",
    }
    assert Torch(**read).build == "CUDA 13.0"


def test_h100_extension_built_for_its_torch_reads_clean() -> None:
    """On the H100: an extension built with torch.utils.cpp_extension against the installed
    torch 2.11.0+cu130, placed as FA2's flash_attn_2_cuda (scripts/device_abi.sh)."""
    facts = load_facts(FIXTURES / "h100-extension-check.json")
    [binary] = facts.binaries
    assert (binary.torch_symbols, binary.missing_symbols, binary.missing_libraries) == (16, (), ())
    assert (binary.abi, binary.torch_abi) == ("cxx11", "cxx11")
    code, out, _ = doctor("check", "--facts", FIXTURES / "h100-extension-check.json")
    assert code == 0
    assert "all 16 torch symbols exported by torch 2.11.0+cu130" in " ".join(out.split())  # rich wraps at 80
    assert not [f for f in judge(facts).findings if f.code.startswith("abi-")]
