"""`attn-doctor install` for real: real venvs, the real flash-attn-4 wheel and its real
dependency wheels from a local wheelhouse, the real pip. No GPU here, so the CPU torch's venv
needs --force, and FA4's import check then fails for want of triton (which only a CUDA torch
brings): the run must undo itself to the byte. The successful run is the H100's
(tests/fixtures/h100-install-fa4.txt)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from attn_doctor.facts.model import Facts
from attn_doctor.facts.repairs import repairs_root
from tests.conftest import FA4_VERSION, RealPackages, Venv, doctor, interpreter, run, snapshot


def install(venv: Venv, backend: str, wheels: Path, *extra: str) -> tuple[int, str, str]:
    return doctor("install", backend, "--python", venv.python, "--find-links", wheels, "--offline", *extra)


def plan_lines(out: str) -> list[str]:
    return re.findall(r"^\d+\. .*$", out, re.MULTILINE)


def test_dry_run_prints_what_a_real_run_runs_and_changes_nothing(torch_venv: Venv, fa4_wheelhouse: Path) -> None:
    before = snapshot(torch_venv)
    code, dry, err = install(torch_venv, "fa4", fa4_wheelhouse, "--force", "--dry-run")
    assert code == 0, err
    assert snapshot(torch_venv) == before and not repairs_root(str(torch_venv.root)).exists()
    code, out, _ = install(torch_venv, "fa4", fa4_wheelhouse, "--force", "--yes")
    ran = re.findall(r"^\[(\d+)/\d+\] (.*)$", out, re.MULTILINE)
    assert [f"{n}. {line}" for n, line in ran] == plan_lines(dry)  # the very steps the dry run showed
    (journal,) = repairs_root(str(torch_venv.root)).glob("*/journal.json")
    argv = json.loads(journal.read_text())["steps"][0]["argv"]
    assert argv == [
        str(torch_venv.python),
        "-m",
        "pip",
        "install",
        "--no-index",
        "--find-links",
        str(fa4_wheelhouse),
        f"flash-attn-4=={FA4_VERSION}",
        "torch==2.13.0+cpu",
    ]


def test_an_install_that_does_not_import_is_undone_to_the_byte(torch_venv: Venv, fa4_wheelhouse: Path) -> None:
    before = snapshot(torch_venv)
    code, out, err = install(torch_venv, "fa4", fa4_wheelhouse, "--force", "--yes")
    assert code == 1
    assert "Successfully installed" in out and "flash-attn-4-4.0.0b36" in out  # pip's live output, shown
    assert err.count("\n") == 1 and "install failed, and was undone" in err
    assert "import flash_attn.cute: failed" in err and "No module named 'triton'" in err
    assert snapshot(torch_venv) == before  # 12 distributions came and went
    (folder,) = (p for p in repairs_root(str(torch_venv.root)).iterdir() if p.is_dir())
    assert "Successfully installed" in (folder / "step-1.log").read_text()  # the log is kept
    assert json.loads((folder / "journal.json").read_text())["state"] == "undone"


def broken_copy(wheel: Path, target: Path, member: str) -> Path:
    """The same wheel with one byte of `member`'s compressed data flipped: pip reads its
    metadata and resolves it, then fails while unpacking it, after installing its dependencies."""
    data = bytearray(wheel.read_bytes())
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo(member)
    header = info.header_offset
    name_length = int.from_bytes(data[header + 26 : header + 28], "little")
    extra_length = int.from_bytes(data[header + 28 : header + 30], "little")
    start = header + 30 + name_length + extra_length
    data[start + info.compress_size // 2] ^= 0xFF
    copy = target / wheel.name
    copy.write_bytes(bytes(data))
    return copy


def test_a_step_failing_half_way_is_undone(torch_venv: Venv, fa4_wheelhouse: Path, tmp_path: Path) -> None:
    """pip installs the dependencies one by one and does not take them back when a later one
    fails: the doctor does."""
    wheels = tmp_path / "wheels"
    shutil.copytree(fa4_wheelhouse, wheels)
    fa4 = next(wheels.glob("flash_attn_4-*.whl"))
    broken_copy(fa4, wheels, "flash_attn/cute/interface.py")
    before = snapshot(torch_venv)
    code, out, err = install(torch_venv, "fa4", wheels, "--force", "--yes")
    assert code == 1, out + err
    assert "install failed, and was undone" in err and "Bad CRC-32" in err
    assert "Installing collected packages" in out  # the dependencies went in first
    assert snapshot(torch_venv) == before


def test_without_a_terminal_nothing_is_installed(torch_venv: Venv, fa4_wheelhouse: Path) -> None:
    before = snapshot(torch_venv)
    code, _, err = install(torch_venv, "fa4", fa4_wheelhouse, "--force")
    assert code == 2 and "pass --yes" in err
    assert snapshot(torch_venv) == before


def test_no_gpu_is_refused_with_the_reason_and_what_instead(torch_venv: Venv, fa4_wheelhouse: Path) -> None:
    before = snapshot(torch_venv)
    code, out, err = install(torch_venv, "fa4", fa4_wheelhouse, "--yes")
    assert code == 2 and out == ""
    assert err.startswith("attn-doctor: FlashAttention 4 cannot run here: no GPU was found")
    assert "torch 2.13.0+cpu is a CPU-only build" in err and "SDPA" in err
    assert snapshot(torch_venv) == before


def test_a_venv_without_torch_is_refused(venv: Venv, fa4_wheelhouse: Path) -> None:
    code, _, err = install(venv, "fa4", fa4_wheelhouse, "--yes", "--force")
    assert code == 2 and "never chooses torch" in err


def test_the_systems_python_is_refused_unless_asked() -> None:
    python = interpreter("/usr/bin/python3.1[0-9]")
    stdlib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])").stdout.strip()
    if not Path(stdlib, "EXTERNALLY-MANAGED").exists():
        pytest.skip(f"{python} carries no PEP 668 marker")
    code, _, err = doctor("install", "fa4", "--python", python, "--yes")
    assert code == 2 and "PEP 668" in err and "--allow-system" in err
    assert not Path("/usr/.attn-doctor").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu", "H100"], "add --dry-run"),
        (["--offline"], "--offline needs --find-links"),
        (["--find-links", "/nonexistent"], "is not a folder"),
        (["--wheel-dir", "/nonexistent"], "is not a folder"),  # the same option, the name issue 28 gives it
        (["--installer", "conda"], "'conda' is not one of"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    code, _, err = doctor("install", "fa4", *args)
    assert code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("backend", ["fa4", "xformers", "fa2"])
def test_every_pip_step_of_a_plan_resolves_against_the_index(torch_venv: Venv, backend: str) -> None:
    """Each pip command exactly as planned for this venv (real CPU torch 2.13), with pip's own
    --dry-run: the pinned releases exist and resolve next to the installed torch. FA2's compile
    step is a CUDA source build, which pip cannot even describe without a CUDA torch: its pinned
    release must be on the index."""
    from attn_doctor.actions.install import plan_install
    from attn_doctor.actions.plan import Command
    from attn_doctor.actions.recipes.context import InstallRequest
    from attn_doctor.facts.collect import collect

    job = plan_install(collect(str(torch_venv.python)), InstallRequest(backend, force=True))
    pips = [s for s in job.plan.steps if isinstance(s, Command) and "pip" in s.argv]
    assert pips
    for step in pips:
        if "--no-build-isolation" in step.argv:  # a CUDA compile: its metadata needs a CUDA torch
            name, _, version = step.argv[-2].partition("==")
            listed = run(torch_venv.python, "-m", "pip", "index", "versions", name).stdout
            assert re.search(rf"Available versions:.*\b{re.escape(version)}\b", listed), listed
            continue
        at = step.argv.index("install") + 1
        argv = (*step.argv[:at], "--dry-run", *step.argv[at:])
        done = run(*argv, env={**os.environ, **dict(step.env)}, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Would install" in done.stdout or "already satisfied" in done.stdout


def test_undo_takes_back_what_the_install_did_and_nothing_done_after(venv: Venv, fa4_wheelhouse: Path) -> None:
    """An install's undo removes the files it created and restores those it replaced, as recorded
    when it finished: a package someone installed afterwards stays (a shared cluster's venv)."""
    from attn_doctor.actions.journal import start
    from attn_doctor.actions.plan import Command, Plan
    from attn_doctor.actions.runner import carry_out
    from attn_doctor.actions.undo import undo

    pip = (sys.executable, "-m", "pip", "--python", str(venv.python), "install", "--no-index")
    step = Command((*pip, "--find-links", str(fa4_wheelhouse), "einops==0.8.2"), (str(venv.site),), "einops")
    plan = Plan("install-einops", str(venv.python), str(venv.root), (step,), ())
    s0 = snapshot(venv)
    journal = start(plan)
    carry_out(journal, plan, lambda _: None)
    s1 = snapshot(venv)
    venv.install(next(fa4_wheelhouse.glob("typing_extensions-*.whl")))  # by someone else, later
    s2 = snapshot(venv)
    undo(journal.folder, lambda _: None)
    by_the_install = s1.keys() - s0.keys()
    assert any("einops" in p for p in by_the_install)
    assert snapshot(venv) == {p: h for p, h in s2.items() if p not in by_the_install}


def test_moving_aside_a_file_an_earlier_step_removed_is_no_error(tmp_path: Path) -> None:
    """A reinstall by uv drops a stale .pyc that the plan then meant to move aside (seen when
    fix-shadow ran with uv): the step has nothing left to do, and undo has nothing to put back."""
    from attn_doctor.actions.journal import start
    from attn_doctor.actions.plan import MoveAside, Plan
    from attn_doctor.actions.runner import carry_out
    from attn_doctor.actions.undo import undo

    kept = tmp_path / "env" / "kept.py"
    kept.parent.mkdir()
    kept.write_text("x = 1\n")
    steps = (MoveAside(str(tmp_path / "env" / "gone.pyc"), "stale"), MoveAside(str(kept), "stale"))
    plan = Plan("fix-shadow", "python", str(tmp_path / "env"), steps, ())
    said: list[str] = []
    journal = start(plan)
    carry_out(journal, plan, said.append)
    assert any("already gone" in line for line in said) and not kept.exists()
    undo(journal.folder, said.append)
    assert kept.read_text() == "x = 1\n" and not (tmp_path / "env" / "gone.pyc").exists()


def test_a_second_action_on_the_same_environment_waits_for_none(torch_venv: Venv, fa4_wheelhouse: Path) -> None:
    """Two shells on a shared node: while one action holds the environment, another is refused
    in one line and changes nothing."""
    from attn_doctor.actions.journal import exclusive

    before = snapshot(torch_venv)
    with exclusive(str(torch_venv.root)):
        code, _, err = install(torch_venv, "fa4", fa4_wheelhouse, "--force", "--yes")
    assert code == 2 and "another attn-doctor repair or undo is running" in err and err.count("\n") == 1
    assert snapshot(torch_venv) == before


def serve_index(folder: Path, wheels: list[Path], name: str = "flash-attn-4") -> tuple[str, object]:
    """A PEP 503 index of these real wheels on 127.0.0.1, as a cluster's mirror serves it."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    project = folder / "simple" / name
    project.mkdir(parents=True)
    for wheel in wheels:
        shutil.copy(wheel, project / wheel.name)
    links = "".join(f'<a href="{w.name}">{w.name}</a>\n' for w in wheels)
    (project / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/simple", server


def planned_from(
    facts: Facts, backend: str, distribution: str, index: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, list[str]]:
    """The requirement that install's one pip step names for this backend, asking `index`, and its notes."""
    from attn_doctor.actions.install import plan_install
    from attn_doctor.actions.plan import Command
    from attn_doctor.actions.recipes.context import InstallRequest

    monkeypatch.setenv("PIP_INDEX_URL", index)
    job = plan_install(facts, InstallRequest(backend, force=True))
    [pip] = [s for s in job.plan.steps if isinstance(s, Command)]
    [wanted] = [a for a in pip.argv if a.startswith(distribution)]
    return wanted, list(job.plan.notes)


def test_fa4_is_planned_as_the_newest_release_the_index_offers(
    torch_venv: Venv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No hard-coded newest: the release comes from the index the installer uses (here a local one
    serving the real b35 and b36 wheels, then b35 alone); an index that cannot be reached falls back
    to the newest these rules know, and says so."""
    from attn_doctor.facts.collect import collect
    from tests.conftest import pypi_wheel

    b35, b36 = pypi_wheel("flash-attn-4==4.0.0b35"), pypi_wheel("flash-attn-4==4.0.0b36")
    facts = collect(str(torch_venv.python))

    def planned(index: str) -> tuple[str, list[str]]:
        return planned_from(facts, "fa4", "flash-attn-4", index, monkeypatch)

    both, server = serve_index(tmp_path / "both", [b35, b36])
    wanted, notes = planned(both)
    assert wanted == "flash-attn-4==4.0.0b36" and any("the newest release the index offers" in n for n in notes)
    server.shutdown()  # type: ignore[attr-defined]

    older, server = serve_index(tmp_path / "older", [b35])
    assert planned(older)[0] == "flash-attn-4==4.0.0b35"
    server.shutdown()  # type: ignore[attr-defined]

    wanted, notes = planned("http://127.0.0.1:9/simple")  # nothing listens there
    assert wanted == "flash-attn-4==4.0.0b36" and any("the index could not be asked" in n for n in notes)


def test_xformers_is_planned_as_the_newest_release_that_installs_beside_this_torch(
    torch_venv: Venv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No stale table: the index is asked, through the target's own pip resolving with torch held,
    for the newest xFormers whose Requires-Dist takes this torch (the CPU torch 2.13 here). A local
    index serves releases as xFormers publishes them (one newer than the rules know, one that wants
    a newer torch); wheels built here, with exactly that metadata."""
    from attn_doctor.facts.collect import collect
    from tests.test_gpu_code import make_wheel

    built = tmp_path / "built"
    built.mkdir()
    files = {"xformers/__init__.py": b""}
    wheels = [
        make_wheel(built, "xformers", "0.0.35", files, requires=("torch>=2.10",)),
        make_wheel(built, "xformers", "0.0.36", files, requires=("torch>=2.13",)),
        make_wheel(built, "xformers", "0.0.37", files, requires=("torch>=2.14",)),  # not for torch 2.13
    ]
    facts = collect(str(torch_venv.python))

    def planned(index: str) -> tuple[str, list[str]]:
        return planned_from(facts, "xformers", "xformers", index, monkeypatch)

    index, server = serve_index(tmp_path / "index", wheels, "xformers")
    wanted, notes = planned(index)
    server.shutdown()  # type: ignore[attr-defined]
    assert wanted == "xformers==0.0.36", notes
    assert any("the newest release the index offers that installs beside torch==2.13.0" in n for n in notes), notes
    assert any("0.0.36 is newer than these rules know (0.0.35)" in n for n in notes), notes

    wanted, notes = planned("http://127.0.0.1:9/simple")  # nothing listens: the rules' own answer
    assert wanted == "xformers==0.0.35" and any("the index could not be asked" in n for n in notes), notes


def test_fa2_compiles_the_newest_release_the_index_offers_not_a_lookalike(
    torch_venv: Venv, real: RealPackages, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FA2's source build asks the index too. FA3's beta was published as flash_attn 3.0.0b1: a
    newer version under FA2's name that is not FA2, passed over (as any pre-release is where the
    index has final releases)."""
    from attn_doctor.actions.install import plan_install
    from attn_doctor.actions.plan import Command
    from attn_doctor.actions.recipes.context import InstallRequest
    from attn_doctor.facts.collect import collect
    from tests.conftest import cuda_toolkit
    from tests.test_gpu_code import make_wheel

    monkeypatch.setenv("CUDA_HOME", str(cuda_toolkit()))
    beta = make_wheel(tmp_path, "flash_attn", "3.0.0b1", {"flash_attn_interface.py": b""}, "cp311-cp311-linux_x86_64")
    index, server = serve_index(tmp_path / "index", [real.fa2_wheel, beta], "flash-attn")
    monkeypatch.setenv("PIP_INDEX_URL", index)
    try:
        job = plan_install(collect(str(torch_venv.python)), InstallRequest("fa2", force=True))
    finally:
        server.shutdown()  # type: ignore[attr-defined]
    [pip] = [s for s in job.plan.steps if isinstance(s, Command) and "FLASH_ATTENTION_FORCE_BUILD" in dict(s.env)]
    assert "flash-attn==2.8.3.post2" in pip.argv, pip.argv
    assert any("flash-attn 2.8.3.post2: the newest release the index offers" in n for n in job.plan.notes), (
        job.plan.notes
    )
