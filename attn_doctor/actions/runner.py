"""Carry out a plan step by step with a journal, and undo it from that journal and its backups.

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

Backups are pruned after each successful action: the newest KEEP completed repairs and the newest
KEEP folders overall are kept; older repairs that are completed or undone are deleted, so they
can no longer be undone. Unfinished or damaged ones are never deleted.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attn_doctor.actions.plan import Command, MoveAside, Plan, RewriteFile, Step

JOURNAL_SCHEMA = "attn-doctor/journal-2"
KEEP = 3  # completed repairs whose backups are kept
RESERVE_BYTES = 256 * 1024
HEARTBEAT_S = 0.2
AFTER_LAST_BEAT_NS = 500_000_000  # a kill lands within one beat (0.2 s); the rest is slack for the coarse clock
TEMPORARY = ".attn-doctor-tmp"


class RunnerError(Exception):
    """A step failed or a journal cannot be used; the message says which and what to do."""


class UndoFailed(RunnerError):
    """An action failed and putting it back failed too; the message says where the journal is."""


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


def _said(error: BaseException) -> str:
    """One line for any failure, a full disk named as such."""
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        if error.errno == errno.ENOSPC:
            return f"the disk is full{where}: free some space and run `attn-doctor undo`"
        return f"{error.strerror or error}{where}"
    return f"{type(error).__name__}: {error}"


# ---- the environment and its paths -------------------------------------------------------------


def repairs_root(prefix: str) -> Path:
    return Path(prefix) / ".attn-doctor" / "repairs"


def _private_folder(path: Path) -> None:
    """A folder only its owner reads; a symlink (or anything else) planted in its place is refused."""
    with suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise RunnerError(f"{path} is not a folder (a symlink?): refused, move it away")
    os.chmod(path, 0o700)


def _prepared_root(prefix: str) -> Path:
    root = repairs_root(prefix)
    try:
        _private_folder(root.parent)
        _private_folder(root)
    except OSError as error:
        raise RunnerError(f"cannot keep repairs in {root}: {_said(error)}") from error
    return root


def _environment(prefix: str) -> dict[str, Any]:
    real = os.path.realpath(prefix)
    info = os.stat(real)
    return {"prefix": real, "device": info.st_dev, "inode": info.st_ino}


def _inside(path: str, root: str) -> bool:
    """The path's folder with every symlink resolved, plus its own name: a step moves or removes a
    symlink it names, and never follows it."""
    if not os.path.isabs(path) or os.path.normpath(path) != path or os.path.basename(path) in ("", ".", ".."):
        return False
    full = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    return full.startswith(root + os.sep)


def _outside(paths: list[str], prefix: str) -> str | None:
    root = os.path.realpath(prefix)
    return next((p for p in paths if not _inside(p, root)), None)


def _plan_paths(plan: Plan) -> list[str]:
    paths: list[str] = []
    for step in plan.steps:
        paths.extend(step.watch if isinstance(step, Command) else (step.path,))
    return paths


def _journal_paths(steps: list[dict[str, Any]]) -> list[str]:
    paths: list[str] = []
    for step in steps:
        paths.extend(step["watch"] if step["kind"] == "command" else [step["path"]])
        paths.extend(entry[0] for entry in step.get("created", []) + step.get("changed", []))
    return paths


@contextmanager
def exclusive(prefix: str) -> Iterator[None]:
    """One repair or undo at a time per environment (two shells on a shared node)."""
    root = _prepared_root(prefix)
    try:
        descriptor = os.open(root / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise RunnerError(f"cannot open {root / 'lock'} ({_said(error)}): refused, move it away") from error
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise RunnerError(f"{root / 'lock'} is not a plain file: refused, move it away")
        os.fchmod(descriptor, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise RunnerError(f"another attn-doctor repair or undo is running on {prefix}") from error
        yield
    finally:
        os.close(descriptor)


# ---- files the doctor writes -------------------------------------------------------------------


def _create_private(path: Path) -> int:
    """A new file of the doctor's own (0600); a leftover from a crash is removed first (unlinking
    a planted symlink removes the link, not its target), and O_EXCL|O_NOFOLLOW refuses a race."""
    if os.path.lexists(path):
        os.unlink(path)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(descriptor, 0o600)
    return descriptor


def _release_reserve(folder: Path) -> bool:
    reserve = folder / "reserve"
    if not os.path.lexists(reserve):
        return False
    os.unlink(reserve)
    return True


def _make_reserve(folder: Path) -> None:
    with os.fdopen(_create_private(folder / "reserve"), "wb") as handle:
        handle.write(b"\0" * RESERVE_BYTES)
        handle.flush()
        os.fsync(handle.fileno())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        _replace_json(path, data)
    except OSError as error:
        if error.errno != errno.ENOSPC or not _release_reserve(path.parent):
            raise
        _replace_json(path, data)  # the reserve made room for it


def _replace_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    try:
        with os.fdopen(_create_private(temporary), "w", encoding="ascii") as handle:
            json.dump(data, handle, indent=1)  # ASCII: any path, even one that is not UTF-8, fits
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _temporary_beside(path: str | Path) -> Path:
    temporary = Path(f"{path}{TEMPORARY}")
    if os.path.lexists(temporary):
        os.unlink(temporary)
    return temporary


def _backup_path(folder: Path, number: int, path: str) -> Path:
    """Each step keeps its own backups: two steps may save the same path."""
    return folder / f"step-{number}" / path.lstrip("/")


def _link_or_copy(source: str | Path, target: Path) -> None:
    """A backup that shares the file's bytes (see the module's note), or a copy across devices."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_beside(target)
    try:
        os.link(source, temporary, follow_symlinks=False)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise
        shutil.copy2(source, temporary, follow_symlinks=False)
    os.replace(temporary, target)


def _put_back(backup: Path, place: Path, folder_modes: Path | None = None) -> None:
    """The backup linked into its place (no space needed), replacing what is there."""
    _make_parents(place.parent, folder_modes)
    _link_or_copy(backup, place)


def _make_parents(folder: Path, modes: Path | None) -> None:
    """Folders a command removed, made again with their old modes (kept on the backup's mirror)."""
    if folder.is_dir():
        return
    _make_parents(folder.parent, modes and modes.parent)
    mode = os.stat(modes).st_mode & 0o7777 if modes is not None and modes.is_dir() else 0o755
    folder.mkdir(mode=mode)
    os.chmod(folder, mode)


def _write_atomically(path: str, content: str) -> None:
    """Written beside the file, then renamed over it: the original (linked in the backup) is never
    written into."""
    mode = os.lstat(path).st_mode & 0o7777
    temporary = _temporary_beside(path)
    try:
        with os.fdopen(_create_private(temporary), "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(content)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _sha256(path: str | Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _identity(path: str | Path) -> list[int] | None:
    """What tells a file from its replacement: a reinstall makes a new inode, an edit a new mtime."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return [info.st_ino, info.st_size, info.st_mtime_ns]


def _same_file(one: str | Path, other: str | Path) -> bool:
    try:
        first, second = os.lstat(one), os.lstat(other)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _entries(folder: str | Path) -> tuple[list[str], list[str]]:
    """The folders and the files (a symlink to a folder counts as a file) under `folder`, relative."""
    folders: list[str] = []
    files: list[str] = []
    if not os.path.isdir(folder) or os.path.islink(folder):
        return folders, files
    for root, dirs, names in os.walk(folder):
        here = os.path.relpath(root, folder)
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = [d for d in dirs if d not in links]
        folders.extend(os.path.normpath(os.path.join(here, d)) for d in dirs)
        files.extend(os.path.normpath(os.path.join(here, n)) for n in [*names, *links])
    return sorted(folders), sorted(files)


def _stashes(watched: str) -> list[str]:
    """pip's stashes of a watched folder (pip's AdjacentTempDirectory): siblings named like it with
    `~` and a few of its LEADING_CHARS in place of its first characters. An uninstall renames a
    dist-info folder there, outside the watched folder, and a kill leaves it behind."""
    parent, name = os.path.split(watched.rstrip("/"))
    try:
        siblings = os.listdir(parent)
    except OSError:
        return []
    return sorted(
        os.path.join(parent, sibling)
        for sibling in siblings
        if len(sibling) == len(name)
        and sibling.startswith("~")
        and any(sibling[i:] == name[i:] and set(sibling[1:i]) <= set("-~.=%0123456789") for i in range(1, len(name)))
    )


def _remove_empty_tree(folder: str) -> None:
    for root, _, _ in sorted(os.walk(folder), key=lambda entry: -len(entry[0])):
        if not os.listdir(root):
            os.rmdir(root)


# ---- the journal -------------------------------------------------------------------------------


def _step_data(step: Step) -> dict[str, Any]:
    if isinstance(step, MoveAside):
        return {"kind": "move-aside", "path": step.path}
    if isinstance(step, RewriteFile):
        return {"kind": "rewrite", "path": step.path}
    return {"kind": "command", "argv": list(step.argv), "env": dict(step.env), "watch": list(step.watch)}


@dataclass
class Journal:
    folder: Path
    data: dict[str, Any]

    def save(self) -> None:
        _write_json(self.folder / "journal.json", self.data)

    def mark(self, index: int, state: str, **extra: Any) -> None:
        self.data["steps"][index].update(state=state, **extra)
        self.save()


def start(plan: Plan) -> Journal:
    """The repair's folder and its journal, every step still planned. Refuses a plan that would
    touch anything outside its environment."""
    outside = _outside(_plan_paths(plan), plan.prefix)
    if outside is not None:
        raise RunnerError(f"{outside} is outside {plan.prefix}: refused, nothing was changed")
    root = _prepared_root(plan.prefix)
    stamp = datetime.datetime.now(datetime.timezone.utc)
    folder = root / f"{stamp:%Y%m%dT%H%M%S%fZ}-{plan.action}"
    journal = Journal(
        folder,
        {
            "schema": JOURNAL_SCHEMA,
            "action": plan.action,
            "python": plan.python,
            "environment": _environment(plan.prefix),
            "created": stamp.isoformat(timespec="seconds"),
            "state": "running",
            "steps": [{**_step_data(s), "state": "planned"} for s in plan.steps],
        },
    )
    try:
        folder.mkdir(mode=0o700)
        os.chmod(folder, 0o700)
        _make_reserve(folder)
        journal.save()
    except OSError as error:
        shutil.rmtree(folder, ignore_errors=True)
        raise RunnerError(f"cannot start the repair in {root}: {_said(error)}; nothing was changed") from error
    return journal


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
    target = _backup_path(journal.folder, index + 1, step.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(step.path, target)  # same file system (see the module's note): atomic


def _rewrite(journal: Journal, index: int, step: RewriteFile) -> None:
    journal.mark(index, "started")
    checkpoint("started", index + 1, "")
    if os.path.islink(step.path) or not os.path.isfile(step.path):
        raise RunnerError(f"{step.path} is not a plain file: left alone")
    _link_or_copy(step.path, _backup_path(journal.folder, index + 1, step.path))
    written = hashlib.sha256(step.content.encode("utf-8", "surrogateescape")).hexdigest()
    journal.mark(index, "backed-up", sha256=written)
    _write_atomically(step.path, step.content)


def _command(journal: Journal, index: int, step: Command, output: Callable[[str], None] | None) -> None:
    folder, number = journal.folder, index + 1
    journal.mark(index, "started")
    checkpoint("started", number, "")
    saved = _back_up(step.watch, folder, number)
    heartbeat = folder / f"step-{number}.heartbeat"
    os.close(_create_private(heartbeat))
    # from here on, undo restores the watched folders, by the time window if nothing better is known
    stashes = [p for w in step.watch for p in _stashes(w)]  # a crash's, earlier: not this command's
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
        saved = _backup_path(folder, number, watched)
        folders, files = _entries(watched)
        for relative in ["", *folders]:
            mirror = saved / relative
            mirror.mkdir(parents=True, exist_ok=True)
            os.chmod(mirror, (os.lstat(os.path.join(watched, relative)).st_mode & 0o7777) | 0o700)
        for relative in files:
            _link_or_copy(os.path.join(watched, relative), saved / relative)
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
        saved = _backup_path(folder, number, watched)
        before = set(_entries(saved)[1])
        for relative in _entries(watched)[1]:
            if relative not in before:
                path = os.path.join(watched, relative)
                created.append([path, _identity(path)])
        for relative in sorted(before):
            path = os.path.join(watched, relative)
            if not _same_file(saved / relative, path):
                changed.append([path, _identity(path)])
        for stash in (p for p in _stashes(watched) if p not in stashes):
            created.extend([os.path.join(stash, r), _identity(os.path.join(stash, r))] for r in _entries(stash)[1])
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
        with os.fdopen(_create_private(log), "w", encoding="utf-8", errors="surrogateescape") as saved:
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
        raise RunnerError(f"cannot run {step.argv[0]}: {_said(error)}") from error
    if code != 0:
        raise RunnerError(f"`{shlex.join(step.argv)}` failed (exit {code}): {last} (whole output: {log})")


def _printable(report: Callable[[str], None]) -> Callable[[str], None]:
    """Progress lines that any terminal can take: a path that is not UTF-8, or a terminal that is
    ASCII only, must not end a repair half-way."""

    def say(line: str) -> None:
        line = line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        try:
            report(line)
        except UnicodeEncodeError:
            report(line.encode("ascii", "backslashreplace").decode("ascii"))

    return say


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
    say = _printable(report)
    with exclusive(plan.prefix):
        journal = start(plan)
        try:
            carry_out(journal, plan, say, output and _printable(output))
            problems = check()
        except RunnerError as error:
            problems = [str(error)]
        except KeyboardInterrupt as error:
            _undo_on_the_spot(journal.folder, say, "interrupted")
            say(f"Interrupted: everything this run had changed was put back, {plan.prefix} is as it was.")
            raise Interrupted("interrupted, and undone") from error
        except Exception as error:
            problems = [_said(error)]
        if problems:
            _undo_on_the_spot(journal.folder, say, "; ".join(problems))
            raise Undone(problems, journal.folder)
        _prune(plan.prefix)
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
            f"{why}; putting it back failed too: {_said(error) if isinstance(error, OSError) else error}"
            f" (journal and backups in {folder}; `attn-doctor undo` finishes it)"
        ) from error
    finally:
        if keep is not None:
            signal.signal(signal.SIGINT, keep)


# ---- finding journals --------------------------------------------------------------------------


def _repairs(prefix: str) -> list[Path]:
    """The repair folders of this environment, newest first (their names begin with the time)."""
    root = repairs_root(prefix)
    if not root.is_dir() or root.is_symlink():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.is_symlink()), reverse=True)


def _state(folder: Path) -> str | None:
    """The journal's state; None when it is missing or damaged."""
    try:
        return str(_load(folder / "journal.json")["state"])
    except (RunnerError, KeyError):
        return None


def latest(prefix: str) -> Path | None:
    """The most recent repair of this environment that has not been undone. A damaged journal is
    returned too: undo then says so in one line, rather than undoing an older repair under it."""
    for folder in _repairs(prefix):
        if os.path.lexists(folder / "journal.json") and _state(folder) != "undone":
            return folder
    return None


def unfinished(prefix: str) -> list[Path]:
    """Repairs that were interrupted (killed while running, or while being undone): `check`
    reports them, `attn-doctor undo` puts them back."""
    return [f for f in _repairs(prefix) if _state(f) in ("running", "undoing")]


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="ascii"))
    except (OSError, ValueError) as error:
        raise RunnerError(
            f"journal {path} is damaged ({error.__class__.__name__}): this repair cannot be undone from it;"
            f" move {path.parent} away to undo older repairs"
        ) from error
    if not isinstance(data, dict) or data.get("schema") != JOURNAL_SCHEMA or not isinstance(data.get("steps"), list):
        raise RunnerError(f"journal {path} is not an {JOURNAL_SCHEMA} journal: move {path.parent} away")
    return data


def _prune(prefix: str) -> None:
    """Backups are snapshots of site-packages: keep the newest KEEP completed repairs, and the
    newest KEEP folders whatever their state; delete older completed or undone ones."""
    completed = 0
    for position, folder in enumerate(_repairs(prefix)):
        state = _state(folder)
        completed += state == "done"
        if (state == "done" and completed > KEEP) or (state == "undone" and position >= KEEP):
            shutil.rmtree(folder, ignore_errors=True)


# ---- undo --------------------------------------------------------------------------------------


def undo(folder: Path, report: Callable[[str], None]) -> None:
    """Put back every step that started, last first, after checking them all: the journal is this
    environment's, its paths are inside it, its backups are there, and what is on disk is still
    what each step left. Any of these failing is one line (RunnerError) and nothing is changed.
    Safe to run again if interrupted."""
    report = _printable(report)
    journal = Journal(folder, _load(folder / "journal.json"))
    steps: list[dict[str, Any]] = journal.data["steps"]
    try:
        _check_environment(journal)
        for index in reversed(range(len(steps))):
            problem = _check_step(steps[index], folder, index + 1)
            if problem is not None:
                raise RunnerError(f"cannot undo {folder.name}: {problem}; nothing was changed")
        journal.data["state"] = "undoing"
        for index in reversed(range(len(steps))):
            step = steps[index]
            if step["state"] == "planned":
                continue
            report(f"undo [{index + 1}/{len(steps)}] {step['kind']} {step.get('path') or shlex.join(step['argv'][:4])}")
            _mark_if_room(journal, index, "undoing")
            _undo_step(step, folder, index + 1, report)
            _mark_if_room(journal, index, "planned")
        journal.data["state"] = "undone"
        journal.save()
    except OSError as error:
        raise RunnerError(f"undo of {folder.name} stopped: {_said(error)}") from error


def _mark_if_room(journal: Journal, index: int, state: str) -> None:
    """Undo's progress marks are bookkeeping: each step's undo is safe to repeat, so a full disk
    (the reserve already spent by the failed step) must not stop putting files back, which frees
    space; the final mark is then written."""
    try:
        journal.mark(index, state)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise


def _check_environment(journal: Journal) -> None:
    """The journal must belong to the environment it lies in, and name nothing outside it."""
    recorded = journal.data.get("environment") or {}
    here = os.path.realpath(journal.folder.parent.parent.parent)
    if recorded.get("prefix") != here or recorded != _environment(here):
        raise RunnerError(
            f"journal {journal.folder} was written for {recorded.get('prefix')!s}, not for {here}"
            " (a copied environment?): refused, nothing was changed"
        )
    outside = _outside(_journal_paths(journal.data["steps"]), here)
    if outside is not None:
        raise RunnerError(f"journal {journal.folder} names {outside}, outside {here}: refused, nothing was changed")


def _check_step(step: dict[str, Any], folder: Path, number: int) -> str | None:
    """Why this step cannot be put back; None when it can (or has nothing to put back)."""
    state, kind = step["state"], step["kind"]
    if state == "planned":
        return None
    if kind == "move-aside":
        return _check_moved(step, _backup_path(folder, number, step["path"]))
    if kind == "rewrite":
        return _check_rewritten(step, _backup_path(folder, number, step["path"]))
    if "created" in step:
        return _check_command(step, folder, number)
    if "saved" in step:  # killed while the command ran
        saved = sum(len(_entries(_backup_path(folder, number, w))[1]) for w in step["watch"])
        if saved != step["saved"] or not (folder / f"step-{number}.heartbeat").is_file():
            return f"the backups of step {number} are incomplete ({saved} of {step['saved']} files)"
        return None
    return None  # killed while backing up: the command never ran


def _check_moved(step: dict[str, Any], backup: Path) -> str | None:
    path = step["path"]
    if os.path.lexists(backup):
        return f"{path} exists again since the repair" if os.path.lexists(path) else None
    if os.path.lexists(path) or step.get("gone"):
        return None  # never moved, or already put back
    return f"the backup of {path} is missing ({backup})"


def _check_rewritten(step: dict[str, Any], backup: Path) -> str | None:
    path = step["path"]
    if "sha256" not in step:  # killed before its backup was complete: never rewritten
        return None
    if not os.path.lexists(backup):
        return f"the backup of {path} is missing ({backup})"
    if _same_file(backup, path) or _sha256(backup) == _sha256(path):
        return None  # not rewritten yet (a failed rename), or already put back
    if not os.path.lexists(path):
        return f"{path} is gone since the repair"
    if _sha256(path) != step["sha256"]:
        return f"{path} was changed since the repair"
    return None


def _check_command(step: dict[str, Any], folder: Path, number: int) -> str | None:
    """Each file still as the command left it, or already put back; a mix only mid-undo."""
    left: list[str] = []
    back: list[str] = []
    for path, identity in step["created"]:
        now = _identity(path)
        if now is not None and now != identity:
            return f"{path} was changed since the repair"
        (back if now is None else left).append(path)
    for path, identity in step["changed"]:
        backup = _backup_path(folder, number, path)
        if not os.path.lexists(backup):
            return f"the backup of {path} is missing ({backup})"
        if _same_file(backup, path):
            back.append(path)
        elif _identity(path) == identity:
            left.append(path)
        else:
            return f"{path} was {'removed' if not os.path.lexists(path) else 'changed'} since the repair"
    if left and back and step["state"] != "undoing":
        return f"{back[0]} was {'removed' if not os.path.lexists(back[0]) else 'put back'} since the repair"
    return None


def _undo_step(step: dict[str, Any], folder: Path, number: int, report: Callable[[str], None]) -> None:
    if step["kind"] == "move-aside":
        backup = _backup_path(folder, number, step["path"])
        if os.path.lexists(backup) and not os.path.lexists(step["path"]):
            _make_parents(Path(step["path"]).parent, None)
            os.rename(backup, step["path"])
    elif step["kind"] == "rewrite":
        backup = _backup_path(folder, number, step["path"])
        if "sha256" in step and os.path.lexists(backup) and _sha256(backup) != _sha256(step["path"]):
            _put_back(backup, Path(step["path"]))
    elif "created" in step:
        _take_back(step, folder, number)
    elif "start_ns" in step:  # killed while the command ran
        _restore_window(step, folder, number, report)


def _take_back(step: dict[str, Any], folder: Path, number: int) -> None:
    """Exactly what the command did, as recorded: its files removed, the ones it replaced or
    removed linked back, and the folders it made that are empty again removed."""
    for path, _ in step["created"]:
        if os.path.lexists(path):
            os.remove(path)
    for path, _ in step["changed"]:
        backup = _backup_path(folder, number, path)
        if not _same_file(backup, path):
            _put_back(backup, Path(path), backup.parent)
    for watched in step["watch"]:
        mirror = _backup_path(folder, number, watched)
        made = {os.path.dirname(p) for p, _ in step["created"] if p.startswith(watched.rstrip("/") + os.sep)}
        _remove_empty_new_folders(watched, mirror, made)
        for stash in (p for p in _stashes(watched) if p not in step.get("stashes", [])):
            _remove_empty_tree(stash)


def _remove_empty_new_folders(watched: str, mirror: Path, candidates: set[str]) -> None:
    """Folders among `candidates` (and their parents) that the backup does not hold and that are
    empty: never one that existed before, and the watched folder only when it did not exist
    before the step (no mirror of it was made: a clone's folder)."""
    new_root = not mirror.exists()
    for folder in sorted(candidates, key=len, reverse=True):
        while folder.startswith(watched.rstrip("/") + os.sep) or (new_root and folder == watched.rstrip("/")):
            if not new_root and (mirror / os.path.relpath(folder, watched)).is_dir():
                break
            if not os.path.isdir(folder) or os.path.islink(folder) or os.listdir(folder):
                break
            os.rmdir(folder)
            folder = os.path.dirname(folder)


def _restore_window(step: dict[str, Any], folder: Path, number: int, report: Callable[[str], None]) -> None:
    """A command killed while it ran: what it did is known only by time (see the module's note)."""
    first = int(step["start_ns"])
    last = os.lstat(folder / f"step-{number}.heartbeat").st_mtime_ns + AFTER_LAST_BEAT_NS
    kept: list[str] = []
    stashed: list[str] = []
    for watched in step["watch"]:
        mirror = _backup_path(folder, number, watched)
        theirs, made = _made_in_window(watched, mirror, first, last, kept)
        for stash in (p for p in _stashes(watched) if p not in step.get("stashes", [])):
            if first <= os.lstat(stash).st_ctime_ns <= last:  # renamed there in the window
                theirs.extend(os.path.join(stash, r) for r in _entries(stash)[1])
                stashed.append(stash)
        for path in theirs:
            if os.lstat(path).st_ctime_ns <= last:
                os.remove(path)
            else:
                kept.append(path)
        _put_back_changed(watched, mirror, last, kept)
        _remove_empty_new_folders(watched, mirror, made)
    for stash in stashed:
        _remove_empty_tree(stash)
    if kept:
        report(f"      left as they are (changed after the repair stopped): {', '.join(kept[:5])}")


def _made_in_window(watched: str, mirror: Path, first: int, last: int, kept: list[str]) -> tuple[list[str], set[str]]:
    """The new files that are the command's, and the new folders it made; before anything is
    removed, since removing changes a folder's ctime."""
    folders, files = _entries(watched)
    old_folders, old_files = set(_entries(mirror)[0]), set(_entries(mirror)[1])
    made: set[str] = set()
    for relative in folders:  # parents come before their children
        ctime = os.lstat(os.path.join(watched, relative)).st_ctime_ns
        parent = os.path.dirname(relative)
        if relative not in old_folders and ctime <= last and (first <= ctime or parent in made):
            made.add(relative)
    theirs: list[str] = []
    for relative in files:
        if relative in old_files:
            continue
        path = os.path.join(watched, relative)
        ctime = os.lstat(path).st_ctime_ns
        if ctime <= last and (first <= ctime or os.path.dirname(relative) in made):
            theirs.append(path)
        else:
            kept.append(path)
    return theirs, {os.path.join(watched, r) for r in made}


def _put_back_changed(watched: str, mirror: Path, last: int, kept: list[str]) -> None:
    for relative in _entries(mirror)[1]:
        backup, place = mirror / relative, Path(watched) / relative
        if _same_file(backup, place):
            continue
        if os.path.lexists(place) and os.lstat(place).st_ctime_ns > last:
            kept.append(str(place))  # someone's later change: not the command's to take back
            continue
        _put_back(backup, place, backup.parent)
    for relative in _entries(mirror)[0]:  # folders that existed, empty ones too
        _make_parents(Path(watched) / relative, mirror / relative)
