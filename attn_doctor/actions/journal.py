"""A repair's journal and where repairs live: `<prefix>/.attn-doctor/repairs/<id>/journal.json`,
rewritten atomically before and after every step and recording the environment it was written for;
the lock that lets one repair or undo run at a time per environment; finding journals and pruning
their backups (runner.py's note says how these fit together).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import os
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attn_doctor.actions.files import folder_entries, make_reserve, write_json
from attn_doctor.actions.plan import MoveAside, Plan, RewriteFile, Step
from attn_doctor.facts.repairs import (
    JOURNAL_SCHEMA,
    JournalDamaged,
    journal_state,
    read_journal,
    repair_folders,
    repairs_root,
)

KEEP = 3  # completed repairs whose backups are kept whole
# While a killed command's watchdog writes down what the command did, it holds the environment's
# lock (inherited from the runner) and a marker of this name in the repair's folder; another action
# waits for it this long rather than being refused.
RECORDING = "recording"
RECORDING_WAIT_S = 30.0


class RunnerError(Exception):
    """A step failed or a journal cannot be used; the message says which and what to do."""


class UndoFailed(RunnerError):
    """An action failed and putting it back failed too; the message says where the journal is."""


def said(error: BaseException) -> str:
    """One line for any failure, a full disk named as such."""
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        if error.errno == errno.ENOSPC:
            return f"the disk is full{where}: free some space and run `attn-doctor undo`"
        return f"{error.strerror or error}{where}"
    return f"{type(error).__name__}: {error}"


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
        raise RunnerError(f"cannot keep repairs in {root}: {said(error)}") from error
    return root


def environment_of(prefix: str) -> dict[str, Any]:
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


def first_outside(paths: list[str], prefix: str) -> str | None:
    root = os.path.realpath(prefix)
    return next((p for p in paths if not _inside(p, root)), None)


def journal_paths(steps: list[dict[str, Any]]) -> list[str]:
    paths: list[str] = []
    for step in steps:
        paths.extend(step["watch"] if step["kind"] == "command" else [step["path"]])
        paths.extend(entry[0] for entry in step.get("created", []) + step.get("changed", []))
        paths.extend(step.get("folders", []))
    return paths


@contextmanager
def exclusive(prefix: str) -> Iterator[int]:
    """One repair or undo at a time per environment (two shells on a shared node). Yields the
    lock's descriptor: a command's watchdog inherits it, so that the lock outlives a killed runner
    until what its command did is written down."""
    root = _prepared_root(prefix)
    try:
        descriptor = os.open(root / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise RunnerError(f"cannot open {root / 'lock'} ({said(error)}): refused, move it away") from error
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise RunnerError(f"{root / 'lock'} is not a plain file: refused, move it away")
        os.fchmod(descriptor, 0o600)
        _lock(descriptor, root, prefix)
        yield descriptor
    finally:
        os.close(descriptor)


def _lock(descriptor: int, root: Path, prefix: str) -> None:
    deadline = time.monotonic() + RECORDING_WAIT_S
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError as error:
            recording = any(root.glob(f"*/{RECORDING}"))  # a killed repair being written down: brief
            if not recording or time.monotonic() >= deadline:
                raise RunnerError(f"another attn-doctor repair or undo is running on {prefix}") from error
            time.sleep(0.05)


def _step_data(step: Step) -> dict[str, Any]:
    if isinstance(step, MoveAside):
        return {"kind": "move-aside", "path": step.path}
    if isinstance(step, RewriteFile):
        return {"kind": "rewrite", "path": step.path}
    # why: what the plan said of it, the origin of a fetched wheel among it
    return {
        "kind": "command",
        "argv": list(step.argv),
        "env": dict(step.env),
        "watch": list(step.watch),
        "why": step.why,
    }


@dataclass
class Journal:
    folder: Path
    data: dict[str, Any]
    lock: int | None = None  # the environment's lock, held while the journal is written

    def save(self) -> None:
        write_json(self.folder / "journal.json", self.data)

    def mark(self, index: int, state: str, **extra: Any) -> None:
        self.data["steps"][index].update(state=state, **extra)
        self.save()


def start(plan: Plan, lock: int | None = None) -> Journal:
    """The repair's folder and its journal, every step still planned. Refuses a plan that would
    touch anything outside its environment."""
    steps = [{**_step_data(s), "state": "planned"} for s in plan.steps]
    outside = first_outside(journal_paths(steps), plan.prefix)  # what undo will check it by, too
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
            "environment": environment_of(plan.prefix),
            "created": stamp.isoformat(timespec="seconds"),
            "state": "running",
            "steps": steps,
        },
        lock,
    )
    try:
        folder.mkdir(mode=0o700)
        os.chmod(folder, 0o700)
        make_reserve(folder)
        journal.save()
    except OSError as error:
        shutil.rmtree(folder, ignore_errors=True)
        raise RunnerError(f"cannot start the repair in {root}: {said(error)}; nothing was changed") from error
    return journal


def backup_path(folder: Path, number: int, path: str) -> Path:
    """Each step keeps its own backups: two steps may save the same path."""
    return folder / f"step-{number}" / path.lstrip("/")


def latest(prefix: str) -> Path | None:
    """The most recent repair of this environment that has not been undone. A damaged journal is
    returned too: undo then says so in one line, rather than undoing an older repair under it."""
    for folder in repair_folders(prefix):
        if os.path.lexists(folder / "journal.json") and journal_state(folder) != "undone":
            return folder
    return None


def load_journal(path: Path) -> dict[str, Any]:
    try:
        return read_journal(path)
    except JournalDamaged as error:
        raise RunnerError(str(error)) from error


def prune(prefix: str) -> None:
    """Backups are snapshots of site-packages, and a snapshot keeps every file it links alive once
    the environment replaces it (a torch upgrade). The newest KEEP completed repairs keep theirs
    whole; older completed ones are shrunk to what their undo reads, so that every repair can
    still be undone, latest first; undone ones beyond the newest KEEP folders are deleted.
    Unfinished or damaged ones are never touched."""
    completed = 0
    for position, folder in enumerate(repair_folders(prefix)):
        try:  # read once: a torch-sized install's journal lists every file it made
            data = load_journal(folder / "journal.json")
        except RunnerError:
            continue
        state = data.get("state")
        completed += state == "done"
        if state == "done" and completed > KEEP and not data.get("shrunk"):
            with suppress(OSError, RunnerError):  # what is left is still what undo needs, and more
                _shrink(Journal(folder, data))
        elif state == "undone" and position >= KEEP:
            shutil.rmtree(folder, ignore_errors=True)


def _shrink(journal: Journal) -> None:
    """Of a finished command's snapshot, keep what undo reads: the backups of the files it replaced
    or removed, and the folders above the files it made or replaced (undo removes a new folder
    only when the snapshot has no such folder). A move-aside's or a rewrite's one backup stays."""
    folder = journal.folder
    for number, step in enumerate(journal.data["steps"], start=1):
        if "created" not in step:
            continue
        for watched in step["watch"]:
            mirror = backup_path(folder, number, watched)
            under = watched.rstrip("/") + os.sep
            keep_files = {os.path.relpath(p, watched) for p, _ in step["changed"] if p.startswith(under)}
            keep_folders = {
                os.path.dirname(os.path.relpath(p, watched))
                for p, _ in (*step["created"], *step["changed"])
                if p.startswith(under)
            }
            needed: set[str] = set()
            for kept in keep_folders:
                while kept and kept not in needed:  # the folder and the ones above it
                    needed.add(kept)
                    kept = os.path.dirname(kept)
            folders, files = folder_entries(mirror)
            for relative in files:
                if relative not in keep_files:
                    os.remove(mirror / relative)
            for relative in reversed(folders):  # children first
                if relative not in needed:
                    os.rmdir(mirror / relative)
    journal.data["shrunk"] = True
    journal.save()
