"""Package findings other than the FA2/FA4 collisions, each on real files in a real venv."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from attn_doctor.facts.collect import collect
from attn_doctor.facts.saved import load_facts
from attn_doctor.report import Report, judge
from tests.conftest import FIXTURES, RealPackages, RecordedNvml, Venv, pypi_wheel, run


def check(venv: Venv, nvml: RecordedNvml) -> Report:
    return judge(collect(str(venv.python), nvml=nvml))


def the(report: Report, code: str) -> str:
    [found] = [f for f in report.findings if f.code == code]
    return "\n".join((found.title, *found.fix, *found.evidence))


def test_sageattention_1_from_pypi(venv: Venv, h100: RecordedNvml) -> None:
    """`pip install sageattention` gives 1.0.6: SageAttention 1, Triton only (https://pypi.org/project/sageattention/#history)."""
    venv.install(pypi_wheel("sageattention==1.0.6"))
    report = check(venv, h100)
    assert "sageattention 1.0.6 is SageAttention 1" in the(report, "sageattention-v1")
    # the fix is one that exists (attn-doctor has no `install` yet): the source build
    assert "attn-doctor install sage  # builds SageAttention 2.2.0 from source" in the(report, "sageattention-v1")
    assert report.facts.resolution("sageattention").kind == "package"  # type: ignore[union-attr]


def test_flash_attn_4_placeholder(venv: Venv, h100: RecordedNvml) -> None:
    """The yanked 0.0.1 installs flash_attn_4/__init__.py and no flash_attn.cute."""
    venv.install(pypi_wheel("flash-attn-4==0.0.1"))
    report = check(venv, h100)
    assert "yanked placeholder" in the(report, "flash-attn-4-placeholder")
    assert report.facts.resolution("flash_attn.cute").kind == "missing"  # type: ignore[union-attr]


def test_a_file_changed_by_hand(venv: Venv, real: RealPackages, h100: RecordedNvml) -> None:
    venv.install(real.fa2_wheel)
    with (venv.site / "flash_attn" / "bert_padding.py").open("a") as handle:
        handle.write("# patched on the cluster\n")
    (venv.site / "flash_attn" / "flash_attn_triton.py").unlink()
    text = the(check(venv, h100), "package-files-modified")
    assert "1 file(s) changed, 1 missing" in text
    assert "changed: flash_attn/bert_padding.py" in text and "missing: flash_attn/flash_attn_triton.py" in text
    assert "--force-reinstall --no-deps flash-attn==2.8.3.post2" in text


def test_a_stale_second_dist_info(venv: Venv, real: RealPackages, h100: RecordedNvml) -> None:
    """What an interrupted upgrade leaves: two dist-info folders for one distribution."""
    venv.install(real.fa4_wheel)
    current = venv.site / "flash_attn_4-4.0.0b36.dist-info"
    stale = venv.site / "flash_attn_4-4.0.0b35.dist-info"
    shutil.copytree(current, stale)
    (stale / "METADATA").write_text((stale / "METADATA").read_text().replace("4.0.0b36", "4.0.0b35"))
    text = the(check(venv, h100), "package-duplicate")
    assert "flash-attn-4 has 2 dist-info folders" in text
    assert "4.0.0b35" in text and "4.0.0b36" in text and ".stale" in text


def sageattention_wheel(folder: Path, commit: str, build: Path) -> Path:
    """A real wheel of sageattention 2.2.0 whose sageattention/sm90_compile.py is upstream's file at
    that commit (tests/fixtures/sage/, Apache-2.0: v2.2.0 = eb615cf, and ff71e1e = PR #307's merge);
    its compiled extensions, which need nvcc, are left out. Built by `build`, a Python with setuptools."""
    project = folder / f"sage-{commit}"
    (project / "sageattention").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "sageattention"\nversion = "2.2.0"\n[tool.setuptools]\npackages = ["sageattention"]\n'
    )
    (project / "sageattention" / "__init__.py").write_text("")
    shutil.copy(FIXTURES / "sage" / f"sm90_compile-{commit}.py", project / "sageattention" / "sm90_compile.py")
    run(build, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", folder, project)
    [wheel] = folder.glob("sageattention-2.2.0-*.whl")
    return wheel


@pytest.mark.parametrize(("commit", "broken"), [("v2.2.0", True), ("ff71e1e", False)])
def test_sageattention_built_from_its_v2_2_0_tag_on_hopper(
    tmp_path: Path, venv: Venv, real: RealPackages, h100: RecordedNvml, commit: str, broken: bool
) -> None:
    """Both builds say 2.2.0; the tag's sm90_compile.py rebinds the op's name to its fake, so on
    Hopper sageattn() returns torch.empty() (thu-ml/SageAttention#288): told by that file."""
    venv.install(sageattention_wheel(tmp_path, commit, real.torch_python))
    report = check(venv, h100)
    codes = {f.code for f in report.findings}
    assert ("sageattention-hopper-no-kernel" in codes) is broken
    problems = report.assessments["sage"].problems
    assert any("v2.2.0 tag" in p for p in problems) is broken  # --require sage fails with it
    if broken:
        text = the(report, "sageattention-hopper-no-kernel")
        assert "uninitialised memory" in text and "attn-doctor install sage" in text
    # an A100 never calls the sm90 op: the same files are no fault there
    a100 = dataclasses.replace(report.facts, gpus=load_facts(FIXTURES / "machines" / "a100.json").gpus)
    assert "sageattention-hopper-no-kernel" not in {f.code for f in judge(a100).findings}


def test_a_marked_file_that_cannot_be_read_is_not_claimed(
    tmp_path: Path, venv: Venv, real: RealPackages, h100: RecordedNvml
) -> None:
    venv.install(sageattention_wheel(tmp_path, "v2.2.0", real.torch_python))
    marked = venv.site / "sageattention" / "sm90_compile.py"
    marked.unlink()
    marked.mkdir()  # not a plain file
    assert check(venv, h100).facts.marked_files == ()
