"""Carry out a plan step by step with a journal, and undo it from that journal and its backups.
This module runs the steps; `journal.py` keeps the journal and the lock, `files.py` the file
operations both sides share, `undo.py` puts a repair back. The protocol, for all four:

Where things live. A repair's journal, logs and backups are under the environment it changes,
`<prefix>/.attn-doctor/repairs/<id>/`: on the same file system as its site-packages as a rule, so
moving aside is a rename and a backup is a hard link per file (a whole site-packages in well under
a second, no space). That is safe because pip and uv never rewrite an installed file in place:
they unlink or rename it and write a new one, so the linked backup keeps the old bytes. Undo puts
files back the same way, by linking (or renaming) the backup into place, so it needs no free space
and works on a full disk; only where a backup had to be copied (another device) is it copied back.
Everything the doctor creates there is its owner's alone (folders 0700, files 0600, whatever the
umask), created with O_EXCL|O_NOFOLLOW so that a planted symlink is refused, never followed.

The journal (`journal.json`) is rewritten atomically before and after every step, so a repair
killed at any point leaves a record of what started and what finished. It records the environment
(its real path, device and inode): undo refuses a journal found in another environment (a `cp -a`
copy of a repaired venv) and any journal naming a path that does not resolve inside its
environment. A 256 KiB reserve file beside the journal is released when the disk is full, so that
the journal can still be written while undoing.

Before undo changes anything it checks every step it will put back:
- every backup it needs is there;
- what is on disk is still what the step left: a moved-aside path is still absent, a rewritten
  file still has the content written, and each file a command created or replaced still has the
  identity (inode, size, mtime) recorded when the command ended. A package uninstalled or
  reinstalled since then makes undo refuse in one line naming the path, changing nothing.

A command killed while it ran (SIGKILL, a power cut) has no such record. Its undo then takes back
only what is provably the command's, by time: the runner touches a heartbeat file every 0.2 s
while the command runs, and a watchdog kills its whole process group the moment the runner dies. The command's
window is from the heartbeat file's creation to its last beat plus half a second. Using ctime (which
no one can set back), undo removes a new path (absent from the backup) only when it, or a folder
it lies in that is also new, was made in that window and it was not changed after it; pip's
`~`-stashes left by the kill are such folders. A backed-up file that now differs is put back only
when it was not changed after the window; a removed one is put back. Limits: anything another
process wrote into the watched folders *during* the window (or in the half second after a kill) is
taken for the command's; a file someone deleted after the kill may come back (nothing is lost);
and a file changed after the window is left as it is and named. Clocks are the file system's own.

A command that fails or is interrupted in-process (Ctrl-C, an error) is stopped and waited for,
and what it did is recorded exactly, as for one that finished.

Backups are pruned after each successful action: the newest KEEP completed repairs keep their
whole snapshot; older completed ones keep only what their undo reads (the files a command replaced
or removed, the folders above what it made), so every repair can still be undone, latest first.
Undone repairs beyond the newest KEEP folders are deleted; unfinished or damaged ones never are.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attn_doctor.actions.files import (
    create_private,
    file_identity,
    folder_entries,
    link_or_copy,
    pip_stashes,
    same_file,
    write_atomically,
)
from attn_doctor.actions.journal import Journal, RunnerError, UndoFailed, backup_path, exclusive, prune, said, start
from attn_doctor.actions.plan import Command, MoveAside, Plan, RewriteFile
from attn_doctor.actions.undo import printable, undo

HEARTBEAT_S = 0.2


class Undone(Exception):
    """A step failed, or the result was not as promised: everything was put back."""

    def __init__(self, problems: list[str], folder: Path) -> None:
        super().__init__("; ".join(problems))
        self.folder = folder  # the journal and the steps' logs stay there


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during an action: what it had done was put back (exit 130)."""


def _no_checkpoint(state: str, number: int, line: str = "") -> None:
    """A test seam, empty in the program: the tests replace it (tests/seam/sitecustomize.py) to
    end the process abruptly at a journal point, as a kill would."""


checkpoint: Callable[[str, int, str], None] = _no_checkpoint


def carry_out(
    journal: Journal, plan: Plan, report: Callable[[str], None], output: Callable[[str], None] | None = None
) -> None:
    """Run every step; raises RunnerError at the first failing step (the journal stays).
    A command's output goes to `step-N.log` in the repair's folder, and line by line to `output`."""
    for index, step in enumerate(plan.steps):
        number = index + 1
        report(f"[{number}/{len(plan.steps)}] {step.describe()}")
        if isinstance(step, MoveAside):
            _move_aside(journal, index, step, report)
        elif isinstance(step, RewriteFile):
            _rewrite(journal, index, step)
        else:
            _command(journal, index, step, output)
        journal.mark(index, "done")
        checkpoint("done", number, "")
    journal.data["state"] = "done"
    journal.save()


def _move_aside(journal: Journal, index: int, step: MoveAside, report: Callable[[str], None]) -> None:
    gone = not os.path.lexists(step.path)  # an earlier step's command may have removed it already
    journal.mark(index, "started", gone=gone)
    checkpoint("started", index + 1, "")
    if gone:
        report(f"      already gone: {step.path}")
        return
    target = backup_path(journal.folder, index + 1, step.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(step.path, target)  # same file system (see the module's note): atomic


def _rewrite(journal: Journal, index: int, step: RewriteFile) -> None:
    journal.mark(index, "started")
    checkpoint("started", index + 1, "")
    if os.path.islink(step.path) or not os.path.isfile(step.path):
        raise RunnerError(f"{step.path} is not a plain file: left alone")
    link_or_copy(step.path, backup_path(journal.folder, index + 1, step.path))
    written = hashlib.sha256(step.content.encode("utf-8", "surrogateescape")).hexdigest()
    journal.mark(index, "backed-up", sha256=written)
    write_atomically(step.path, step.content)


def _command(journal: Journal, index: int, step: Command, output: Callable[[str], None] | None) -> None:
    folder, number = journal.folder, index + 1
    journal.mark(index, "started")
    checkpoint("started", number, "")
    saved = _back_up(step.watch, folder, number)
    heartbeat = folder / f"step-{number}.heartbeat"
    os.close(create_private(heartbeat))
    # from here on, undo restores the watched folders, by the time window if nothing better is known
    stashes = [p for w in step.watch for p in pip_stashes(w)]  # a crash's, earlier: not this command's
    journal.mark(index, "backed-up", saved=saved, stashes=stashes, start_ns=os.lstat(heartbeat).st_mtime_ns)
    checkpoint("backed-up", number, "")
    try:
        _run(step, folder / f"step-{number}.log", output, heartbeat, number)
    except BaseException:
        created, changed = _changes(step.watch, folder, number, stashes)  # the command is dead: exact
        journal.mark(index, "stopped", created=created, changed=changed)
        raise
    created, changed = _changes(step.watch, folder, number, stashes)
    journal.mark(index, "done", created=created, changed=changed)


def _back_up(watch: tuple[str, ...], folder: Path, number: int) -> int:
    """Every file linked into the step's backup, and every folder mirrored there with its mode:
    undo leaves folders that existed before, empty or not."""
    count = 0
    for watched in watch:
        if not os.path.lexists(watched):
            continue  # a folder the step creates (a clone, a source tree): all of it is new, nothing to keep
        saved = backup_path(folder, number, watched)
        folders, files = folder_entries(watched)
        for relative in ["", *folders]:
            mirror = saved / relative
            mirror.mkdir(parents=True, exist_ok=True)
            os.chmod(mirror, (os.lstat(os.path.join(watched, relative)).st_mode & 0o7777) | 0o700)
        for relative in files:
            link_or_copy(os.path.join(watched, relative), saved / relative)
        count += len(files)
    return count


def _changes(
    watch: list[str] | tuple[str, ...], folder: Path, number: int, stashes: list[str]
) -> tuple[list[Any], list[Any]]:
    """What the command did to the watched folders: the files it created, and those it replaced
    or removed (their backups no longer share the file on disk), each with the identity it left,
    so that undo takes back exactly these, and only while they are still as it left them."""
    created: list[Any] = []
    changed: list[Any] = []
    for watched in watch:
        saved = backup_path(folder, number, watched)
        before = set(folder_entries(saved)[1])
        for relative in folder_entries(watched)[1]:
            if relative not in before:
                path = os.path.join(watched, relative)
                created.append([path, file_identity(path)])
        for relative in sorted(before):
            path = os.path.join(watched, relative)
            if not same_file(saved / relative, path):
                changed.append([path, file_identity(path)])
        for stash in (p for p in pip_stashes(watched) if p not in stashes):
            created.extend(
                [os.path.join(stash, r), file_identity(os.path.join(stash, r))] for r in folder_entries(stash)[1]
            )
    return created, changed


# A watchdog of its own process group: when the runner's end of its pipe closes without "done"
# (the runner was killed), it kills the command's whole process group at once, `pip --python`'s
# own child included, so that nothing of the command writes on after the runner (the time window
# of an interrupted command relies on that).
_WATCHDOG = """
import os, signal, sys
group = int(sys.stdin.readline())
if sys.stdin.read() != "done":
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


def _watch(child: subprocess.Popen[str]) -> subprocess.Popen[str]:
    watchdog = subprocess.Popen(
        [sys.executable, "-I", "-c", _WATCHDOG], stdin=subprocess.PIPE, text=True, start_new_session=True
    )
    assert watchdog.stdin is not None
    watchdog.stdin.write(f"{child.pid}\n")
    watchdog.stdin.flush()
    return watchdog


def _stand_down(watchdog: subprocess.Popen[str]) -> None:
    """Before the command is reaped, so that its process group's id cannot have been reused."""
    assert watchdog.stdin is not None
    watchdog.stdin.write("done")
    watchdog.stdin.close()
    watchdog.wait()


def _beat(heartbeat: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            os.utime(heartbeat)
        except OSError:
            return


def _run(step: Command, log: Path, output: Callable[[str], None] | None, heartbeat: Path, number: int) -> None:
    """The command's own output, stdout and stderr merged in order, kept whole in `log`. On any
    exception (Ctrl-C included) the command is killed and waited for before it is passed on."""
    last = "no output"
    stop = threading.Event()
    beating = threading.Thread(target=_beat, args=(heartbeat, stop), daemon=True)
    try:
        with os.fdopen(create_private(log), "w", encoding="utf-8", errors="surrogateescape") as saved:
            saved.write(f"$ {step.describe()}\n")
            child = subprocess.Popen(
                list(step.argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                env={**os.environ, **dict(step.env)},
                start_new_session=True,  # its own process group: stopped whole, children included
            )
            watchdog = _watch(child)
            beating.start()
            try:
                assert child.stdout is not None
                for line in child.stdout:
                    saved.write(line)
                    saved.flush()
                    checkpoint("output", number, line)
                    if line.strip():
                        last = line.strip()
                        if output is not None:
                            output(line.rstrip())
            except BaseException:
                os.killpg(child.pid, signal.SIGKILL)
                raise
            finally:
                _stand_down(watchdog)
                code = child.wait()
                stop.set()
                beating.join()
    except OSError as error:
        raise RunnerError(f"cannot run {step.argv[0]}: {said(error)}") from error
    if code != 0:
        raise RunnerError(f"`{shlex.join(step.argv)}` failed (exit {code}): {last} (whole output: {log})")


def carry_out_checked(
    plan: Plan,
    check: Callable[[], list[str]],
    report: Callable[[str], None],
    output: Callable[[str], None] | None = None,
) -> Path:
    """The whole protocol of an action: one at a time per environment, every step journaled,
    then `check` says what is not as promised. On a failed step, any exception or a problem,
    undo it all and raise Undone; on Ctrl-C undo it all, say so, and raise Interrupted. If the
    undo fails too, UndoFailed says where the journal is. Returns the repair's folder."""
    say = printable(report)
    with exclusive(plan.prefix):
        journal = start(plan)
        try:
            carry_out(journal, plan, say, output and printable(output))
            problems = check()
        except RunnerError as error:
            problems = [str(error)]
        except KeyboardInterrupt as error:
            _undo_on_the_spot(journal.folder, say, "interrupted")
            say(f"Interrupted: everything this run had changed was put back, {plan.prefix} is as it was.")
            raise Interrupted("interrupted, and undone") from error
        except Exception as error:
            problems = [said(error)]
        if problems:
            _undo_on_the_spot(journal.folder, say, "; ".join(problems))
            raise Undone(problems, journal.folder)
        prune(plan.prefix)
    return journal.folder


def _undo_on_the_spot(folder: Path, say: Callable[[str], None], why: str) -> None:
    """A second Ctrl-C must not stop the undo half-way."""
    keep = (
        signal.signal(signal.SIGINT, signal.SIG_IGN) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        undo(folder, say)
    except (RunnerError, OSError) as error:
        raise UndoFailed(
            f"{why}; putting it back failed too: {said(error) if isinstance(error, OSError) else error}"
            f" (journal and backups in {folder}; `attn-doctor undo` finishes it)"
        ) from error
    finally:
        if keep is not None:
            signal.signal(signal.SIGINT, keep)
