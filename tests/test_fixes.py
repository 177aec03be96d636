"""Every fix fixes: the printed command, run on the state that raised its finding, clears it and
raises no new error. States are built from real files in real venvs (the real FA2 and FA4 files,
real dist-infos, real YAML); a fix that needs the index runs against a local folder of the same
real wheels instead (`--no-index --find-links`). Where a fix cannot run here (a CUDA compile, a
GPU, a driver), the test asserts its inputs: what forces the source build, the release that
matches torch. Each test is named in the catalog (registry/findings.py `proof`), which
docs/findings.md shows per code."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from attn_doctor.facts.collect import collect
from attn_doctor.facts.model import Facts, Package
from attn_doctor.facts.saved import load_facts
from attn_doctor.registry.findings import RULES, Finding, Severity
from attn_doctor.report import CheckRequest, Report, judge
from attn_doctor.workload import axolotl_workload
from tests.conftest import FIXTURES, RealPackages, RecordedNvml, Venv, h100_recording, pypi_wheel, run

MACHINES = FIXTURES / "machines"
ROOT = Path(__file__).resolve().parent.parent


def the(report: Report, code: str) -> Finding:
    [found] = [f for f in report.findings if f.code == code]
    return found


def errors(report: Report) -> set[str]:
    return {f.code for f in report.findings if f.severity == Severity.ERROR}


def run_fix(command: str, wheels: Path | None = None, cwd: Path | None = None) -> None:
    """A printed fix as a shell runs it; a pip install answered from a local folder of real wheels."""
    line = command.split("  #")[0]
    if wheels is not None and " -m pip install " in line:
        line = line.replace(" -m pip install ", f" -m pip install --no-index --find-links {shlex.quote(str(wheels))} ")
    subprocess.run(["bash", "-e", "-c", line], check=True, cwd=cwd, capture_output=True, text=True)


def test_fa4_hidden_by_an_older_flash_attn_earlier_on_sys_path(
    venv: Venv, real: RealPackages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older flash_attn (no cute/) in a PYTHONPATH folder hides the FA4 in site-packages."""
    venv.install(real.fa4_wheel)
    older = tmp_path / "older"
    shutil.unpack_archive(str(real.fa2_wheel), older, "zip")
    shutil.rmtree(older / "flash_attn" / "cute")
    monkeypatch.setenv("PYTHONPATH", str(older))
    before = judge(collect(str(venv.python), nvml=RecordedNvml(h100_recording())))
    hidden = the(before, "fa4-hidden")
    assert str(older / "flash_attn") in hidden.title and "never imported" in hidden.title
    run_fix(hidden.fix[0])
    after = judge(collect(str(venv.python), nvml=RecordedNvml(h100_recording())))
    assert "fa4-hidden" not in {f.code for f in after.findings}
    cute = after.facts.resolution("flash_attn.cute")
    assert cute is not None and cute.origin == str(venv.site / "flash_attn" / "cute" / "__init__.py")
    assert (older / "flash_attn.hides-fa4").is_dir()  # set aside, not deleted
    assert errors(after) <= errors(before)


def venv_with_pip(tmp_path: Path, wheel: Path) -> tuple[Path, Path]:
    """A venv with its own pip (the fixes name the target's `python -m pip`) and one real wheel
    installed: its interpreter and site-packages."""
    venv = tmp_path / "env"
    run("python3", "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    return python, site


def test_files_changed_by_hand_are_reinstalled(tmp_path: Path, real: RealPackages) -> None:
    python, site = venv_with_pip(tmp_path, real.fa2_wheel)
    with (site / "flash_attn" / "bert_padding.py").open("a") as handle:
        handle.write("# patched on the cluster\n")
    (site / "flash_attn" / "flash_attn_triton.py").unlink()
    before = judge(collect(str(python)))
    modified = the(before, "package-files-modified")
    run_fix(modified.fix[0], wheels=real.fa2_wheel.parent)
    after = judge(collect(str(python)))
    assert "package-files-modified" not in {f.code for f in after.findings}
    assert errors(after) <= errors(before)


def test_a_stale_second_dist_info_and_a_broken_one_are_set_aside(tmp_path: Path, real: RealPackages) -> None:
    python, site = venv_with_pip(tmp_path, real.fa4_wheel)
    [dist_info] = site.glob("flash_attn_4-*.dist-info")
    shutil.copytree(dist_info, site / "flash_attn_4-4.0.0b35.dist-info")  # an interrupted upgrade's leftover
    before = judge(collect(str(python)))
    duplicate = the(before, "package-duplicate")
    for command in duplicate.fix:
        run_fix(command, wheels=real.fa4_wheel.parent)
    middle = judge(collect(str(python)))
    assert "package-duplicate" not in {f.code for f in middle.findings}

    [dist_info] = site.glob("flash_attn_4-*.dist-info")
    (dist_info / "METADATA").write_bytes(b"Metadata-Version: 2.1\nName: flash-attn-4\nVersion: \xff\n")
    broken = judge(collect(str(python)))
    for command in the(broken, "package-metadata-broken").fix:
        run_fix(command, wheels=real.fa4_wheel.parent)
    after = judge(collect(str(python)))
    assert "package-metadata-broken" not in {f.code for f in after.findings}
    assert errors(after) <= errors(before)


@pytest.mark.parametrize(
    ("yaml_text", "code", "edit"),
    [
        ("attn_implementation: sdpa\nflash_attention: true\n", "config-mixed-attention-keys", "drop-legacy"),
        ("sdp_attention: true\nxformers_attention: true\n", "config-several-attention-flags", "keep-one"),
        ("s2_attention: true\n", "config-s2-attention", "replace-s2"),
        ("attn_implementation: flex_attention\n", "config-flex-without-compile", "add-line"),
        ("attn_implementation: sage\n", "config-sage-full-finetune", "add-line"),
        ("flash_attention: true\n", "config-legacy-attention-flag", "replace-legacy"),
    ],
)
def test_config_fixes_are_lines_that_clear_the_finding(tmp_path: Path, yaml_text: str, code: str, edit: str) -> None:
    """A config finding's fix is a config line: written into the real YAML, it clears the finding."""
    config = tmp_path / "axolotl.yml"
    config.write_text("base_model: m\n" + yaml_text)
    facts = load_facts(MACHINES / "a100.json")
    found = the(judge(facts, CheckRequest(workload=axolotl_workload(config))), code)
    line = found.fix[0].split("  #")[0]
    for prefix in ("keep only ", "keep one: ", "use "):
        line = line.removeprefix(prefix)
    line = line.split(", or ")[0]
    kept = [x for x in config.read_text().splitlines() if x.startswith("base_model")]
    if edit == "add-line":
        kept = config.read_text().splitlines()
    config.write_text("\n".join([*kept, line]) + "\n")
    after = judge(facts, CheckRequest(workload=axolotl_workload(config)))
    assert code not in {f.code for f in after.findings}, config.read_text()


def test_cuda_visible_devices_that_hide_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    from attn_doctor.facts.gpu import read_gpus

    driver, gpus = read_gpus(RecordedNvml(h100_recording()))
    facts = dataclasses.replace(load_facts(MACHINES / "h100.json"), gpus=gpus, driver=driver)
    hidden = the(judge(facts), "gpus-hidden")
    assert hidden.fix[0].startswith("unset CUDA_VISIBLE_DEVICES")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # the fix, in this process's environment
    driver, gpus = read_gpus(RecordedNvml(h100_recording()))
    assert "gpus-hidden" not in {f.code for f in judge(dataclasses.replace(facts, gpus=gpus, driver=driver)).findings}


def test_a_pep_668_python_gets_a_venv(tmp_path: Path) -> None:
    system = Path("/usr/bin/python3")
    stdlib = run(system, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])").stdout.strip()
    if not (Path(stdlib) / "EXTERNALLY-MANAGED").exists():
        pytest.skip("this machine's /usr/bin/python3 carries no PEP 668 marker")
    before = judge(collect(str(system)))
    # pip refuses this Python: no fix may send pip to it
    assert not [c for f in before.findings for c in f.fix if c.startswith(f"{system} -m pip install")]
    command = the(before, "python-externally-managed").fix[0]
    run_fix(command, cwd=tmp_path)  # `python3 -m venv .venv && . .venv/bin/activate`
    after = judge(collect(str(tmp_path / ".venv" / "bin" / "python")))
    assert "python-externally-managed" not in {f.code for f in after.findings}


# --- fixes that cannot run here: their inputs ---


def with_package(facts: Facts, name: str, version: str) -> Facts:
    package = Package(name, version, f"/site/{name}-{version}.dist-info", "/site")
    return dataclasses.replace(facts, packages=(*facts.packages, package))


def with_import(facts: Facts, module: str, outcome: str) -> Facts:
    from attn_doctor.facts.model import ImportResult

    return dataclasses.replace(facts, imports=(ImportResult(module, outcome, 1.0, "undefined symbol: _ZN3c10"),))


def test_xformers_built_for_another_torch_gets_the_release_for_this_torch() -> None:
    """Not the same wheel again: the xFormers release whose wheels require the installed torch."""
    h100 = with_package(load_facts(MACHINES / "h100.json"), "xformers", "0.0.33.post2")  # built for torch 2.9.1
    report = judge(with_import(h100, "xformers.ops", "undefined-symbol"))
    fix = the(report, "import-undefined-symbol").fix[0]
    assert fix.startswith("attn-doctor install xformers") and "0.0.35" in fix and "--force-reinstall" not in fix


def test_sageattention_2_with_an_abi_problem_is_built_again() -> None:
    h100 = with_package(load_facts(MACHINES / "h100.json"), "sageattention", "2.2.0")
    fix = the(judge(with_import(h100, "sageattention", "undefined-symbol")), "import-undefined-symbol").fix[0]
    assert fix.startswith("attn-doctor install sage") and "sageattention==2.2.0" not in fix


def test_sageattention_1_on_a_t4_is_steered_to_what_runs_there() -> None:
    """SageAttention 2 refuses sm_75: the fix is not `install sage` there."""
    t4 = with_package(load_facts(MACHINES / "t4.json"), "sageattention", "1.0.6")
    fix = the(judge(t4), "sageattention-v1").fix[0]
    assert "install sage" not in fix and fix.startswith("attn-doctor install xformers")
    h100 = with_package(load_facts(MACHINES / "h100.json"), "sageattention", "1.0.6")
    assert the(judge(h100), "sageattention-v1").fix[0].startswith("attn-doctor install sage")


def test_a_torch_for_a_newer_cuda_minor_names_the_build_for_the_driver() -> None:
    h100 = load_facts(MACHINES / "h100.json")
    assert h100.torch is not None
    newer = dataclasses.replace(h100, torch=dataclasses.replace(h100.torch, cuda="13.1"))
    fix = the(judge(newer), "torch-cuda-minor-newer").fix
    assert "torch==2.11.0+cu130 --index-url https://download.pytorch.org/whl/cu130" in fix[1]


def test_rocm_version_strings_with_a_build_suffix() -> None:
    """torch.version.hip is "6.3.42131-fa1d09cbd": ROCm 6.3, which FA2's floor (6.0) admits."""
    mi300 = load_facts(MACHINES / "mi300x.json")
    assert mi300.torch is not None
    rocm63 = dataclasses.replace(mi300, torch=dataclasses.replace(mi300.torch, hip="6.3.42131-fa1d09cbd"))
    report = judge(rocm63, CheckRequest(require=()))
    assert not any("needs ROCm" in r for v in report.assessments.values() for r in v.reasons)


def test_every_fix_has_a_proof_in_the_catalog() -> None:
    """The catalog says for each code how its fix was proven: a test here (or elsewhere) that
    runs it, one that checks its inputs, or why neither can be done."""
    for rule in RULES:
        assert rule.proof, rule.code
        kind, _, where = rule.proof.partition(": ")
        assert kind in {"ran", "inputs", "no fix", "unproven"}, rule.proof
        if kind in {"ran", "inputs"}:
            path, _, name = where.split(" ")[0].partition("::")
            assert f"def {name}(" in (ROOT / path).read_text(), rule.proof


def test_the_findings_doc_shows_the_proofs() -> None:
    text = (ROOT / "docs" / "findings.md").read_text()
    assert all(rule.proof in text for rule in RULES)  # generated: test_catalog keeps it equal


@pytest.mark.parametrize("columns", ["40", "80"])
def test_fix_commands_are_never_wrapped(columns: str) -> None:
    """Piped output and narrow terminals: prose may wrap, a command must paste whole."""
    from tests.conftest import doctor

    saved = load_facts(FIXTURES / "h100-fa2-over-fa4.json")
    commands = [c for f in judge(saved).findings for c in f.fix]
    assert commands and max(len(c) for c in commands) > int(columns)
    _, out, _ = doctor("check", "--facts", FIXTURES / "h100-fa2-over-fa4.json", env={**os.environ, "COLUMNS": columns})
    shown = [line.strip().removeprefix("$ ") for line in out.splitlines() if line.strip().startswith("$ ")]
    assert all(command in shown for command in commands), out


def test_xformers_next_to_fa4(venv: Venv, real: RealPackages) -> None:
    """The real xformers 0.0.35 and flash-attn-4 4.0.0b36 wheels, a real CPU torch: `import
    xformers.ops` fails on flash_attn.flash_attn_interface. The second fix (xFormers out) is run;
    the first (FA2 in) compiles CUDA and is checked for what it names."""
    venv.see_packages_of(real.torch_python)
    venv.install(pypi_wheel("xformers==0.0.35"), real.fa4_wheel)
    before = judge(collect(str(venv.python), modules=["xformers.ops"]))
    found = the(before, "xformers-fa4-namespace")
    assert "flash_attn.flash_attn_interface" in found.title
    failed = next(r for r in before.facts.imports if r.module == "xformers.ops")
    assert failed.outcome == "failed" and "flash_attn.flash_attn_interface" in failed.detail  # the real import
    assert the(before, "import-failed").fix == found.fix  # --deep names the cause, not a reinstall
    assert found.fix[0].startswith("attn-doctor install fa2")
    venv.uninstall("xformers")  # the other fix, as printed but through the doctor's pip (the venv has none)
    after = judge(collect(str(venv.python)))
    assert "xformers-fa4-namespace" not in {f.code for f in after.findings}
    assert errors(after) <= errors(before)


def test_fa2_rocm_triton_build_needs_its_variable(
    venv: Venv, real: RealPackages, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real FA2 files without a compiled extension (what its ROCm Triton build installs) on the
    MI300X's torch: without FLASH_ATTENTION_TRITON_AMD_ENABLE=TRUE its import looks for
    flash_attn_2_cuda. The fix (the variable) is set, the check run again."""
    venv.install(real.fa2_wheel)
    mi300 = load_facts(MACHINES / "mi300x.json")

    def on_mi300() -> Report:
        here = collect(str(venv.python))
        return judge(dataclasses.replace(here, gpus=mi300.gpus, driver=mi300.driver, torch=mi300.torch))

    monkeypatch.delenv("FLASH_ATTENTION_TRITON_AMD_ENABLE", raising=False)
    before = on_mi300()
    fix = the(before, "fa2-rocm-triton-disabled").fix[0]
    assert fix.startswith("export FLASH_ATTENTION_TRITON_AMD_ENABLE=TRUE")
    assert "fa2-extension-missing" not in {f.code for f in before.findings}  # by design on ROCm
    name, value = fix.split("  #")[0].removeprefix("export ").split("=")
    monkeypatch.setenv(name, value)
    after = on_mi300()
    assert "fa2-rocm-triton-disabled" not in {f.code for f in after.findings}
    assert after.facts.variable(name) == "TRUE"


def test_an_interrupted_repair_is_reported_and_undone(venv: Venv, real: RealPackages) -> None:
    """fix-shadow killed half-way (kill -9 after its first step backed up): `check` says so and
    names `attn-doctor undo`, which, run as printed, puts the environment back."""
    from tests.conftest import doctor, snapshot
    from tests.test_fix_shadow import fa2_over_fa4, fix

    fa2_over_fa4(venv, real)
    before = snapshot(venv)
    assert fix(venv, env={**os.environ, "ATTN_DOCTOR_KILL_AT": "done:1"})[0] == 137
    report = judge(collect(str(venv.python)))
    [unfinished] = [f for f in report.findings if f.code == "repair-unfinished"]
    command = unfinished.fix[0].split("  #")[0].split()
    assert command[:2] == ["attn-doctor", "undo"]
    assert doctor(*command[1:])[0] == 0
    assert "repair-unfinished" not in {f.code for f in judge(collect(str(venv.python))).findings}
    assert snapshot(venv) == before
