"""An install interrupted while pip writes, by a real signal from outside, is taken back to the
byte (bytecode included), also after the install was run again in between; a Ctrl-C held down
does not leave pip running on; nothing the doctor started outlives it. Real venvs, the real FA4
wheelhouse, real signals at real points of a real pip run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attn_doctor.facts.repairs import repairs_root, unfinished
from tests.conftest import REPO, RealPackages, Venv, doctor, snapshot
from tests.test_install import install

INSTALLING = "Installing collected packages"  # pip has begun to write into site-packages


def started_install(venv: Venv, wheels: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "attn_doctor", "install", "fa4", "--python", str(venv.python)]
    argv += ["--find-links", str(wheels), "--offline", "--force", "--yes"]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, preexec_fn=terminal_signals
    )


def terminal_signals() -> None:
    """Each signal's default action, as a terminal's process has it, even where this suite runs with
    some ignored (nohup ignores SIGHUP, a background job or a CI runner SIGINT)."""
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)


def wait_for_pip(venv: Venv, text: str = INSTALLING, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in repairs_root(str(venv.root)).glob("*/step-*.log"):
            if text in log.read_text(errors="replace"):
                return
        time.sleep(0.005)
    raise AssertionError(f"pip never printed {text!r}")


def processes_of(venv: Venv) -> list[str]:
    """Every live process whose command line names the environment (pip, its child, a probe)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(venv.root) in line and state not in ("Z", "X"):
            found.append(f"{entry.name}: {line}")
    return found


def steps(venv: Venv) -> list[dict[str, object]]:
    (journal,) = repairs_root(str(venv.root)).glob("*/journal.json")
    return list(json.loads(journal.read_text())["steps"])


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_kill_while_pip_writes_is_recorded_exactly_and_undone_to_the_byte(
    torch_venv: Venv, fa4_wheelhouse: Path, how: signal.Signals
) -> None:
    before = snapshot(torch_venv)
    doctor_process = started_install(torch_venv, fa4_wheelhouse)
    wait_for_pip(torch_venv)
    time.sleep(0.3)  # well into the writing
    doctor_process.send_signal(how)
    assert doctor_process.wait(timeout=60) == -how
    code, out, err = doctor("undo", "--python", torch_venv.python)  # waits for the watchdog's record
    assert code == 0 and "Undone" in out, out + err
    assert "left as they are" not in out  # nothing of pip's was taken for the user's
    assert snapshot(torch_venv) == before
    assert not processes_of(torch_venv) and unfinished(str(torch_venv.root)) == []


def test_a_kill_then_the_install_run_again_then_undo_is_byte_exact(torch_venv: Venv, fa4_wheelhouse: Path) -> None:
    """The way users recover: run it again. The second run (here undone by its own failed
    verification, on a machine without a GPU) puts files back by linking, which changes their
    ctimes: the killed run's undo must still know them as its own."""
    before = snapshot(torch_venv)
    doctor_process = started_install(torch_venv, fa4_wheelhouse)
    wait_for_pip(torch_venv)
    time.sleep(0.5)
    doctor_process.send_signal(signal.SIGKILL)
    doctor_process.wait(timeout=60)
    code, _, err = install(torch_venv, "fa4", fa4_wheelhouse, "--force", "--yes")
    assert code != 0 and "undone" in err  # no GPU here: it does not import, and took itself back
    code, out, err = doctor("undo", "--python", torch_venv.python)
    assert code == 0 and "left as they are" not in out, out + err
    assert snapshot(torch_venv) == before and unfinished(str(torch_venv.root)) == []


def test_the_killed_command_is_recorded_by_its_watchdog(torch_venv: Venv, fa4_wheelhouse: Path) -> None:
    """What makes the undo exact: the step's files as the watchdog wrote them down, not a time
    window; and no process of pip's left."""
    doctor_process = started_install(torch_venv, fa4_wheelhouse)
    wait_for_pip(torch_venv)
    doctor_process.send_signal(signal.SIGTERM)
    doctor_process.wait(timeout=60)
    deadline = time.monotonic() + 30  # the watchdog records in its own time (undo waits for its lock)
    while time.monotonic() < deadline and any(s["state"] == "backed-up" for s in steps(torch_venv)):
        time.sleep(0.05)
    (command,) = [s for s in steps(torch_venv) if s["kind"] == "command" and s["state"] != "planned"]
    assert command["state"] == "stopped" and command["created"], command["state"]
    # the watchdog itself ends just after it has written the record: wait for that, bounded
    while time.monotonic() < deadline and processes_of(torch_venv):
        time.sleep(0.05)
    assert not processes_of(torch_venv)


def test_ctrl_c_held_down_while_pip_writes_leaves_nothing_running(torch_venv: Venv, fa4_wheelhouse: Path) -> None:
    """A storm of SIGINTs from the first pip line on: the first stops the install, the rest must
    not break off the kill, the record or the undo (pip used to run on to the end, unattended)."""
    before = snapshot(torch_venv)
    doctor_process = started_install(torch_venv, fa4_wheelhouse)
    wait_for_pip(torch_venv, "Processing")
    while doctor_process.poll() is None:
        doctor_process.send_signal(signal.SIGINT)
        time.sleep(0.01)
    out = doctor_process.stdout.read() if doctor_process.stdout else ""
    assert doctor_process.returncode == 130 and "put back" in out, out
    time.sleep(1.0)  # a pip left running would go on writing
    assert snapshot(torch_venv) == before and not processes_of(torch_venv)


def test_a_hung_import_does_not_outlive_the_killed_doctor(venv: Venv, real: RealPackages) -> None:
    """`check --deep` imports FA2 in a child of its own process group (a deadline kills what it
    starts); killing the doctor must end that child too, not leave it hung for minutes."""
    venv.install(real.fa2_wheel)
    pid_file = venv.root / "import.pid"
    # the pid written whole, then renamed into place: the test never reads a file half-written
    (venv.site / "flash_attn" / "__init__.py").write_text(
        f"import os, time\nopen({str(pid_file)!r} + '.new', 'w').write(str(os.getpid()))\n"
        f"os.replace({str(pid_file)!r} + '.new', {str(pid_file)!r})\ntime.sleep(600)\n"
    )
    argv = [sys.executable, "-m", "attn_doctor", "check", "--deep", "--python", str(venv.python)]
    doctor_process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    hung = int(pid_file.read_text())
    doctor_process.send_signal(signal.SIGKILL)
    doctor_process.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{hung}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not processes_of(venv), processes_of(venv)


def test_a_held_lock_refuses_at_once_but_a_watchdog_s_record_is_waited_for(torch_venv: Venv) -> None:
    """Two shells: a running action refuses another at once; a killed command's watchdog (which
    holds the lock while it writes down what the command did) is waited for."""
    from attn_doctor.actions.journal import RECORDING, RunnerError, exclusive

    prefix = str(torch_venv.root)
    with exclusive(prefix):
        started = time.monotonic()
        # a second open file's flock, in this process: excluded as another process's would be
        with pytest.raises(RunnerError, match="another attn-doctor repair or undo is running"), exclusive(prefix):
            pass
        assert time.monotonic() - started < 1
    folder = repairs_root(prefix) / "20261206T000000000000Z-install"
    folder.mkdir()
    (folder / RECORDING).touch()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from attn_doctor.actions.journal import exclusive\n"
            "with exclusive(sys.argv[1]):\n    print('held', flush=True); time.sleep(1.0)",
            prefix,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    started = time.monotonic()
    with exclusive(prefix):
        assert time.monotonic() - started > 0.5  # it waited for the holder
    holder.wait()
