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

A command whose runner is killed (SIGKILL, SIGTERM, SIGHUP) is recorded by its watchdog, a
process of its own session (`_WATCHDOG`): the runner's end of its pipe closing before "done" tells
it at once; it kills the command's process group, waits until no process of it is left, and
writes the same record the runner would have, holding the environment's lock (inherited) and a
`recording` marker meanwhile, so that undo is exact after any kill.

Only where the watchdog could not record (it was killed too, a power cut) does undo go by time:
the runner touches a heartbeat file every 0.2 s while the command runs. The command's window is
from the heartbeat file's creation to its last beat plus half a second. Using ctime (which
no one can set back), undo removes a new path (absent from the backup) only when it, or a folder
it lies in that is also new, was made in that window and it was not changed after it; pip's
`~`-stashes left by the kill are such folders. A backed-up file that now differs is put back only
when it was not changed after the window; a removed one is put back. Limits: anything another
process wrote into the watched folders *during* the window (or in the half second after a kill) is
taken for the command's; a file someone deleted after the kill may come back (nothing is lost);
and a file changed after the window (a later repair's undo relinks files, which changes their
ctime) is left as it is and named. Clocks are the file system's own.

A command that fails or is interrupted in-process (Ctrl-C, an error) is stopped and waited for,
and what it did is recorded exactly, as for one that finished. Ctrl-C interrupts once: later
presses are ignored, so that the kill, the record and the undo are never cut short.

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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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
from attn_doctor.actions.journal import (
    RECORDING,
    Journal,
    RunnerError,
    UndoFailed,
    backup_path,
    exclusive,
    load_journal,
    prune,
    said,
    start,
)
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
    watchdog = _Watchdog(journal, number)
    try:
        try:
            _run(step, folder / f"step-{number}.log", output, heartbeat, number, watchdog)
        except BaseException:
            journal.mark(index, "stopped", **_changes(step.watch, folder, number, stashes))  # it is dead: exact
            raise
        journal.mark(index, "done", **_changes(step.watch, folder, number, stashes))
    finally:
        watchdog.stand_down()


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


def _changes(watch: list[str] | tuple[str, ...], folder: Path, number: int, stashes: list[str]) -> dict[str, list[Any]]:
    """What the command did to the watched folders: the files it created, and those it replaced
    or removed (their backups no longer share the file on disk), each with the identity it left,
    so that undo takes back exactly these, and only while they are still as it left them; and the
    folders it made (a command killed early leaves some empty)."""
    created: list[Any] = []
    changed: list[Any] = []
    folders: list[str] = []
    for watched in watch:
        saved = backup_path(folder, number, watched)
        old_folders, old_files = (set(entries) for entries in folder_entries(saved))
        now_folders, now_files = folder_entries(watched)
        folders.extend(os.path.join(watched, r) for r in now_folders if r not in old_folders)
        for relative in now_files:
            if relative not in old_files:
                path = os.path.join(watched, relative)
                created.append([path, file_identity(path)])
        for relative in sorted(old_files):
            path = os.path.join(watched, relative)
            if not same_file(saved / relative, path):
                changed.append([path, file_identity(path)])
        for stash in (p for p in pip_stashes(watched) if p not in stashes):
            created.extend(
                [os.path.join(stash, r), file_identity(os.path.join(stash, r))] for r in folder_entries(stash)[1]
            )
    return {"created": created, "changed": changed, "folders": folders}


# The watchdog of one command, a process of its own session. When the runner's end of its pipe
# closes before "done" (the runner was killed: SIGKILL, SIGTERM, a closed terminal), it kills the
# command's whole process group at once (`pip --python`'s own child included) unless the command
# had already ended, waits until every process of the group is gone, and then writes down exactly
# what the command did, as the runner would have: undo is then exact after any kill, also when
# other repairs ran and were undone since (which changes files' ctimes, all the time window has).
# It holds the environment's lock (inherited) until then, and a marker that tells another action
# to wait for it. Its first part is the standard library only, so that the kill never waits on an
# import; the doctor's code is imported for the record only.
_WATCHDOG = """
import os, signal, sys
folder, number, package, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
group, ended, done = None, False, False
for line in sys.stdin:
    word = line.strip()
    if word.isdigit():
        group = int(word)
    ended, done = ended or word == "ended", done or word == "done"
if not done:
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    try:
        if group is not None and not ended:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sys.path.insert(0, package)
        from attn_doctor.actions.runner import record_killed
        record_killed(folder, number, None if ended else group)
    finally:
        os.unlink(marker)
"""


class _Watchdog:
    """The runner's side of the watchdog: the group to kill, "ended" once the command has exited
    (before it is reaped, so that its group id cannot have been reused), "done" once the step is
    recorded or the runner itself takes care of it."""

    def __init__(self, journal: Journal, number: int) -> None:
        import attn_doctor

        package = os.path.dirname(os.path.dirname(os.path.abspath(attn_doctor.__file__)))
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-c",
                _WATCHDOG,
                str(journal.folder),
                str(number),
                package,
                str(journal.folder / RECORDING),
            ],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a signal to the doctor's group (Ctrl-C, a closed terminal) spares it
            pass_fds=() if journal.lock is None else (journal.lock,),
        )

    def _say(self, word: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(f"{word}\n")
        self._process.stdin.flush()

    def watch(self, group: int) -> None:
        self._say(str(group))

    def ended(self) -> None:
        self._say("ended")

    def stand_down(self) -> None:
        assert self._process.stdin is not None
        with suppress(BrokenPipeError):
            self._say("done")
            self._process.stdin.close()
        self._process.wait()


def record_killed(folder: str, number: int, group: int | None) -> None:
    """The watchdog's record of a command whose runner was killed: once the command's group is
    gone, what it did, exactly as `_command` records it. Nothing when the runner recorded it
    already, or the repair is being (or was) undone."""
    if group is not None:
        _wait_gone(group)
    journal = Journal(Path(folder), load_journal(Path(folder) / "journal.json"))
    step = journal.data["steps"][number - 1]
    if journal.data["state"] != "running" or step["state"] != "backed-up":
        return
    journal.mark(number - 1, "stopped", **_changes(step["watch"], journal.folder, number, step.get("stashes", [])))


def _wait_gone(group: int, limit_s: float = 10.0) -> None:
    """Until no live process of the group is left (a killed one that is not yet reaped writes
    nothing), read from /proc; at most `limit_s` (one stuck in an uninterruptible write)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and _group_alive(group):
        time.sleep(0.02)


def _group_alive(group: int) -> bool:
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                line = stat.read()
        except OSError:
            continue  # gone meanwhile
        state, _, pgrp, *_ = line[line.rindex(")") + 2 :].split()
        if int(pgrp) == group and state not in ("Z", "X"):
            return True
    return False


def _beat(heartbeat: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            os.utime(heartbeat)
        except OSError:
            return


def _run(
    step: Command, log: Path, output: Callable[[str], None] | None, heartbeat: Path, number: int, watchdog: _Watchdog
) -> None:
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
            watchdog.watch(child.pid)
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
                os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped
                watchdog.ended()
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
    with exclusive(plan.prefix) as lock, _one_interrupt():
        journal = start(plan, lock)
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


@contextmanager
def _one_interrupt() -> Iterator[None]:
    """Ctrl-C stops an action once. Held down, or pressed again while the command is being killed
    and recorded, it must not interrupt that too (the command would run on unattended, or go
    unrecorded), nor the exit after it (Python's finalisation puts SIGINT's default action back,
    which would end the doctor by the signal rather than with 130): from the first press on,
    SIGINT is ignored. A SIGINT that was already ignored (nohup) stays ignored."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def once(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, once)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is once:  # not pressed
            signal.signal(signal.SIGINT, signal.default_int_handler)


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
