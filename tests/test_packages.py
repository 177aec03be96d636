"""Package findings other than the FA2/FA4 collisions, each on real files in a real venv."""

from __future__ import annotations

import shutil

from attn_doctor.facts.collect import collect
from attn_doctor.report import Report, judge
from tests.conftest import RealPackages, RecordedNvml, Venv, pypi_wheel


def check(venv: Venv, nvml: RecordedNvml) -> Report:
    return judge(collect(str(venv.python), nvml=nvml))


def the(report: Report, code: str) -> str:
    [found] = [f for f in report.findings if f.code == code]
    return "\n".join((found.title, *found.fix, *found.evidence))


def test_sageattention_1_from_pypi(venv: Venv, h100: RecordedNvml) -> None:
    """`pip install sageattention` gives 1.0.6: SageAttention 1, Triton only (KNOWLEDGE.md §1)."""
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
