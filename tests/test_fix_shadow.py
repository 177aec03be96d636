"""`attn-doctor fix-shadow` and `attn-doctor undo` on the three collision states, built from the
real FA2 2.8.3.post2 files and the real flash-attn-4 wheel and sdist in real venvs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from attn_doctor.actions.plan import Refusal
from attn_doctor.actions.shadow import plan_fix_shadow
from attn_doctor.facts.saved import load_facts
from attn_doctor.report import judge
from tests.conftest import CACHE, FIXTURES, RealPackages, Venv, doctor, snapshot

COLLISIONS = {"fa4-shadowed", "fa4-files-overwritten", "fa4-files-missing", "fa2-uninstall-breaks-fa4"}
WHEELS = CACHE / "wheels"  # FA4 is reinstalled from here: the tests need no index


def codes(venv: Venv) -> set[str]:
    _, out, _ = doctor("check", "--python", venv.python, "--format", "json")
    return {f["code"] for f in json.loads(out)["findings"]}


def report_json(venv: Venv) -> dict[str, object]:
    _, out, _ = doctor("check", "--python", venv.python, "--format", "json")
    return dict(json.loads(out))


def fix(venv: Venv, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return doctor("fix-shadow", "--python", venv.python, "--yes", "--wheel-dir", WHEELS, *extra, env=env)


def fa2_over_fa4(venv: Venv, real: RealPackages) -> None:
    """FA4's files overwritten by FA2's copies (FA2 installed after FA4)."""
    venv.install(real.fa4_wheel)
    venv.install(real.fa2_wheel)


def editable_fa4_and_fa2(venv: Venv, real: RealPackages) -> None:
    """§4.1: FA4 from source, shadowed by FA2's stub."""
    venv.install(real.fa2_wheel)
    venv.install_editable(real.fa4_source)


def fa2_uninstalled(venv: Venv, real: RealPackages) -> None:
    """§4.3: both installed, then `pip uninstall flash-attn` took FA4's files."""
    venv.install(real.fa2_wheel)
    venv.install(real.fa4_wheel)
    venv.uninstall("flash-attn")


STATES: list[Callable[[Venv, RealPackages], None]] = [fa2_over_fa4, editable_fa4_and_fa2, fa2_uninstalled]


@pytest.mark.parametrize("state", STATES, ids=[s.__name__ for s in STATES])
def test_repair_then_undo(venv: Venv, real: RealPackages, state: Callable[[Venv, RealPackages], None]) -> None:
    state(venv, real)
    before = snapshot(venv)
    assert codes(venv) & COLLISIONS

    code, dry, _ = doctor("fix-shadow", "--python", venv.python, "--dry-run", "--wheel-dir", WHEELS)
    assert code == 0 and snapshot(venv) == before, "--dry-run changed something"

    code, out, err = fix(venv)
    assert code == 0, out + err
    # the dry run listed exactly what the real run then did, step for step
    planned = [line.split(". ", 1)[1] for line in dry.splitlines() if line[:1].isdigit()]
    done = [line.split("] ", 1)[1] for line in out.splitlines() if line.startswith("[")]
    assert planned == done and planned

    after = report_json(venv)
    assert not {f["code"] for f in after["findings"]} & COLLISIONS  # type: ignore[attr-defined]
    fa4 = next(p for p in after["packages"] if p["name"] == "flash-attn-4")  # type: ignore[attr-defined]
    assert fa4["modified"] == [] and fa4["missing"] == []
    cute = next(r for r in after["resolutions"] if r["module"] == "flash_attn.cute")  # type: ignore[attr-defined]
    if state is editable_fa4_and_fa2:
        assert cute["origin"] == str(real.fa4_source / "__init__.py")  # the source tree now
    else:
        # FA4's own __init__.py, byte for byte as its wheel has it
        init = Path(cute["origin"])
        assert init == venv.site / "flash_attn" / "cute" / "__init__.py"
        assert "flash_attn_func" in init.read_text()

    code, out, _ = doctor("undo", "--python", venv.python)
    assert code == 0 and "Undone" in out
    assert snapshot(venv) == before, "undo did not restore the environment byte for byte"
    assert doctor("undo", "--python", venv.python)[1].startswith("Nothing to undo")


def test_fa2_keeps_working_and_its_uninstall_spares_fa4(venv: Venv, real: RealPackages) -> None:
    fa2_over_fa4(venv, real)
    fa2_files = {p: h for p, h in snapshot(venv).items() if "/flash_attn/" in p and "/cute/" not in p}
    assert fix(venv)[0] == 0
    assert {p: h for p, h in snapshot(venv).items() if "/flash_attn/" in p and "/cute/" not in p} == fa2_files
    # the uninstall that used to delete FA4's files now leaves them
    venv.uninstall("flash-attn")
    left = report_json(venv)
    assert not {f["code"] for f in left["findings"]} & COLLISIONS  # type: ignore[attr-defined]
    assert (venv.site / "flash_attn" / "cute" / "interface.py").exists()


def test_nothing_to_fix(venv: Venv, real: RealPackages) -> None:
    venv.install(real.fa4_wheel)
    before = snapshot(venv)
    code, out, _ = fix(venv)
    assert code == 0 and out.startswith("Nothing to fix")
    assert snapshot(venv) == before and not (venv.root / ".attn-doctor" / "repairs").exists()


def test_fa2_alone_is_left_alone(venv: Venv, real: RealPackages) -> None:
    venv.install(real.fa2_wheel)
    before = snapshot(venv)
    assert fix(venv)[1].startswith("Nothing to fix") and snapshot(venv) == before


def test_asks_first_and_refuses_without_a_terminal(venv: Venv, real: RealPackages) -> None:
    fa2_over_fa4(venv, real)
    before = snapshot(venv)
    code, _, err = doctor("fix-shadow", "--python", venv.python, "--wheel-dir", WHEELS)
    assert code == 2 and "pass --yes" in err and snapshot(venv) == before


def test_a_failed_repair_is_rolled_back(venv: Venv, real: RealPackages, tmp_path: Path) -> None:
    """pip cannot find the FA4 wheel (an empty wheel folder, no index): nothing stays changed."""
    fa2_over_fa4(venv, real)
    before = snapshot(venv)
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    code, _, err = doctor("fix-shadow", "--python", venv.python, "--yes", "--wheel-dir", empty)
    assert code == 1 and "repair failed, and was undone" in err and err.count("\n") == 1
    assert snapshot(venv) == before


# The kill points of the FA2-over-FA4 repair (4 steps: reinstall FA4, 2 stub files aside, FA2's RECORD).
KILL_POINTS = ["started:1", "backed-up:1", "done:1", "started:2", "done:3", "started:4", "done:4"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_repair_can_be_undone(venv: Venv, real: RealPackages, point: str) -> None:
    fa2_over_fa4(venv, real)
    before = snapshot(venv)
    code, _, _ = fix(venv, env={**os.environ, "ATTN_DOCTOR_KILL_AT": point})
    assert code == 137  # killed where the test asked
    assert doctor("undo", "--python", venv.python)[0] == 0
    assert snapshot(venv) == before


@pytest.mark.parametrize("point", ["backed-up:1", "done:2"])
def test_killed_repair_can_be_finished(venv: Venv, real: RealPackages, point: str) -> None:
    """Running fix-shadow again finishes the job from wherever the first run stopped; two undos
    (the second run's, then the first's) give back the original."""
    fa2_over_fa4(venv, real)
    before = snapshot(venv)
    assert fix(venv, env={**os.environ, "ATTN_DOCTOR_KILL_AT": point})[0] == 137
    code, out, err = fix(venv)
    assert code == 0, out + err
    assert not codes(venv) & COLLISIONS
    assert doctor("undo", "--python", venv.python)[0] == 0
    assert doctor("undo", "--python", venv.python)[0] == 0
    assert snapshot(venv) == before


def test_system_python_is_refused() -> None:
    """A PEP 668 system Python is the OS's: refused unless --allow-system (judged on the H100's facts)."""
    import dataclasses

    facts = load_facts(FIXTURES / "h100-fa2-over-fa4.json")
    system = dataclasses.replace(facts, python=dataclasses.replace(facts.python, externally_managed=True))
    with pytest.raises(Refusal, match="PEP 668"):
        plan_fix_shadow(judge(system))
