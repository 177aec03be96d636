"""Repairs that never lose data and never leave the environment (issue 17), each case built for
real: real venvs with the real FA2/FA4 files, a real tmpfs filled up, real symlinks, chattr +i,
a real SIGKILL and SIGINT. Each asserts that nothing outside the environment changed (a sha256
manifest of a watched folder), that the environment is as before or as planned, that what a user
added afterwards survives, and the exit code and the one line."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from attn_doctor.actions.journal import KEEP, RunnerError, latest
from attn_doctor.actions.plan import Command, MoveAside, Plan, RewriteFile
from attn_doctor.actions.runner import Undone, carry_out_checked
from attn_doctor.actions.undo import AFTER_LAST_BEAT_NS, undo
from attn_doctor.facts.repairs import repairs_root, unfinished
from tests.conftest import REPO, SEAM, RealPackages, Venv, doctor, pypi_wheel, run, snapshot
from tests.test_fix_shadow import WHEELS, fa2_over_fa4, fix

MID_PIP = "output:1:Successfully uninstalled"  # FA4's old files are stashed, its new ones going in


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the environment, with a file a hostile RECORD or journal might aim at."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_text("not the environment's\n")
    (folder / "victim").write_text("must keep its bytes\n")
    return folder


def manifest(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in sorted(folder.rglob("*"))
    }


def killed(venv: Venv, point: str, how: str = "SIGKILL") -> tuple[int, str, str]:
    env = {**os.environ, "ATTN_DOCTOR_KILL_AT": point}
    if how == "SIGINT":
        env["ATTN_DOCTOR_KILL_WITH"] = "SIGINT"
    return fix(venv, env=env)


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("attn-doctor: ")


def journal_of(venv: Venv) -> Path:
    (journal,) = repairs_root(str(venv.root)).glob("*/journal.json")
    return journal


# ---- data lost or left half-done ---------------------------------------------------------------


def test_undo_after_a_kill_mid_pip_keeps_what_was_added_afterwards(venv: Venv, real: RealPackages) -> None:
    fa2_over_fa4(venv, real)
    (venv.site / "an-empty-folder").mkdir()  # empty folders that existed stay
    before = snapshot(venv)
    assert killed(venv, MID_PIP)[0] == 137
    assert unfinished(str(venv.root)) == [journal_of(venv).parent]
    assert snapshot(venv) != before  # pip was stopped half-way: FA4 partly gone, stashes left
    time.sleep(AFTER_LAST_BEAT_NS / 1e9 + 0.1)  # a user's later work, after the window
    left = snapshot(venv)
    venv.install(pypi_wheel("six==1.17.0"))
    (venv.root / "bin" / "my-script").write_text("#!/bin/sh\necho mine\n")
    (venv.site / "my-empty-folder").mkdir()
    added = {p: h for p, h in snapshot(venv).items() if p not in left}
    assert any("six" in p for p in added)

    code, out, err = doctor("undo", "--python", venv.python)
    assert code == 0 and "Undone" in out, out + err
    assert snapshot(venv) == {**before, **added}
    assert not list(venv.site.glob("~*")) and unfinished(str(venv.root)) == []


@pytest.mark.parametrize("point", ["started:1", "backed-up:1", MID_PIP, "done:1", "started:3", "done:4"])
def test_ctrl_c_at_any_point_is_undone_and_said(venv: Venv, real: RealPackages, point: str) -> None:
    fa2_over_fa4(venv, real)
    before = snapshot(venv)
    code, out, _ = killed(venv, point, "SIGINT")
    assert code == 130
    assert "Interrupted: everything this run had changed was put back" in out
    assert snapshot(venv) == before and latest(str(venv.root)) is None
    assert not list(venv.site.glob("~*"))  # no pip stash left


def test_a_real_ctrl_c_while_pip_runs(venv: Venv, real: RealPackages) -> None:
    """SIGINT from outside, to the doctor alone, while pip writes: pip is stopped and waited for."""
    fa2_over_fa4(venv, real)
    before = snapshot(venv)
    argv = [sys.executable, "-m", "attn_doctor", "fix-shadow", "--python", str(venv.python), "--yes"]
    # SIGINT as a terminal delivers it, even where this suite runs with it ignored (nohup, CI)
    default = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    child = subprocess.Popen([*argv, "--wheel-dir", str(WHEELS)], stdout=subprocess.PIPE, text=True, preexec_fn=default)
    deadline = time.monotonic() + 60
    while not list(repairs_root(str(venv.root)).glob("*/step-1.log")) and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 130 and "put back" in out
    assert snapshot(venv) == before


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 48 MiB tmpfs (root only)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or run("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mount, check=False).returncode:
        pytest.skip("a tmpfs needs root")
    yield mount
    run("umount", "-l", mount, check=False)


def fill(disk: Path, leave: int) -> Path:
    """All but `leave` bytes of the disk taken by one file."""
    filler = disk / f"filler-{len(list(disk.glob('filler-*')))}"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(free - leave, 0))
    return filler


def test_disk_full_mid_repair_is_undone_in_one_line(small_disk: Path, real: RealPackages) -> None:
    venv = Venv(small_disk / "venv")
    fa2_over_fa4(venv, real)
    before = snapshot(venv)
    fill(small_disk, 400 * 1024)  # room for the journal and its reserve, not for FA4's files
    code, _, err = fix(venv)
    assert code == 1 and one_line(err) and "repair failed, and was undone" in err, err
    assert "No space left" in err or "disk is full" in err
    assert snapshot(venv) == before


def test_undo_on_a_full_disk_relinks(small_disk: Path, real: RealPackages) -> None:
    venv = Venv(small_disk / "venv")
    fa2_over_fa4(venv, real)
    before = snapshot(venv)
    assert killed(venv, MID_PIP)[0] == 137
    filler = fill(small_disk, 0)
    code, out, err = doctor("undo", "--python", venv.python)
    assert code == 0 and "Undone" in out, out + err
    assert snapshot(venv) == before
    # and a repair on a disk with no room at all is refused before it changes anything
    fill(small_disk, 0).rename(small_disk / "more")  # what the undo freed (its reserve) taken too
    code, _, err = fix(venv)
    assert (code, snapshot(venv)) == (2, before) and one_line(err) and "disk is full" in err, err
    filler.unlink()


def test_an_os_error_mid_repair_is_undone(venv: Venv, real: RealPackages) -> None:
    """FA2's RECORD made immutable (chattr +i): the last step fails with EPERM, not a RunnerError."""
    fa2_over_fa4(venv, real)
    before = snapshot(venv)
    (record,) = venv.site.glob("flash_attn-*.dist-info/RECORD")
    if run("chattr", "+i", record, check=False).returncode:
        pytest.skip("this file system has no immutable flag")
    try:
        code, _, err = fix(venv)
    finally:
        run("chattr", "-i", record)
    assert code == 1 and one_line(err) and "repair failed, and was undone" in err and "RECORD" in err, err
    assert snapshot(venv) == before


def test_progress_lines_never_end_a_repair(tmp_path: Path) -> None:
    """A path that is not UTF-8 and an ASCII-only terminal: the lines are escaped, the repair done."""
    env = tmp_path / "env"
    env.mkdir()
    odd = os.fsdecode(bytes(env) + b"/caf\xe9.py")
    Path(odd).write_text("x = 1\n")
    terminal = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    plan = Plan("fix-shadow", "python", str(env), (MoveAside(odd, "stale"),), ())
    folder = carry_out_checked(plan, lambda: [], lambda line: print(line, file=terminal))
    assert not os.path.lexists(odd)
    undo(folder, lambda line: print(line, file=terminal))
    assert Path(odd).read_text() == "x = 1\n"


def test_any_exception_in_the_check_is_undone(tmp_path: Path) -> None:
    env = tmp_path / "env"
    env.mkdir()
    (env / "RECORD").write_text("old\n")

    def check() -> list[str]:
        raise UnicodeEncodeError("ascii", "é", 0, 1, "seen on a non-UTF-8 venv path")

    plan = Plan("fix-shadow", "python", str(env), (RewriteFile(str(env / "RECORD"), "new\n", "test"),), ())
    with pytest.raises(Undone, match="UnicodeEncodeError"):
        carry_out_checked(plan, check, lambda _: None)
    assert (env / "RECORD").read_text() == "old\n"


def test_undo_refuses_when_fa2_was_uninstalled_since(venv: Venv, real: RealPackages) -> None:
    fa2_over_fa4(venv, real)
    assert fix(venv)[0] == 0
    venv.uninstall("flash-attn")
    after = snapshot(venv)
    code, _, err = doctor("undo", "--python", venv.python)
    assert code == 2 and one_line(err) and "flash_attn-2.8.3.post2.dist-info/RECORD is gone since the repair" in err
    assert snapshot(venv) == after


def test_undo_refuses_when_fa4_was_reinstalled_since(venv: Venv, real: RealPackages) -> None:
    fa2_over_fa4(venv, real)
    assert fix(venv)[0] == 0
    venv.pip("install", "--no-deps", "--no-index", "--force-reinstall", real.fa4_wheel)
    after = snapshot(venv)
    code, _, err = doctor("undo", "--python", venv.python)
    assert code == 2 and one_line(err) and "was changed since the repair" in err and "flash_attn" in err, err
    assert snapshot(venv) == after


def test_a_damaged_journal_is_one_line_and_blocks_nothing_else(venv: Venv, real: RealPackages) -> None:
    fa2_over_fa4(venv, real)
    assert fix(venv)[0] == 0
    journal = journal_of(venv)
    journal.write_text(journal.read_text()[:200])  # truncated
    after = snapshot(venv)
    code, _, err = doctor("undo", "--python", venv.python)
    assert code == 2 and one_line(err) and "is damaged" in err and f"move {journal.parent} away" in err
    assert snapshot(venv) == after and unfinished(str(venv.root)) == []
    shutil.move(journal.parent, venv.root.parent / "kept-aside")
    assert doctor("undo", "--python", venv.python)[1].startswith("Nothing to undo")


def test_a_missing_backup_refuses_before_anything_changes(venv: Venv, real: RealPackages) -> None:
    fa2_over_fa4(venv, real)
    assert fix(venv)[0] == 0
    journal = journal_of(venv)
    (moved,) = (journal.parent / "step-3").rglob("*.py")  # FA2's stub file, moved aside
    moved.unlink()
    after = snapshot(venv)
    code, _, err = doctor("undo", "--python", venv.python)
    assert code == 2 and one_line(err) and "is missing" in err and "nothing was changed" in err
    assert snapshot(venv) == after and json.loads(journal.read_text())["state"] == "done"


def test_every_install_can_be_undone_after_older_backups_are_shrunk(venv: Venv, real: RealPackages) -> None:
    """Seen on the H100: after six repairs (FA2, FA2 again, Sage, FA3, FA4, fix-shadow), undo took
    back four and then said "Nothing to undo" with FA2 and Sage still installed: pruning had
    deleted the older repairs. Now older repairs keep only what undo reads (the files a command
    replaced, the folders above what it made), and all of them are undone, latest first, to the
    environment as it was, an upgrade's replaced files included."""
    venv.install(pypi_wheel("six==1.17.0"), pypi_wheel("sageattention==1.0.6"))  # the user's, before
    pip = (sys.executable, "-m", "pip", "--python", str(venv.python), "install", "--no-index", "--no-deps")
    watch = (str(venv.site), str(venv.root / "bin"))
    installs = [
        (pypi_wheel("flash-attn-4==4.0.0b35"),),
        (real.fa4_wheel,),  # an upgrade: it replaces b35's files, which undo must give back
        (real.fa2_wheel,),
        (pypi_wheel("flash-attn-4==0.0.1"),),
        ("--force-reinstall", pypi_wheel("sageattention==1.0.6")),
    ]
    before = snapshot(venv)
    for number, args in enumerate(installs):
        step = Command((*pip, *map(str, args)), watch, "install")
        carry_out_checked(
            Plan(f"install-{number}", str(venv.python), str(venv.root), (step,), ()), list, lambda _: None
        )
    folders = sorted(p for p in repairs_root(str(venv.root)).iterdir() if p.is_dir())
    shrunk = [json.loads((f / "journal.json").read_text()).get("shrunk", False) for f in folders]
    assert shrunk == [True] * (len(installs) - KEEP) + [False] * KEEP
    kept = [{p.relative_to(f).parts[-2] for p in f.rglob("*") if p.is_file() and "step-1" in p.parts} for f in folders]
    assert "cute" in kept[1] and "sageattention" not in kept[0] | kept[1]  # b35's replaced files, not the rest
    assert "sageattention" in kept[-1]  # the newest keep their whole snapshot

    for _ in installs:
        code, out, err = doctor("undo", "--python", str(venv.python))
        assert code == 0 and "Undone:" in out, err
    code, out, _ = doctor("undo", "--python", str(venv.python))
    assert code == 0 and "Nothing to undo" in out
    assert snapshot(venv) == before


def test_undone_repairs_beyond_the_newest_few_are_deleted(tmp_path: Path) -> None:
    env = tmp_path / "env"
    env.mkdir()
    for number in range(KEEP + 2):
        (env / f"file-{number}").write_text("x\n")
        plan = Plan("fix-shadow", "python", str(env), (MoveAside(str(env / f"file-{number}"), "test"),), ())
        undo(carry_out_checked(plan, lambda: [], lambda _: None), lambda _: None)
    (env / "last").write_text("x\n")
    carry_out_checked(
        Plan("fix-shadow", "python", str(env), (MoveAside(str(env / "last"), "test"),), ()), lambda: [], lambda _: None
    )
    states = [json.loads((p / "journal.json").read_text())["state"] for p in sorted(repairs_root(str(env)).glob("*/"))]
    assert states == ["undone"] * (KEEP - 1) + ["done"]


# ---- reaching outside the environment ----------------------------------------------------------


@pytest.mark.parametrize("escape", ["dotdot", "symlink"])
def test_record_rows_leaving_the_package_are_refused(
    venv: Venv, real: RealPackages, outside: Path, escape: str
) -> None:
    fa2_over_fa4(venv, real)
    if escape == "dotdot":
        row = "flash_attn/cute/" + "../" * 8 + str(outside / "secret").lstrip("/")
    else:
        (venv.site / "flash_attn" / "cute" / "elsewhere").symlink_to(outside)
        row = "flash_attn/cute/elsewhere/secret"
    (record,) = venv.site.glob("flash_attn-*.dist-info/RECORD")
    record.write_text(record.read_text() + f"{row},,\n")
    before, watched = snapshot(venv), manifest(outside)
    code, _, err = fix(venv)
    assert code == 2 and one_line(err) and "outside flash_attn/cute/" in err, err
    assert manifest(outside) == watched and snapshot(venv) == before


def test_a_plan_reaching_outside_is_refused(tmp_path: Path, outside: Path) -> None:
    env = tmp_path / "env"
    env.mkdir()
    (env / "link").symlink_to(outside)
    watched = manifest(outside)
    for path in (str(outside / "secret"), str(env / "link" / "secret"), str(env) + "/../outside/secret"):
        plan = Plan("fix-shadow", "python", str(env), (MoveAside(path, "hostile"),), ())
        with pytest.raises(RunnerError, match="outside"):
            carry_out_checked(plan, lambda: [], lambda _: None)
    assert manifest(outside) == watched


def test_a_copied_environment_does_not_undo_the_original(venv: Venv, real: RealPackages, tmp_path: Path) -> None:
    fa2_over_fa4(venv, real)
    assert fix(venv)[0] == 0
    copy = tmp_path / "copy"
    run("cp", "-a", venv.root, copy)
    original = snapshot(venv)
    code, _, err = doctor("undo", "--python", copy / "bin" / "python")
    assert code == 2 and one_line(err) and f"written for {venv.root}" in err, err
    assert snapshot(venv) == original


def test_a_planted_journal_reaching_outside_is_refused(venv: Venv, real: RealPackages, outside: Path) -> None:
    fa2_over_fa4(venv, real)
    assert fix(venv)[0] == 0
    journal = journal_of(venv)
    data = json.loads(journal.read_text())
    data["steps"][1]["path"] = str(outside / "victim")  # the step undo would move back over it
    backup = journal.parent / "step-2" / str(outside / "victim").lstrip("/")
    backup.parent.mkdir(parents=True)
    backup.write_text("planted\n")
    (outside / "victim").unlink()  # so that putting back would write it
    journal.write_text(json.dumps(data))
    after, watched = snapshot(venv), manifest(outside)
    code, _, err = doctor("undo", "--python", venv.python)
    assert code == 2 and one_line(err) and f"names {outside / 'victim'}, outside" in err, err
    assert manifest(outside) == watched and snapshot(venv) == after


def test_a_planted_lock_symlink_is_not_followed(venv: Venv, real: RealPackages, outside: Path) -> None:
    fa2_over_fa4(venv, real)
    root = repairs_root(str(venv.root))
    root.mkdir(parents=True)
    (root / "lock").symlink_to(outside / "victim")
    before, watched = snapshot(venv), manifest(outside)
    code, _, err = fix(venv)
    assert code == 2 and one_line(err) and "lock" in err and "refused" in err, err
    assert manifest(outside) == watched and snapshot(venv) == before


def test_what_the_doctor_creates_is_private_under_any_umask(venv: Venv, real: RealPackages) -> None:
    fa2_over_fa4(venv, real)
    argv = [sys.executable, "-m", "attn_doctor", "fix-shadow", "--python", str(venv.python), "--yes"]
    done = subprocess.run([*argv, "--wheel-dir", str(WHEELS)], capture_output=True, preexec_fn=lambda: os.umask(0))
    assert done.returncode == 0, done.stderr
    folder = journal_of(venv).parent
    for path in (venv.root / ".attn-doctor", folder.parent, folder):
        assert path.stat().st_mode & 0o777 == 0o700, path
    for path in (folder / "journal.json", folder.parent / "lock", folder / "step-1.log"):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_the_kill_switch_is_not_in_the_program(venv: Venv, real: RealPackages) -> None:
    """ATTN_DOCTOR_KILL_AT works only with the tests' seam on PYTHONPATH."""
    assert not [p for p in (REPO / "attn_doctor").rglob("*.py") if "ATTN_DOCTOR_KILL_AT" in p.read_text()]
    fa2_over_fa4(venv, real)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(SEAM)]
    env = {**os.environ, "ATTN_DOCTOR_KILL_AT": "started:1", "PYTHONPATH": os.pathsep.join(paths)}
    assert fix(venv, env=env)[0] == 0


def test_a_step_that_creates_its_watched_folder_is_undone(venv: Venv) -> None:
    """A command watching a folder that does not exist yet (a clone, an unpacked source tree):
    nothing to back up, and undo takes the whole folder back (seen failing on the H100 with
    `install --source`)."""
    from attn_doctor.actions.journal import start
    from attn_doctor.actions.plan import Command
    from attn_doctor.actions.runner import carry_out

    tree = venv.root / ".attn-doctor" / "src" / "tree"
    make = f"import os; os.makedirs({str(tree / 'sub')!r}); open({str(tree / 'sub' / 'f')!r}, 'w').write('x')"
    plan = Plan(
        "make-tree",
        str(venv.python),
        str(venv.root),
        (Command((sys.executable, "-c", make), (str(tree),), "tree"),),
        (),
    )
    before = snapshot(venv)
    journal = start(plan)
    carry_out(journal, plan, lambda _: None)
    assert (tree / "sub" / "f").read_text() == "x"
    undo(journal.folder, lambda _: None)
    assert not tree.exists()
    assert snapshot(venv) == before


def test_folders_a_stopped_command_made_and_left_empty_are_undone(venv: Venv) -> None:
    """pip stopped early has made a package's folders and no file in them yet (seen as empty
    `google/protobuf` folders after a kill storm): they are the command's, and go."""
    made = venv.site / "google" / "protobuf" / "compiler"
    script = f"import os, time; os.makedirs({str(made)!r}); print('made', flush=True); time.sleep(60)"
    plan = Plan(
        "make-folders",
        str(venv.python),
        str(venv.root),
        (Command((sys.executable, "-c", script), (str(venv.site),), "folders"),),
        (),
    )
    before = snapshot(venv)

    def interrupt_when_made(line: str) -> None:
        if line == "made":
            raise KeyboardInterrupt  # as Ctrl-C lands, while the command runs

    with pytest.raises(KeyboardInterrupt):
        carry_out_checked(plan, list, lambda _: None, interrupt_when_made)
    assert not (venv.site / "google").exists()
    assert snapshot(venv) == before
