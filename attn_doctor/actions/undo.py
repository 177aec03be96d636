"""Undo of a repair from its journal and backups: every step checked before anything is changed,
then put back last first; a command killed while it ran is taken back by its time window
(runner.py's note says what that can and cannot tell).
"""

from __future__ import annotations

import errno
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attn_doctor.actions.files import (
    file_identity,
    file_sha256,
    folder_entries,
    make_parents,
    pip_stashes,
    put_back,
    remove_empty_tree,
    same_file,
)
from attn_doctor.actions.journal import (
    Journal,
    RunnerError,
    backup_path,
    environment_of,
    first_outside,
    journal_paths,
    load_journal,
    said,
)

AFTER_LAST_BEAT_NS = 500_000_000  # a kill lands within one beat (0.2 s); the rest is slack for the coarse clock


def printable(report: Callable[[str], None]) -> Callable[[str], None]:
    """Progress lines that any terminal can take: a path that is not UTF-8, or a terminal that is
    ASCII only, must not end a repair half-way."""

    def say(line: str) -> None:
        line = line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        try:
            report(line)
        except UnicodeEncodeError:
            report(line.encode("ascii", "backslashreplace").decode("ascii"))

    return say


def undo(folder: Path, report: Callable[[str], None]) -> None:
    """Put back every step that started, last first, after checking them all: the journal is this
    environment's, its paths are inside it, its backups are there, and what is on disk is still
    what each step left. Any of these failing is one line (RunnerError) and nothing is changed.
    Safe to run again if interrupted."""
    report = printable(report)
    journal = Journal(folder, load_journal(folder / "journal.json"))
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
        raise RunnerError(f"undo of {folder.name} stopped: {said(error)}") from error


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
    if recorded.get("prefix") != here or recorded != environment_of(here):
        raise RunnerError(
            f"journal {journal.folder} was written for {recorded.get('prefix')!s}, not for {here}"
            " (a copied environment?): refused, nothing was changed"
        )
    outside = first_outside(journal_paths(journal.data["steps"]), here)
    if outside is not None:
        raise RunnerError(f"journal {journal.folder} names {outside}, outside {here}: refused, nothing was changed")


def _check_step(step: dict[str, Any], folder: Path, number: int) -> str | None:
    """Why this step cannot be put back; None when it can (or has nothing to put back)."""
    state, kind = step["state"], step["kind"]
    if state == "planned":
        return None
    if kind == "move-aside":
        return _check_moved(step, backup_path(folder, number, step["path"]))
    if kind == "rewrite":
        return _check_rewritten(step, backup_path(folder, number, step["path"]))
    if "created" in step:
        return _check_command(step, folder, number)
    if "saved" in step:  # killed while the command ran
        saved = sum(len(folder_entries(backup_path(folder, number, w))[1]) for w in step["watch"])
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
    if same_file(backup, path) or file_sha256(backup) == file_sha256(path):
        return None  # not rewritten yet (a failed rename), or already put back
    if not os.path.lexists(path):
        return f"{path} is gone since the repair"
    if file_sha256(path) != step["sha256"]:
        return f"{path} was changed since the repair"
    return None


def _check_command(step: dict[str, Any], folder: Path, number: int) -> str | None:
    """Each file still as the command left it, or already put back; a mix only mid-undo."""
    left: list[str] = []
    back: list[str] = []
    for path, identity in step["created"]:
        now = file_identity(path)
        if now is not None and now != identity:
            return f"{path} was changed since the repair"
        (back if now is None else left).append(path)
    for path, identity in step["changed"]:
        backup = backup_path(folder, number, path)
        if not os.path.lexists(backup):
            return f"the backup of {path} is missing ({backup})"
        if same_file(backup, path):
            back.append(path)
        elif file_identity(path) == identity:
            left.append(path)
        else:
            return f"{path} was {'removed' if not os.path.lexists(path) else 'changed'} since the repair"
    if left and back and step["state"] != "undoing":
        return f"{back[0]} was {'removed' if not os.path.lexists(back[0]) else 'put back'} since the repair"
    return None


def _undo_step(step: dict[str, Any], folder: Path, number: int, report: Callable[[str], None]) -> None:
    if step["kind"] == "move-aside":
        backup = backup_path(folder, number, step["path"])
        if os.path.lexists(backup) and not os.path.lexists(step["path"]):
            make_parents(Path(step["path"]).parent, None)
            os.rename(backup, step["path"])
    elif step["kind"] == "rewrite":
        backup = backup_path(folder, number, step["path"])
        if "sha256" in step and os.path.lexists(backup) and file_sha256(backup) != file_sha256(step["path"]):
            put_back(backup, Path(step["path"]))
    elif "created" in step:
        _take_back(step, folder, number)
    elif "start_ns" in step:  # killed while the command ran
        _restore_window(step, folder, number, report)


def _take_back(step: dict[str, Any], folder: Path, number: int) -> None:
    """Exactly what the command did, as recorded: its files removed, the ones it replaced or
    removed linked back, and the folders it made (or made files in) that are empty again removed."""
    for path, _ in step["created"]:
        if os.path.lexists(path):
            os.remove(path)
    for path, _ in step["changed"]:
        backup = backup_path(folder, number, path)
        if not same_file(backup, path):
            put_back(backup, Path(path), backup.parent)
    for watched in step["watch"]:
        mirror = backup_path(folder, number, watched)
        made = {os.path.dirname(p) for p, _ in step["created"]} | set(step.get("folders", []))
        _remove_empty_new_folders(watched, mirror, {p for p in made if p.startswith(watched.rstrip("/") + os.sep)})
        for stash in (p for p in pip_stashes(watched) if p not in step.get("stashes", [])):
            remove_empty_tree(stash)


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
        mirror = backup_path(folder, number, watched)
        theirs, made = _made_in_window(watched, mirror, first, last, kept)
        for stash in (p for p in pip_stashes(watched) if p not in step.get("stashes", [])):
            if first <= os.lstat(stash).st_ctime_ns <= last:  # renamed there in the window
                theirs.extend(os.path.join(stash, r) for r in folder_entries(stash)[1])
                stashed.append(stash)
        for path in theirs:
            if os.lstat(path).st_ctime_ns <= last:
                os.remove(path)
            else:
                kept.append(path)
        _put_back_changed(watched, mirror, last, kept)
        _remove_empty_new_folders(watched, mirror, made)
    for stash in stashed:
        remove_empty_tree(stash)
    if kept:
        report(f"      left as they are (changed after the repair stopped): {', '.join(kept[:5])}")


def _made_in_window(watched: str, mirror: Path, first: int, last: int, kept: list[str]) -> tuple[list[str], set[str]]:
    """The new files that are the command's, and the new folders it made; before anything is
    removed, since removing changes a folder's ctime."""
    folders, files = folder_entries(watched)
    old_folders, old_files = set(folder_entries(mirror)[0]), set(folder_entries(mirror)[1])
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
    for relative in folder_entries(mirror)[1]:
        backup, place = mirror / relative, Path(watched) / relative
        if same_file(backup, place):
            continue
        if os.path.lexists(place) and os.lstat(place).st_ctime_ns > last:
            kept.append(str(place))  # someone's later change: not the command's to take back
            continue
        put_back(backup, place, backup.parent)
    for relative in folder_entries(mirror)[0]:  # folders that existed, empty ones too
        make_parents(Path(watched) / relative, mirror / relative)
