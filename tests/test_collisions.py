"""The FA2/FA4 collisions, reproduced with the real packages in real venvs."""

from __future__ import annotations

import csv
import json
import sys
import zipfile
from pathlib import Path

from attn_doctor.facts.collect import collect
from attn_doctor.report import Report, judge
from tests.conftest import FA2_VERSION, FA4_VERSION, RealPackages, RecordedNvml, Venv, run


def wheel_record(wheel: Path) -> dict[str, str]:
    """path -> sha256 of every hashed row of the wheel's own RECORD."""
    with zipfile.ZipFile(wheel) as archive:
        record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        rows = csv.reader(archive.read(record).decode().splitlines())
        return {row[0]: row[1] for row in rows if len(row) > 1 and row[1]}


def check(venv: Venv, nvml: RecordedNvml) -> Report:
    return judge(collect(str(venv.python), nvml=nvml))


def codes(report: Report) -> set[str]:
    return {f.code for f in report.findings}


def only(report: Report, code: str) -> str:
    [found] = [f for f in report.findings if f.code == code]
    return found.title + "\n" + "\n".join(found.fix + found.evidence)


FA4_ONLY_CLEAN = {"fa4-shadowed", "fa4-files-overwritten", "fa4-files-missing", "fa2-uninstall-breaks-fa4"}


def test_fa4_wheel_alone_is_clean(venv: Venv, real: RealPackages, h100: RecordedNvml) -> None:
    venv.install(real.fa4_wheel)
    report = check(venv, h100)
    fa4 = report.facts.package("flash-attn-4")
    assert fa4 is not None and fa4.version == FA4_VERSION
    # every hashed file of the wheel, plus the three pip writes (INSTALLER, REQUESTED, direct_url.json)
    assert fa4.files_hashed == len(wheel_record(real.fa4_wheel)) + 3
    assert not fa4.modified and not fa4.missing
    assert not codes(report) & FA4_ONLY_CLEAN
    cute = report.facts.resolution("flash_attn.cute")
    # FA4 ships no flash_attn/__init__.py: the parent is a namespace package
    assert report.facts.resolution("flash_attn").kind == "namespace"  # type: ignore[union-attr]
    assert cute is not None and cute.origin == str(venv.site / "flash_attn" / "cute" / "__init__.py")


def test_fa2_without_extension(venv: Venv, real: RealPackages, h100: RecordedNvml) -> None:
    venv.install(real.fa2_wheel)
    report = check(venv, h100)
    [missing] = [f for f in report.findings if f.code == "fa2-extension-missing"]
    # no torch in this venv: FA2's build needs it, so it is installed first
    assert missing.fix[0].endswith("-m pip install torch")
    assert missing.fix[1].startswith("FLASH_ATTENTION_FORCE_BUILD=TRUE")  # else setup.py fetches a wheel
    assert (
        f"--force-reinstall --no-deps --no-build-isolation --no-cache-dir flash-attn=={FA2_VERSION}" in missing.fix[1]
    )
    assert not codes(report) & FA4_ONLY_CLEAN


def test_fa2_over_fa4_overwrites_files(venv: Venv, real: RealPackages, h100: RecordedNvml) -> None:
    """§4.2: FA2 installed after FA4 writes its stale cute/ copies over FA4's files."""
    venv.install(real.fa4_wheel)
    venv.install(real.fa2_wheel)
    report = check(venv, h100)
    assert {"fa4-files-overwritten", "fa2-uninstall-breaks-fa4"} <= codes(report)
    assert "fa4-shadowed" not in codes(report)  # same path: overwritten, not shadowed
    fa4 = report.facts.package("flash-attn-4")
    assert fa4 is not None
    overwritten = {m.path: m.now_matches for m in fa4.modified}
    assert overwritten["flash_attn/cute/__init__.py"] == "flash-attn"
    # exactly the shared names whose contents differ between the two wheels
    fa2_rows, fa4_rows = wheel_record(real.fa2_wheel), wheel_record(real.fa4_wheel)
    differing = {p for p in fa2_rows.keys() & fa4_rows.keys() if fa2_rows[p] != fa4_rows[p]}
    assert set(overwritten) == differing
    # FA2 ships 21 files in cute/; 20 of their names are FA4's too (hopper_helpers.py is FA2's alone),
    assert len(fa2_rows.keys() & fa4_rows.keys()) == 20
    assert f"--force-reinstall --no-deps flash-attn-4=={FA4_VERSION}" in only(report, "fa4-files-overwritten")


def test_fa4_over_fa2_works_until_fa2_is_uninstalled(venv: Venv, real: RealPackages, h100: RecordedNvml) -> None:
    """FA4 installed last wins every shared file; `pip uninstall flash-attn` then deletes them (§4.3)."""
    venv.install(real.fa2_wheel)
    venv.install(real.fa4_wheel)
    before = check(venv, h100)
    assert "fa4-files-overwritten" not in codes(before)
    assert "fa2-uninstall-breaks-fa4" in codes(before)
    shared = next(s for s in before.facts.package("flash-attn-4").shared if s.other == "flash-attn")  # type: ignore[union-attr]
    assert "flash_attn/cute/interface.py" in shared.paths

    venv.uninstall("flash-attn")
    after = check(venv, h100)
    assert "fa4-files-missing" in codes(after)
    fa4 = after.facts.package("flash-attn-4")
    assert fa4 is not None and set(fa4.missing) == set(shared.paths)
    assert "fa2-uninstall-breaks-fa4" not in codes(after)
    # what the user sees: flash_attn.cute still "imports", as an empty namespace package
    assert after.facts.resolution("flash_attn.cute").kind == "namespace"  # type: ignore[union-attr]

    venv.install(real.fa2_wheel)  # and the advised repair restores FA4 (§4: force-reinstall FA4)
    venv.pip("install", "--force-reinstall", "--no-deps", "--no-index", real.fa4_wheel)
    repaired = check(venv, h100)
    assert not codes(repaired) & {"fa4-files-missing", "fa4-files-overwritten"}


def test_editable_fa4_is_shadowed_by_fa2_stub(venv: Venv, real: RealPackages, h100: RecordedNvml) -> None:
    """§4.1: the editable finder is asked only after FA2's regular package has answered."""
    venv.install(real.fa2_wheel)
    venv.install_editable(real.fa4_source)
    report = check(venv, h100)
    assert "fa4-shadowed" in codes(report)
    text = only(report, "fa4-shadowed")
    stub = venv.site / "flash_attn" / "cute"
    assert f"FA2's stale cute/ stub at {stub}" in text
    assert str(real.fa4_source / "__init__.py") in text

    # the advised fix, run as printed, makes flash_attn.cute resolve to the source tree
    repair, _, move = next(f for f in report.findings if f.code == "fa4-shadowed").fix
    assert repair == f"attn-doctor fix-shadow --python {venv.python}"
    run("sh", "-c", move)  # the by-hand alternative (attn-doctor's own repair: test_fix_shadow.py)
    fixed = check(venv, h100)
    assert "fa4-shadowed" not in codes(fixed)
    cute = fixed.facts.resolution("flash_attn.cute")
    assert cute is not None and cute.origin == str(real.fa4_source / "__init__.py")
    assert stub.with_name("cute.fa2-stub").is_dir()  # moved aside, not deleted


def test_resolution_matches_the_real_import(venv: Venv, real: RealPackages, h100: RecordedNvml) -> None:
    """The finder-only resolution agrees with where Python really loads flash_attn.cute from.
    FA4 alone: importing the package runs nothing heavy up to `__spec__` (cutlass is missing,
    so we ask for the spec through importlib.util.find_spec on the namespace parent)."""
    venv.install(real.fa4_wheel)
    report = check(venv, h100)
    real_origin = run(
        venv.python, "-c", "import importlib.util as u; print(u.find_spec('flash_attn.cute').origin)"
    ).stdout.strip()
    assert report.facts.resolution("flash_attn.cute").origin == real_origin  # type: ignore[union-attr]


def test_cli_end_to_end_json(venv: Venv, real: RealPackages) -> None:
    """The installed command on the real collision: JSON out, exit 1 for the errors."""
    venv.install(real.fa4_wheel)
    venv.install(real.fa2_wheel)
    done = run(sys.executable, "-m", "attn_doctor", "check", "--python", venv.python, "--format", "json", check=False)
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert data["schema"] == "attn-doctor/report-1"
    found = {f["code"]: f for f in data["findings"]}
    assert found["fa4-files-overwritten"]["severity"] == "error"
    # this venv has no pip (made --without-pip) and the machine no uv: pip is bootstrapped first
    assert found["fa4-files-overwritten"]["fix"] == [
        f"attn-doctor fix-shadow --python {venv.python}",
        "# or by hand:",
        f"{venv.python} -m ensurepip && {venv.python} -m pip install --force-reinstall --no-deps "
        f"flash-attn-4=={FA4_VERSION}",
    ]
    assert data["summary"]["exit_code"] == 1
    assert Path(data["python"]["executable"]) == venv.python
