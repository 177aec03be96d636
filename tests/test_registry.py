"""One registry, one verdict: a backend is declared once (registry/backends.py), and `check`, its
package lines, `--require`, the recommendation, the Axolotl config check, `explain` and
`verify`'s choice of backends all read the same assessment of it (rules/assess.py).

The states are built from real package files in real venvs (the real FA4 wheel installed with
--no-deps next to a real CPU torch, the real SageAttention 1.0.6 wheel, the real FA2 files), and
from machine fixtures for the GPUs CI does not have (T4, RTX 3090, RTX 5090)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from attn_doctor.cli import main
from attn_doctor.facts.collect import collect
from attn_doctor.facts.model import Facts, Package, Resolution
from attn_doctor.facts.saved import load_facts
from attn_doctor.registry import backends
from attn_doctor.registry.backends import Backend, Support, backend_names, by_name, distributions
from attn_doctor.registry.findings import Kind, Severity
from attn_doctor.report import CheckRequest, Report, judge
from attn_doctor.rules.gate import parse_requirement
from attn_doctor.trials import kernel
from attn_doctor.trials.verify import installed
from attn_doctor.workload import Workload
from tests.conftest import FIXTURES, RealPackages, RecordedNvml, Venv, doctor, h100_recording, pypi_wheel

MACHINES = FIXTURES / "machines"
TRAIN = Workload(training="lora")


def verdicts_everywhere(facts: Facts, name: str, work: Workload | None = None) -> dict[str, bool]:
    """What each consumer says of one backend on the same facts: usable or not."""
    gate = CheckRequest(require=(parse_requirement(name),), workload=work or Workload(), no_gpu_ok=True)
    report = judge(facts, gate)
    assert report.recommendation is not None
    distribution = by_name()[name].distribution
    marked_broken = any(
        f.concerns(Kind.DISTRIBUTION, distribution) and f.severity == Severity.ERROR for f in report.findings
    )
    return {
        "assessment": report.assessments[name].usable,
        "require": report.requirements[0].met,
        "recommendable": name in {report.recommendation.backend, report.recommendation.runner_up},
        "package line": not (report.assessments[name].broken or marked_broken),
    }


def with_package(facts: Facts, name: str, version: str) -> Facts:
    """A machine fixture with one more distribution, installed whole (FA2 with its extension)."""
    package = Package(name, version, f"/site/{name.replace('-', '_')}-{version}.dist-info", "/site")
    extension = Resolution("flash_attn_2_cuda", "module", "/site/flash_attn_2_cuda.cpython-312-x86_64-linux-gnu.so")
    others = tuple(r for r in facts.resolutions if r.module != extension.module)
    resolutions = (extension, *others) if name == "flash-attn" else facts.resolutions
    return dataclasses.replace(facts, packages=(*facts.packages, package), resolutions=resolutions)


# --- the real FA4 wheel without its requirements ---


@pytest.fixture
def fa4_without_requirements(venv: Venv, real: RealPackages) -> Venv:
    """`pip install --no-deps flash-attn-4==4.0.0b36` next to a real torch: the way people avoid a
    torch reinstall. `import flash_attn.cute` then fails (`No module named 'cutlass'`, on the H100)."""
    venv.see_packages_of(real.torch_python)
    venv.install(real.fa4_wheel)
    return venv


def test_fa4_without_its_requirements_is_an_error_everywhere(fa4_without_requirements: Venv) -> None:
    facts = collect(str(fa4_without_requirements.python), nvml=RecordedNvml(h100_recording()))
    report = judge(facts, CheckRequest(require=(parse_requirement("fa4"),)))
    [unmet] = [f for f in report.findings if f.code == "package-requirements-unmet"]
    assert unmet.title.startswith("flash-attn-4 4.0.0b36 requires nvidia-cutlass-dsl>=4.6.2 is not installed")
    assert unmet.subject is not None and unmet.subject.name == "flash-attn-4"
    # the fix installs exactly what is missing and holds torch where it is
    torch = facts.package("torch")
    assert torch is not None and unmet.fix[0].endswith(f"torch=={torch.version}  # only what is missing; torch stays")
    assert "'nvidia-cutlass-dsl>=4.6.2'" in unmet.fix[0] and "flash-attn-4" not in unmet.fix[0]
    assert not report.requirements[0].met
    assert report.recommendation is not None and report.recommendation.backend != "fa4"
    assert "requires nvidia-cutlass-dsl" in " ".join(report.recommendation.reasons)
    assert report.assessments["fa4"].broken  # its package line is ✗
    code, out, _ = doctor("check", "--python", fa4_without_requirements.python, "--no-gpu-ok")
    assert code == 1 and "✗ FlashAttention 4 (flash-attn-4) 4.0.0b36" in out
    assert "Use fa4" not in out


def test_the_requirements_fix_clears_it(fa4_without_requirements: Venv, fa4_wheelhouse: Path) -> None:
    """The printed fix, run as printed (from the local wheelhouse instead of the index), clears the
    finding and raises no new error."""
    before = judge(collect(str(fa4_without_requirements.python)))
    [unmet] = [f for f in before.findings if f.code == "package-requirements-unmet"]
    command = unmet.fix[0].split("  #")[0]
    assert command.startswith(f"{fa4_without_requirements.python} -m pip install ")
    # the venv has no pip of its own: the same requirements through the doctor's pip, offline
    requirements = command.split(" -m pip install ", 1)[1]
    fa4_without_requirements.pip(
        "install", "--no-index", "--find-links", fa4_wheelhouse, *[r.strip("'") for r in requirements.split()]
    )
    after = judge(collect(str(fa4_without_requirements.python)))
    assert "package-requirements-unmet" not in {f.code for f in after.findings}
    assert {f.code for f in after.findings if f.severity.label == "error"} <= {
        f.code for f in before.findings if f.severity.label == "error"
    }


# --- SageAttention 1.0.6, the real wheel ---


def test_sageattention_1_is_one_verdict(venv: Venv) -> None:
    """Seen: `--require sage` was met while the recommendation called it unusable."""
    venv.install(pypi_wheel("sageattention==1.0.6"))
    facts = dataclasses.replace(
        collect(str(venv.python), nvml=RecordedNvml(h100_recording())),
        torch=load_facts(MACHINES / "h100.json").torch,
    )
    said = verdicts_everywhere(facts, "sage", Workload(training="inference"))
    assert said == {"assessment": False, "require": False, "recommendable": False, "package line": False}
    report = judge(facts, CheckRequest(workload=Workload(training="inference")))
    assert "sageattention 1.0.6 is SageAttention 1" in " ".join(report.assessments["sage"].problems)
    assert installed(report.assessments)[-1].name == "sage"  # verify still runs it: it is installed


# --- installed, but it cannot run on this GPU ---


@pytest.mark.parametrize(
    ("machine", "backend", "distribution", "version", "better"),
    [
        ("t4", "fa2", "flash-attn", "2.8.3.post2", "attn-doctor install xformers"),
        ("rtx5090", "fa3", "flash-attn-3", "3.0.0", "attn-doctor install fa2"),
        # 2.7.1.post4 refused sm_120 ("only supports Ampere GPUs or newer"); the newest release runs there
        ("rtx5090", "fa2", "flash-attn", "2.7.1.post4", "attn-doctor install fa2"),
    ],
)
def test_installed_but_cannot_run_here(
    machine: str, backend: str, distribution: str, version: str, better: str
) -> None:
    facts = with_package(load_facts(MACHINES / f"{machine}.json"), distribution, version)
    report = judge(facts)
    [unsupported] = [f for f in report.findings if f.code == "backend-unsupported-gpu"]
    assert f"{version} does not run on GPU 0" in unsupported.title
    assert unsupported.fix[0].startswith(better)
    assert any("https://github.com/" in e for e in unsupported.evidence)  # the rule's source, openable
    said = verdicts_everywhere(facts, backend)
    assert said == {"assessment": False, "require": False, "recommendable": False, "package line": False}
    # one cause, said once: the installed release's, or the newest's when no release runs there
    assert sum("does not run on GPU 0" in r for r in report.assessments[backend].reasons) == 1
    assert doctor("check", "--facts", MACHINES / f"{machine}.json", "--require", backend)[0] == 1


def test_the_installed_release_decides_not_the_name() -> None:
    """The same FA2 on the same RTX 5090: 2.8.3.post2 runs, 2.7.1.post4 does not."""
    rtx5090 = load_facts(MACHINES / "rtx5090.json")
    new, old = (judge(with_package(rtx5090, "flash-attn", v)) for v in ("2.8.3.post2", "2.7.1.post4"))
    assert "backend-unsupported-gpu" not in {f.code for f in new.findings}
    assert "backend-unsupported-gpu" in {f.code for f in old.findings}
    assert new.assessments["fa2"].gpus[0].runs and not old.assessments["fa2"].gpus[0].runs


def test_old_fa2_refuses_a_wide_head_backward_off_a100_and_h100() -> None:
    """Reported with flash-attn 2.5.3 on an RTX 3090: head dim 256, backward needs sm80/sm90."""
    rtx3090 = with_package(load_facts(MACHINES / "rtx3090.json"), "flash-attn", "2.5.3")
    work = Workload(training="lora", head_dim=256)
    report = judge(rtx3090, CheckRequest(workload=work))
    assert report.recommendation is not None and report.recommendation.backend == "sdpa"
    assert report.recommendation.better == "fa2"  # a current FA2 takes it: the fix is an upgrade
    assert "FlashAttention 2 2.5.3 takes backward with head dims up to 192" in report.assessments["fa2"].problems[0]
    assert verdicts_everywhere(rtx3090, "fa2", work)["require"] is False
    inference = judge(rtx3090, CheckRequest(workload=Workload(training="inference", head_dim=256)))
    assert inference.assessments["fa2"].usable  # the forward pass was never limited
    a100 = with_package(load_facts(MACHINES / "a100.json"), "flash-attn", "2.5.3")
    assert judge(a100, CheckRequest(workload=work)).assessments["fa2"].usable


def test_fa3_beta_published_as_flash_attn_is_not_fa2() -> None:
    h100 = with_package(load_facts(MACHINES / "h100.json"), "flash-attn", "3.0.0b1")
    report = judge(h100)
    [lookalike] = [f for f in report.findings if f.code == "package-lookalike"]
    assert "FA3's beta" in lookalike.title
    assert not any("flash-attn==3.0.0b1" in command for command in lookalike.fix)
    assert lookalike.fix[0].startswith("attn-doctor install fa2") and "attn-doctor install fa3" in lookalike.fix[1]
    assert not report.assessments["fa2"].usable


def test_without_torch_nothing_is_recommended(venv: Venv) -> None:
    code, out, _ = doctor("check", "--python", venv.python, "--no-gpu-ok", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["recommendation"] is None and "torch-missing" in {f["code"] for f in data["findings"]}
    _, text, _ = doctor("check", "--python", venv.python, "--no-gpu-ok")
    assert "Use sdpa" not in text and "until torch is installed" in text


# --- the registry is the one place ---

FLASHINFER = Backend(
    name="flashinfer",
    label="FlashInfer",
    distribution="flashinfer-python",
    module="flashinfer",
    resolve=("flashinfer",),
    verified=True,
    support=(Support("", ("8", "9", "10", "12"), (), "https://github.com/flashinfer-ai/flashinfer (a test's)"),),
    install="pip install flashinfer-python",
    source="a backend declared in this test only",
    axolotl="attn_implementation: flashinfer",
    axolotl_names=("flashinfer",),
    ranks=backends._ranks(hopper=0),
    why="declared in a test",
    verifiable=True,
)


def test_a_backend_declared_once_appears_everywhere(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(backends, "BACKENDS", (*backends.BACKENDS, FLASHINFER))
    facts = with_package(load_facts(MACHINES / "h100.json"), "flashinfer-python", "0.3.0")
    report = judge(facts, CheckRequest(require=(parse_requirement("flashinfer>=0.2"),)))
    assert "flashinfer-python" in distributions()  # what the probe is asked to read
    assert report.requirements[0].met  # the gate
    assert report.recommendation is not None and report.recommendation.backend == "flashinfer"  # recommend
    assert [b.name for b in installed(report.assessments)][-1] == "flashinfer"  # verify's choice
    assert "flashinfer" in backend_names(verifiable=True)
    saved = tmp_path / "facts.json"
    from attn_doctor.facts.model import to_data

    saved.write_text(json.dumps({"schema": "attn-doctor/report-1", **to_data(facts)}))
    for argv, expected in (
        (["check", "--facts", str(saved), "--require", "flashinfer"], "FlashInfer (flashinfer-python) 0.3.0"),
        (["explain", "flashinfer"], "flashinfer: FlashInfer"),
    ):
        monkeypatch.setattr(sys, "argv", ["attn-doctor", *argv])
        with pytest.raises(SystemExit) as done:
            main()
        out = capsys.readouterr().out
        assert done.value.code == 0 and expected in out, out


def test_kernel_adapters_are_the_registrys_verifiable_backends() -> None:
    assert set(kernel.ADAPTERS) == set(backend_names(verifiable=True))


def test_install_recipes_are_the_registrys_installable_backends() -> None:
    from attn_doctor.actions.recipes import RECIPES as _RECIPES

    assert set(_RECIPES) == set(backend_names(installable=True))


def test_report_has_one_verdict_per_backend() -> None:
    report: Report = judge(load_facts(MACHINES / "h100.json"))
    assert set(report.assessments) == set(by_name())


def test_flex_has_one_verdict_from_torch_2_5_and_axolotl_asks_for_2_6(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """torch.nn.attention.flex_attention ships in torch 2.5.0: the torch section and --require say the
    same of it (they once said ✓ and ✗ in one report); Axolotl's validator alone asks for 2.6."""

    def check(torch: str, *more: str) -> tuple[int, str]:
        argv = ["check", "--facts", str(FIXTURES / "h100-check.json"), "--torch", torch, "--cuda", "12.4", *more]
        monkeypatch.setattr(sys, "argv", ["attn-doctor", *argv])
        with pytest.raises(SystemExit) as done:
            main()
        return int(str(done.value.code)), capsys.readouterr().out

    code, out = check("2.5.1", "--require", "flex")
    assert code == 0 and "✓ Flex Attention (torch.nn.attention.flex_attention)" in out and "✓ flex" in out
    code, out = check("2.4.1", "--require", "flex")
    assert code == 1 and "– Flex Attention needs torch >= 2.5" in out and "✗ flex" in out
    config = tmp_path / "axolotl.yaml"
    config.write_text("base_model: some/model\nattn_implementation: flex_attention\ntorch_compile: true\n")
    code, out = check("2.5.1", "--config", str(config), "--format", "json")
    said = {f["code"]: f["title"] for f in json.loads(out)["findings"]}
    assert "Axolotl refuses Flex Attention below torch 2.6" in said["config-backend-unavailable"]
    code, out = check("2.6.0", "--config", str(config), "--format", "json")
    assert "config-backend-unavailable" not in {f["code"] for f in json.loads(out)["findings"]}


@pytest.mark.parametrize(
    ("gpu", "torch", "head_dim", "training", "said"),
    [
        # pytorch#133254: head dim 128 backward on an RTX 4090 with torch 2.5
        ("RTX 4090", "2.5.1", 128, "lora", "backward with head dims up to 64 on sm_89, not 128"),
        ("RTX 4090", "2.5.1", 128, "inference", None),  # the forward fits
        ("RTX 4090", "2.8.0", 128, "lora", None),  # 2.7 changed the sm8x backward configs
        ("H100", "2.5.1", 128, "lora", None),  # 227 KB
        # pytorch#198224: sm_12x backward above 128, open through 2.15
        ("RTX 5090", "2.15.0", 256, "full", "backward with head dims up to 128 on sm_120, not 256"),
        ("GB10", "2.12.0", 192, "full", "backward with head dims up to 128 on sm_121, not 192"),
        # pytorch#180278: head dim 192 on sm_86/89 until 2.13
        ("RTX 3090", "2.12.0", 192, "inference", "head dims up to 128 on sm_86, not 192"),
        ("RTX 3090", "2.13.0", 192, "inference", None),
        ("H100", "2.15.0", 512, "inference", "head dims up to 256, not 512"),
    ],
)
def test_flex_knows_its_shared_memory_limits(
    gpu: str, torch: str, head_dim: int, training: str, said: str | None
) -> None:
    """Flex attention exists in these torches: what fails is its default kernel's shared memory on
    this GPU, and the verdict says so (never "this torch has no Flex Attention")."""
    from attn_doctor.facts.given import with_given_gpu, with_given_torch

    facts = with_given_torch(with_given_gpu(load_facts(FIXTURES / "h100-check.json"), gpu), torch, "12.8")
    flex = judge(facts, CheckRequest(workload=Workload(training=training, head_dim=head_dim))).assessments["flex"]
    reasons = " ".join(flex.reasons)
    assert "has no Flex Attention" not in reasons
    if said is None:
        assert flex.usable, reasons
    else:
        assert not flex.usable and said in reasons and "shared memory" in reasons, reasons


def test_flex_on_a_python_its_torch_compile_refuses() -> None:
    """torch 2.5 ships cp313 wheels, but its Dynamo refuses Python 3.13: flex attention cannot compile."""
    facts = load_facts(FIXTURES / "h100-check.json")
    py313 = dataclasses.replace(facts, python=dataclasses.replace(facts.python, version="3.13.1"))
    from attn_doctor.facts.given import with_given_torch

    old = judge(with_given_torch(py313, "2.5.1", "12.4")).assessments["flex"]
    assert not old.usable and any(
        "refuses on Python 3.13.1 (Dynamo takes Python 3.13 from torch 2.6)" in r for r in old.reasons
    )
    assert judge(with_given_torch(py313, "2.6.0", "12.4")).assessments["flex"].usable


@pytest.mark.parametrize(
    ("gpu", "fa4", "beside", "broken"),
    [
        ("RTX 5060 Ti", "4.0.0b12", (), "SM120 forward fails to compile"),  # flash-attention#2453
        ("RTX 5060 Ti", "4.0.0b21", (), None),  # fixed in b21
        ("H100", "4.0.0b12", (), None),  # the SM120 path only
        ("B300", "4.0.0b14", (), "Only SM 10.x and 11.x are supported"),
        ("B300", "4.0.0b36", (("nvidia-cutlass-dsl", "4.6.1"),), "backward never returns on sm_103"),
        ("B300", "4.0.0b36", (("nvidia-cutlass-dsl", "4.6.2"),), None),
        ("B200", "4.0.0b36", (("nvidia-cutlass-dsl", "4.6.1"),), None),
        ("H100", "4.0.0b25", (("quack-kernels", "0.6.5"),), "sub_packed_f32x2"),
        ("H100", "4.0.0b26", (("quack-kernels", "0.6.5"),), None),
    ],
)
def test_a_release_broken_on_this_gpu_or_beside_this_dependency(
    gpu: str, fa4: str, beside: tuple[tuple[str, str], ...], broken: str | None
) -> None:
    from attn_doctor.facts.given import with_given_gpu
    from attn_doctor.facts.model import Installed

    facts = with_package(with_given_gpu(load_facts(MACHINES / "h100.json"), gpu), "flash-attn-4", fa4)
    others = tuple(i for i in facts.installed if i.name not in dict(beside))
    facts = dataclasses.replace(facts, installed=(*others, *(Installed(n, v) for n, v in beside)))
    report = judge(facts)
    found = [f for f in report.findings if f.code == "release-broken-here"]
    if broken is None:
        assert not found
        return
    [finding] = found
    assert broken in finding.title and finding.concerns(Kind.DISTRIBUTION, "flash-attn-4")
    assert not report.assessments["fa4"].usable
    if beside and beside[0][0] == "nvidia-cutlass-dsl":
        assert "'nvidia-cutlass-dsl>=4.6.2'" in finding.fix[0]
    else:
        assert finding.fix[0].startswith("attn-doctor install fa4")


def test_sdpa_on_a_release_known_bad_here_says_so_beside_its_recommendation(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """torch 2.13 with cuDNN 9.20 on Hopper (pytorch#196678): SDPA is still recommended where it is the
    choice, but never without its fault and the remedy beside it; another cuDNN, another GPU: silence."""
    from attn_doctor.facts.given import with_given_gpu, with_given_torch
    from attn_doctor.facts.model import Installed, to_data

    base = with_given_torch(load_facts(MACHINES / "h100.json"), "2.13.0", "13.0")

    def with_cudnn(facts: Facts, version: str) -> Facts:
        others = tuple(i for i in facts.installed if not i.name.startswith("nvidia-cudnn"))
        return dataclasses.replace(facts, installed=(*others, Installed("nvidia-cudnn-cu13", version)))

    hopper = judge(with_cudnn(base, "9.20.0.48"))
    [found] = [f for f in hopper.findings if f.code == "sdpa-known-bad"]
    assert "NaN grad_q" in found.title and found.fix[0].startswith("export TORCH_CUDNN_SDPA_DEPRIORITIZED=1")
    assert hopper.assessments["sdpa"].usable  # it runs; it has a fault
    assert all(f.code != "sdpa-known-bad" for f in judge(with_cudnn(base, "9.24.0.43")).findings)
    ampere = judge(with_cudnn(with_given_gpu(base, "A100"), "9.20.0.48"))
    assert all(f.code != "sdpa-known-bad" for f in ampere.findings)

    saved = tmp_path / "facts.json"
    saved.write_text(json.dumps({"schema": "attn-doctor/report-1", **to_data(with_cudnn(base, "9.20.0.48"))}))
    monkeypatch.setattr(sys, "argv", ["attn-doctor", "check", "--facts", str(saved)])
    with pytest.raises(SystemExit):
        main()
    out = capsys.readouterr().out
    assert "Use sdpa" in out and "but: SDPA on torch 2.13.0 with cuDNN 9.20.0.48" in out, out


def test_a_release_newer_than_the_rules_is_a_note_with_its_proof() -> None:
    from attn_doctor.registry.backends import RULES_CHECKED

    facts = with_package(load_facts(MACHINES / "h100.json"), "flash-attn-4", "4.0.0b41")
    [note] = [f for f in judge(facts).findings if f.code == "release-newer-than-rules"]
    assert note.severity == Severity.INFO and "4.0.0b41 is newer than these rules know (4.0.0b40" in note.title
    assert RULES_CHECKED in note.title and note.fix[0].startswith("attn-doctor verify fa4")
    known = with_package(load_facts(MACHINES / "h100.json"), "flash-attn-4", "4.0.0b40")
    assert all(f.code != "release-newer-than-rules" for f in judge(known).findings)


def test_fa4_trains_where_it_has_a_backward_and_infers_where_it_runs() -> None:
    """flash-attn-4 runs its forward on sm_80 (since beta5) but asserts sm 9-12 for the backward."""
    from attn_doctor.facts.given import with_given_gpu

    a100 = with_package(with_given_gpu(load_facts(MACHINES / "h100.json"), "A100"), "flash-attn-4", "4.0.0b36")
    trained = judge(a100, CheckRequest(workload=Workload(training="lora"))).assessments["fa4"]
    assert not trained.usable and any("no backward pass on sm_80" in r for r in trained.reasons), trained.reasons
    inferred = judge(a100, CheckRequest(workload=Workload(training="inference"))).assessments["fa4"]
    assert inferred.usable, inferred.reasons
    hopper = with_package(load_facts(MACHINES / "h100.json"), "flash-attn-4", "4.0.0b36")
    assert judge(hopper, CheckRequest(workload=Workload(training="lora"))).assessments["fa4"].usable
