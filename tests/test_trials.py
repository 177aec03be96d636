"""`attn-doctor verify` and `bench` on this CPU machine: the real torch (CPU build) in a real
venv, SDPA as the working backend, and stand-in FA3 packages installed with pip that compute
attention wrongly, return NaN, lack a kernel, hang or crash: verify must tell each apart, and
must pass the stand-in that computes it right (packed sequences included)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from attn_doctor.facts.measured import Measured, Timing, load
from attn_doctor.facts.saved import load_facts
from attn_doctor.registry.backends import by_name
from attn_doctor.report import CheckRequest, judge
from attn_doctor.trials.bench import STANDARD, Shape, parse_shape
from attn_doctor.trials.verify import cases
from attn_doctor.workload import Workload
from tests.conftest import FIXTURES, RealPackages, Venv, doctor, pypi_wheel

# An FA3-shaped module (`flash_attn_interface`, as FA3's hopper/ build installs it) written in
# plain torch. BODY is the attention itself; each stand-in breaks it in its own way.
STAND_IN = """
import math, os, time
import torch

def _attention(q, k, v, causal, segments=None):
    groups = q.shape[-2] // k.shape[-2]
    k = k.repeat_interleave(groups, dim=-2)
    v = v.repeat_interleave(groups, dim=-2)
    scores = torch.einsum("...shd,...thd->...hst", q.float(), k.float()) * SCALE / math.sqrt(q.shape[-1])
    s = q.shape[-3]
    allowed = torch.ones(s, s, dtype=torch.bool)
    if causal:
        allowed = torch.tril(allowed)
    if segments is not None:
        allowed = allowed & (segments[:, None] == segments[None, :])
    scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.einsum("...hst,...thd->...shd", torch.softmax(scores, dim=-1), v.float()).to(q.dtype)
    BREAK
    return out

def flash_attn_func(q, k, v, causal=False, **kwargs):
    return _attention(q, k, v, causal)

def flash_attn_varlen_func(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                           max_seqlen_k=None, causal=False, **kwargs):
    lengths = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).long()
    segments = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    return _attention(q, k, v, causal, segments)
"""

STAND_INS = {
    "right": ("1.0", "pass"),
    "unscaled": ("1.3", "pass"),  # forgets nothing but scales the scores by 1.3: wrong
    "nan": ("1.0", "out = out * float('nan')"),
    "no-kernel": ("1.0", "raise RuntimeError('CUDA error: no kernel image is available for execution on the device')"),
    "hangs": ("1.0", "time.sleep(3600)"),
    "aborts": ("1.0", "os.abort()"),
}


def make_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A real wheel (zip, METADATA, WHEEL, RECORD with hashes) of pure-Python files."""
    dist = f"{name.replace('-', '_')}-{version}"
    contents = {
        **files,
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in contents.items():
            archive.writestr(path, text)
        archive.writestr(f"{dist}.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


@pytest.fixture
def torch_venv(venv: Venv, real: RealPackages) -> Venv:
    venv.see_packages_of(real.torch_python)
    return venv


def with_fa3(venv: Venv, tmp_path: Path, kind: str) -> Venv:
    scale, broken = STAND_INS[kind]
    source = STAND_IN.replace("SCALE", scale).replace("BREAK", broken)
    venv.install(make_wheel(tmp_path, "flash-attn-3", "3.0.0", {"flash_attn_interface.py": source}))
    return venv


def verify_json(venv: Venv, *args: str) -> tuple[int, dict[str, dict[str, object]]]:
    code, out, err = doctor("verify", *args, "--python", venv.python, "--format", "json")
    assert out, err
    data = json.loads(out)
    return code, {b["backend"]: b for b in data["backends"]}


def statuses(backend: dict[str, object]) -> set[str]:
    return {c["status"] for c in backend["cases"]}  # type: ignore[attr-defined]


def test_sdpa_passes_against_the_float32_reference(torch_venv: Venv) -> None:
    code, found = verify_json(torch_venv, "sdpa")
    assert code == 0
    assert statuses(found["sdpa"]) == {"passed"}
    for case in found["sdpa"]["cases"]:  # type: ignore[attr-defined]
        limit = 5e-3 if case["case"].startswith("fp16") else 3e-2
        assert set(case["errors"]) == {"out", "dq", "dk", "dv"}
        assert 0 < max(case["errors"].values()) < limit  # a real error figure, inside the tolerance


def test_a_right_stand_in_passes_every_case_packed_sequences_included(torch_venv: Venv, tmp_path: Path) -> None:
    code, found = verify_json(with_fa3(torch_venv, tmp_path, "right"), "fa3")
    assert code == 0, found
    assert statuses(found["fa3"]) == {"passed"}
    assert any("packed" in c["case"] for c in found["fa3"]["cases"])  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("unscaled", "wrong", "relative error"),
        ("nan", "wrong", "NaN or Inf"),
        ("no-kernel", "missing-kernel", "no kernel image"),
        ("aborts", "crashed", ""),
    ],
)
def test_a_broken_backend_is_caught_and_fails_the_command(
    torch_venv: Venv, tmp_path: Path, kind: str, status: str, message: str
) -> None:
    code, found = verify_json(with_fa3(torch_venv, tmp_path, kind), "fa3", "sdpa")
    assert code == 1  # check calls an installed, importable FA3 usable: verify proves it is not
    assert statuses(found["fa3"]) == {status}
    assert all(message in c["message"] for c in found["fa3"]["cases"])  # type: ignore[attr-defined]
    assert statuses(found["sdpa"]) == {"passed"}  # one backend's crash spares the others


def test_a_hanging_backend_times_out(torch_venv: Venv, tmp_path: Path) -> None:
    code, found = verify_json(with_fa3(torch_venv, tmp_path, "hangs"), "fa3", "--timeout", "6")
    assert code == 1
    assert statuses(found["fa3"]) == {"timed-out"}


def test_the_text_report_names_the_failure(torch_venv: Venv, tmp_path: Path) -> None:
    code, out, _ = doctor("verify", "fa3", "--python", with_fa3(torch_venv, tmp_path, "unscaled").python)
    assert code == 1
    assert "fa3      0/6 passed   FAILED" in out and "WRONG" in out and "relative error" in out


def test_a_backend_check_calls_unusable_is_run_and_says_why(torch_venv: Venv) -> None:
    """PyPI's sageattention 1.0.6 (SageAttention 1): verify runs what is installed, and under its
    failure says what `check` says of it and the fix, without failing the command for it."""
    torch_venv.install(pypi_wheel("sageattention==1.0.6"))
    code, out, _ = doctor("verify", "sage", "--python", torch_venv.python)
    assert code == 0, out
    assert "check calls it unusable: sageattention 1.0.6 is SageAttention 1 (Triton only), not 2.x" in out
    assert "fix: attn-doctor install sage" in out
    code, found = verify_json(torch_venv, "sage", "sdpa")
    assert found["sage"]["usable_per_check"] is False and found["sdpa"]["check_reasons"] == []
    assert "SageAttention 1" in found["sage"]["check_reasons"][0]  # type: ignore[index]


def test_flex_on_a_cpu_has_no_backward_kernel(torch_venv: Venv) -> None:
    """A real missing kernel: torch's flex attention has no CPU backward."""
    code, found = verify_json(torch_venv, "flex")
    assert code == 1 and statuses(found["flex"]) == {"missing-kernel"}


def test_sage_is_verified_forward_only_with_its_own_tolerance() -> None:
    sage = cases(by_name()["sage"], gpu=True)
    assert all(not c.backward and c.tolerance == 8e-2 for c in sage)
    assert all(c.backward for c in cases(by_name()["fa4"], gpu=True))
    assert any(c.lengths for c in cases(by_name()["fa4"], gpu=True))
    assert not any(c.lengths for c in cases(by_name()["sdpa"], gpu=True))  # no varlen API


def test_model_head_dims_are_added() -> None:
    assert any(c.head_dim == 256 for c in cases(by_name()["fa4"], gpu=True, head_dims=(256,)))


def test_unknown_backend_and_bad_shape_are_one_line() -> None:
    code, _, err = doctor("verify", "fa5")
    assert code == 2 and "no backend fa5" in err and err.count("\n") == 1
    code, _, err = doctor("bench", "--shape", "4,4096,16")
    assert code == 2 and "B,S,H,D" in err and err.count("\n") == 1


def test_bench_times_the_working_backends_and_saves_them(torch_venv: Venv, tmp_path: Path) -> None:
    with_fa3(torch_venv, tmp_path, "unscaled")
    saved = tmp_path / "bench.json"
    args = ("--shape", "1,128,2,32", "--shape", "1,256,2,32", "--repeats", "2", "--output", str(saved))
    code, out, err = doctor("bench", "sdpa", "fa3", "--python", torch_venv.python, *args)
    assert code == 0, err
    measured = load(saved)
    assert {(t.backend, t.shape, t.mode) for t in measured.timings} == {
        ("sdpa", shape, mode) for shape in ("1x128x2x32", "1x256x2x32") for mode in ("fwd", "fwd+bwd")
    }
    assert all(t.ms > 0 and t.tflops > 0 for t in measured.timings)
    assert not any(t.host_bound for t in measured.timings)  # a CPU has no queue to run ahead of the host
    assert [b for b, _ in measured.failed] == ["fa3"]  # wrong results are not worth timing
    assert "not timed: fa3: not working here (wrong" in out


def test_a_host_bound_figure_is_marked_and_explained(tmp_path: Path) -> None:
    """The kernel says which modes it timed queued behind a spin (trials/kernel.py timed_ms); the
    figure is the GPU's, and the table marks it and says what it means for a training step. FA3's
    fwd+bwd at 4x1024x16x128 on the H100: 303 TFLOP/s by its kernels, the host issued it at ~79."""
    from rich.console import Console

    from attn_doctor.facts.measured import dumps
    from attn_doctor.render.trials import render_measured
    from attn_doctor.trials.run import _parse

    line = json.dumps({"case": "4x1024x16x128", "status": "timed", "ms": {"fwd": 0.049, "fwd+bwd": 0.198},
                       "host_bound": ["fwd+bwd"]})  # fmt: skip
    outcome = _parse("fa3", line)
    assert outcome is not None and outcome.host_bound == ("fwd+bwd",)

    def shown(*timings: Timing) -> str:
        saved = tmp_path / "bench.json"  # through the file `check --bench` reads
        saved.write_text(dumps(Measured("NVIDIA H100 80GB HBM3", "9.0", "2.11.0+cu130", "bfloat16", True, timings)))
        console = Console(record=True, width=200)
        render_measured(load(saved), console)
        return console.export_text()

    shape = "4x1024x16x128"
    marked = shown(Timing("fa3", shape, "fwd", 0.049, 350.0), Timing("fa3", shape, "fwd+bwd", 0.198, 303.0, True))
    assert "303*" in marked and "350*" not in marked and "host-bound: the host issued these calls" in marked
    plain = shown(Timing("fa3", shape, "fwd+bwd", 0.198, 303.0))
    assert "303*" not in plain and "host-bound" not in plain


def test_flops_are_counted_as_flashattention_counts_them() -> None:
    shape = Shape(4, 4096, 16, 128)
    assert shape.flops("fwd", causal=False) == 4 * 4 * 16 * 4096**2 * 128
    assert shape.flops("fwd") == shape.flops("fwd", causal=False) / 2
    assert shape.flops("fwd+bwd") == 3.5 * shape.flops("fwd")
    assert len(STANDARD) == 6 and parse_shape("4,8192,16,64") == Shape(4, 8192, 16, 64)


WITH_FA2 = FIXTURES / "h100-extension-check.json"  # the real H100 with a working FA2 build


def measured(gpu: str, fa2: float, sdpa: float) -> Measured:
    shape = "4x8192x16x128"
    timings = (Timing("fa2", shape, "fwd+bwd", 1.0, fa2), Timing("sdpa", shape, "fwd+bwd", 1.0, sdpa))
    return Measured(gpu, "9.0", "2.11.0+cu130", "bfloat16", True, timings)


def test_check_ranks_by_the_measurement_of_this_machine() -> None:
    facts = load_facts(WITH_FA2)
    # as expected without one: on Hopper FA2 ranks after SDPA (h100-bench-five.json)
    assert judge(facts).recommendation.backend == "sdpa"  # type: ignore[union-attr]
    gpu = facts.gpus[0].name
    faster_sdpa = judge(facts, CheckRequest(workload=Workload(), measured=measured(gpu, 400.0, 500.0))).recommendation
    assert faster_sdpa is not None and faster_sdpa.backend == "sdpa"
    assert any("measured here" in r and "sdpa 500, fa2 400" in r for r in faster_sdpa.reasons)
    faster_fa2 = judge(facts, CheckRequest(measured=measured(gpu, 600.0, 500.0))).recommendation
    assert faster_fa2 is not None and faster_fa2.backend == "fa2"
    elsewhere = judge(facts, CheckRequest(measured=measured("NVIDIA A100-SXM4-80GB", 400.0, 500.0))).recommendation
    assert elsewhere is not None and elsewhere.backend == "sdpa"
    assert any("not this machine's GPU: not used" in r for r in elsewhere.reasons)


def test_check_bench_reads_a_bench_file(tmp_path: Path) -> None:
    from attn_doctor.facts.measured import dumps

    bench = tmp_path / "bench.json"
    bench.write_text(dumps(measured(load_facts(WITH_FA2).gpus[0].name, 400.0, 500.0)))
    _, out, err = doctor("check", "--facts", WITH_FA2, "--bench", bench, "-v")
    assert "measured here" in out, out + err
    (tmp_path / "bad.json").write_text("{}")
    code, _, err = doctor("check", "--facts", WITH_FA2, "--bench", tmp_path / "bad.json")
    assert code == 2 and "not an attn-doctor bench file" in err


def test_the_recommendation_follows_the_bench_file_near_the_workloads_length() -> None:
    """An older bench of the H100 (tests/fixtures/h100-bench.json, FA4 installed by attn-doctor),
    whose 1k-token figures timed the host (h100-bench-regimes.txt): the doctor follows the file it is
    given, over the standard shapes without a length, near the length with one."""
    facts, bench = FIXTURES / "h100-fa4-check.json", FIXTURES / "h100-bench.json"
    _, out, _ = doctor("check", "--facts", facts, "--bench", bench, "--format", "json")
    recommendation = json.loads(out)["recommendation"]
    assert recommendation["backend"] == "fa4" and recommendation["better"] is None
    assert any(
        "measured here over the standard shapes" in r and "fa4 336, sdpa 324" in r for r in recommendation["reasons"]
    )
    _, out, _ = doctor("check", "--facts", facts, "--bench", bench, "--seq-len", "1024", "--format", "json")
    recommendation = json.loads(out)["recommendation"]
    assert recommendation["backend"] == "sdpa"
    assert any("near 1024 tokens" in r and "sdpa 101, fa4 52" in r for r in recommendation["reasons"])
    # FA4 runs here and measured slower: not "better"; FA3, ranked ahead and not installed, is
    assert recommendation["better"] == "fa3"


def test_the_five_backend_h100_bench_names_each_shapes_fastest_trainer() -> None:
    """One bench of FA2, FA3, FA4, SageAttention 2 and SDPA on the H100, every figure the GPU's time
    (h100-bench-five-gpu.json; all five installed by attn-doctor and usable by `check` there:
    h100-five-gpu.txt). The recommendation names the fastest trainer of each standard shape, ranks
    by the shapes of the workload's length (all of them without one), says how Axolotl selects
    FA3, and calls nothing "better" that runs here and measured slower (FA4)."""
    from attn_doctor.rules.assess import assess_all
    from attn_doctor.rules.recommend import recommend

    facts = load_facts(FIXTURES / "h100-fa4-check.json")
    measured = load(FIXTURES / "h100-bench-five-gpu.json")
    assert measured.gpu == facts.gpus[0].name

    def chosen(work: Workload) -> Any:
        # the packages this fixture lacks (FA2, FA3, Sage) were installed and usable on that H100
        verdicts = {
            name: dataclasses.replace(v, problems=()) if name in ("fa2", "fa3", "sage") else v
            for name, v in assess_all(facts, work, ()).items()
        }
        return recommend(facts, work, verdicts, measured)

    long = chosen(Workload())
    assert long.backend == "fa3" and long.config == "attn_implementation: flash_attention_3"
    assert any(
        r.startswith("measured here over the standard shapes") and r.endswith("fa3 442, fa4 429, sdpa 370, fa2 250")
        for r in long.reasons
    )
    per_shape = next(r for r in long.reasons if r.startswith("fastest per shape here"))
    assert "4x1024x16x64 fa3 248 (fa4 243)" in per_shape and "4x8192x16x128 fa4 591 (fa3 588)" in per_shape
    assert per_shape.index("4x1024x16x64") < per_shape.index("4x1024x16x128") < per_shape.index("4x4096x16x64")
    assert any("FA4 patch replaces FA3" in r and "flash_attn_4.py" in r for r in long.reasons)  # FA4 is installed
    assert long.runner_up == "fa4" and long.better is None
    short = chosen(Workload(seq_len=1024))
    assert short.backend == "fa3" and short.better is None
    assert any("near 1024 tokens" in r and r.endswith("fa3 275, fa4 268, sdpa 231, fa2 165") for r in short.reasons)


def test_bench_without_a_gpu_says_so_at_once(torch_venv: Venv) -> None:
    """The standard shapes on a CPU ran ten minutes and ranked one shape: refused in one line now."""
    code, out, err = doctor("bench", "--python", torch_venv.python)
    assert (code, out) == (2, "") and "no GPU here" in err and "--shape" in err and err.count("\n") == 1
