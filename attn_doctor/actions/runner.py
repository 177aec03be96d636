"""Carry out a plan step by step with a journal, and undo it from that journal and its backups.

The journal (`journal.json` in the repair's folder) is rewritten atomically before and after
every step, so a repair killed at any point leaves a record of what started and what finished.
Each step's undo is safe whether or not the step's effect happened, so `undo` works after a
crash as after a complete run. Repairs live under the target environment,
`<prefix>/.attn-doctor/repairs/<id>/`, on the same file system as its site-packages as a rule,
so that moving aside is a rename and a command's backup of the folders it may change is a hard
link per file (a whole site-packages with torch in well under a second, no space). That is safe
because pip and uv never rewrite an installed file in place: they unlink or rename it and write
a new one, so the linked backup keeps the old bytes. Where links cannot be made, files are copied.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attn_doctor.actions.plan import Command, MoveAside, Plan, RewriteFile, Step

JOURNAL_SCHEMA = "attn-doctor/journal-1"


class RunnerError(Exception):
    """A step failed or a journal cannot be used; the message says which and what to do."""


def repairs_root(prefix: str) -> Path:
    return Path(prefix) / ".attn-doctor" / "repairs"


@contextmanager
def exclusive(prefix: str) -> Iterator[None]:
    """One repair or undo at a time per environment (two shells on a shared node)."""
    root = repairs_root(prefix)
    root.mkdir(parents=True, exist_ok=True)
    with (root / "lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise RunnerError(f"another attn-doctor repair or undo is running on {prefix}") from error
        yield


def _backup_path(folder: Path, number: int, path: str) -> Path:
    """Each step keeps its own backups: two steps may save the same path."""
    return folder / f"step-{number}" / path.lstrip("/")


def _files_under(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(str(Path(root) / name) for root, _, names in os.walk(folder) for name in names)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    with temporary.open("w") as handle:
        json.dump(data, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


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


# A test seam: "started:N" or "done:N" ends the process abruptly at that point of step N
# (1-based), as a kill would. Only the interrupted-repair tests set it.
KILL_POINT = "ATTN_DOCTOR_KILL_AT"


def _maybe_killed(state: str, number: int) -> None:
    if os.environ.get(KILL_POINT) == f"{state}:{number}":
        os._exit(137)


def start(plan: Plan) -> Journal:
    """The repair's folder and its journal, every step still planned."""
    stamp = datetime.datetime.now(datetime.timezone.utc)
    folder = repairs_root(plan.prefix) / f"{stamp:%Y%m%dT%H%M%S%fZ}-{plan.action}"
    folder.mkdir(parents=True)
    journal = Journal(
        folder,
        {
            "schema": JOURNAL_SCHEMA,
            "action": plan.action,
            "python": plan.python,
            "created": stamp.isoformat(timespec="seconds"),
            "state": "running",
            "steps": [{**_step_data(s), "state": "planned"} for s in plan.steps],
        },
    )
    journal.save()
    return journal


def carry_out(
    journal: Journal, plan: Plan, report: Callable[[str], None], output: Callable[[str], None] | None = None
) -> None:
    """Run every step; raises RunnerError at the first failing step (the journal stays).
    A command's output goes to `step-N.log` in the repair's folder, and line by line to `output`."""
    folder = journal.folder
    for index, step in enumerate(plan.steps):
        number = index + 1
        report(f"[{number}/{len(plan.steps)}] {step.describe()}")
        journal.mark(index, "started")
        _maybe_killed("started", number)
        if isinstance(step, MoveAside):
            if os.path.lexists(step.path):  # an earlier step's command may have removed it already
                _move(step.path, _backup_path(folder, number, step.path))
            else:
                report(f"      already gone: {step.path}")
        elif isinstance(step, RewriteFile):
            _copy_atomically(step.path, _backup_path(folder, number, step.path))
            _write_atomically(step.path, step.content)
        else:
            for path in (p for watched in step.watch for p in _files_under(watched)):
                _link_or_copy(path, _backup_path(folder, number, path))
            journal.mark(index, "backed-up")  # from here on, undo restores the watched folders
            _maybe_killed("backed-up", number)
            _run(step, folder / f"step-{number}.log", output)
            created, changed = _changes(step.watch, folder, number)
            journal.mark(index, "done", created=created, changed=changed)
            _maybe_killed("done", number)
            continue
        journal.mark(index, "done")
        _maybe_killed("done", number)
    journal.data["state"] = "done"
    journal.save()


class Undone(Exception):
    """A step failed, or the result was not as promised: everything was put back."""

    def __init__(self, problems: list[str], folder: Path) -> None:
        super().__init__("; ".join(problems))
        self.folder = folder  # the journal and the steps' logs stay there


def carry_out_checked(
    plan: Plan,
    check: Callable[[], list[str]],
    report: Callable[[str], None],
    output: Callable[[str], None] | None = None,
) -> Path:
    """The whole protocol of an action: one at a time per environment, every step journaled,
    then `check` says what is not as promised; on a failed step or any problem, undo it all
    and raise Undone. Returns the repair's folder."""
    with exclusive(plan.prefix):
        journal = start(plan)
        try:
            carry_out(journal, plan, report, output)
            problems = check()
        except RunnerError as error:
            problems = [str(error)]
        if problems:
            undo(journal.folder, report)
            raise Undone(problems, journal.folder)
    return journal.folder


def _move(source: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, target)


def _copy_atomically(source: str | Path, target: Path) -> None:
    """A backup is either whole or absent: copied beside its place, then renamed into it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".attn-doctor-tmp")
    shutil.copy2(source, temporary, follow_symlinks=False)
    os.replace(temporary, target)


def _link_or_copy(source: str, target: Path) -> None:
    """A backup that shares the file's bytes (see the module's note), or a copy across devices."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".attn-doctor-tmp")
    try:
        os.link(source, temporary, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, temporary, follow_symlinks=False)
    os.replace(temporary, target)


def _write_atomically(path: str, content: str) -> None:
    temporary = Path(path + ".attn-doctor-tmp")
    temporary.write_text(content, encoding="utf-8")
    shutil.copymode(path, temporary)
    os.replace(temporary, path)


def _run(step: Command, log: Path, output: Callable[[str], None] | None) -> None:
    """The command's own output, stdout and stderr merged in order, kept whole in `log`."""
    last = "no output"
    try:
        with log.open("w", encoding="utf-8") as saved:
            saved.write(f"$ {step.describe()}\n")
            with subprocess.Popen(
                list(step.argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                env={**os.environ, **dict(step.env)},
            ) as child:
                assert child.stdout is not None
                for line in child.stdout:
                    saved.write(line)
                    saved.flush()
                    if line.strip():
                        last = line.strip()
                        if output is not None:
                            output(line.rstrip())
            code = child.returncode
    except OSError as error:
        raise RunnerError(f"cannot run {step.argv[0]}: {error.strerror}") from error
    if code != 0:
        raise RunnerError(f"`{shlex.join(step.argv)}` failed (exit {code}): {last} (whole output: {log})")


def latest(prefix: str) -> Path | None:
    """The most recent repair of this environment that has not been undone."""
    root = repairs_root(prefix)
    if not root.is_dir():
        return None
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        journal = folder / "journal.json"
        if journal.is_file() and _load(journal).get("state") != "undone":
            return folder
    return None


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunnerError(f"journal {path} is unreadable: {error}") from error
    if not isinstance(data, dict) or data.get("schema") != JOURNAL_SCHEMA:
        raise RunnerError(f"journal {path} is not an attn-doctor journal ({JOURNAL_SCHEMA})")
    return data


def undo(folder: Path, report: Callable[[str], None]) -> None:
    """Put back every step that started, last first. Safe to run again if interrupted."""
    journal = Journal(folder, _load(folder / "journal.json"))
    steps = journal.data["steps"]
    for index in reversed(range(len(steps))):
        step = steps[index]
        if step["state"] == "planned":
            continue
        report(f"undo [{index + 1}/{len(steps)}] {step['kind']} {step.get('path') or ' '.join(step['argv'][:4])}")
        _undo_step(step, folder, index + 1)
        journal.mark(index, "planned")
    journal.data["state"] = "undone"
    journal.save()


def _undo_step(step: dict[str, Any], folder: Path, number: int) -> None:
    if step["kind"] == "move-aside":
        backup = _backup_path(folder, number, step["path"])
        if os.path.lexists(backup) and not os.path.lexists(step["path"]):
            _move(str(backup), Path(step["path"]))
    elif step["kind"] == "rewrite":
        backup = _backup_path(folder, number, step["path"])
        if backup.exists():  # absent: killed before the copy, so the file was never rewritten
            _copy_atomically(backup, Path(step["path"]))
    elif step["state"] == "done" and "created" in step:
        _take_back(step["created"], step["changed"], step["watch"], folder, number)
    elif step["state"] in ("backed-up", "done"):  # killed while it ran: what it did is not known
        for watched in step["watch"]:
            _restore_folder(watched, _backup_path(folder, number, watched))


def _changes(watch: tuple[str, ...], folder: Path, number: int) -> tuple[list[str], list[str]]:
    """What the command did to the watched folders: the files it created, and those it replaced
    or removed (their backups no longer share the file on disk). Recorded when it finishes, so
    that undo takes back exactly these and leaves alone what anyone changed afterwards."""
    created, changed = [], []
    for watched in watch:
        saved = _backup_path(folder, number, watched)
        before = {os.path.relpath(p, saved) for p in _files_under(str(saved))}
        for path in _files_under(watched):
            if os.path.relpath(path, watched) not in before:
                created.append(path)
        for relative in sorted(before):
            if not _same_file(saved / relative, Path(watched) / relative):
                changed.append(os.path.join(watched, relative))
    return created, changed


def _take_back(created: list[str], changed: list[str], watch: list[str], folder: Path, number: int) -> None:
    for path in created:
        if os.path.lexists(path):
            os.remove(path)
    for path in changed:
        _copy_atomically(_backup_path(folder, number, path), Path(path))
    roots = {os.path.normpath(w) for w in watch}
    for parent in sorted({os.path.dirname(p) for p in created}, key=len, reverse=True):
        # folders it made that are empty again, up to (never including) the watched folder
        while parent not in roots and any(parent.startswith(r + os.sep) for r in roots):
            if not os.path.isdir(parent) or os.listdir(parent):
                break
            os.rmdir(parent)
            parent = os.path.dirname(parent)


def _same_file(one: Path, other: Path) -> bool:
    try:
        first, second = os.lstat(one), os.lstat(other)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _restore_folder(watched: str, saved: Path) -> None:
    """The folder as it was before the command: files it created removed, every file restored."""
    originals = {os.path.relpath(p, saved) for p in _files_under(str(saved))}
    for path in _files_under(watched):
        if os.path.relpath(path, watched) not in originals:
            os.remove(path)
    for relative in sorted(originals):
        place = Path(watched) / relative
        if not _same_file(saved / relative, place):  # a file the command left alone is still its backup's
            _copy_atomically(saved / relative, place)
    if os.path.isdir(watched):  # folders the command created and that are empty again
        for root, _, _ in sorted(os.walk(watched), key=lambda entry: -len(entry[0])):
            if not os.listdir(root) and (root != watched or not originals):
                os.rmdir(root)
