"""Files the doctor writes under an environment, and how a file is told from its replacement.

Each is its owner's alone (0600), created with O_EXCL|O_NOFOLLOW so that a planted symlink is
refused; a backup shares the file's bytes by a hard link, and a rewrite is written beside the file
and renamed over it (runner.py's note says why that is safe).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

TEMPORARY = ".attn-doctor-tmp"


RESERVE_BYTES = 256 * 1024


def create_private(path: Path) -> int:
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


def make_reserve(folder: Path) -> None:
    with os.fdopen(create_private(folder / "reserve"), "wb") as handle:
        handle.write(b"\0" * RESERVE_BYTES)
        handle.flush()
        os.fsync(handle.fileno())


def write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        _replace_json(path, data)
    except OSError as error:
        if error.errno != errno.ENOSPC or not _release_reserve(path.parent):
            raise
        _replace_json(path, data)  # the reserve made room for it


def _replace_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    try:
        with os.fdopen(create_private(temporary), "w", encoding="ascii") as handle:
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


def link_or_copy(source: str | Path, target: Path) -> None:
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


def put_back(backup: Path, place: Path, folder_modes: Path | None = None) -> None:
    """The backup linked into its place (no space needed), replacing what is there."""
    make_parents(place.parent, folder_modes)
    link_or_copy(backup, place)


def make_parents(folder: Path, modes: Path | None) -> None:
    """Folders a command removed, made again with their old modes (kept on the backup's mirror)."""
    if folder.is_dir():
        return
    make_parents(folder.parent, modes and modes.parent)
    mode = os.stat(modes).st_mode & 0o7777 if modes is not None and modes.is_dir() else 0o755
    folder.mkdir(mode=mode)
    os.chmod(folder, mode)


def write_atomically(path: str, content: str) -> None:
    """Written beside the file, then renamed over it: the original (linked in the backup) is never
    written into."""
    mode = os.lstat(path).st_mode & 0o7777
    temporary = _temporary_beside(path)
    try:
        with os.fdopen(create_private(temporary), "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(content)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def file_sha256(path: str | Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def file_identity(path: str | Path) -> list[int] | None:
    """What tells a file from its replacement: a reinstall makes a new inode, an edit a new mtime."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return [info.st_ino, info.st_size, info.st_mtime_ns]


def same_file(one: str | Path, other: str | Path) -> bool:
    try:
        first, second = os.lstat(one), os.lstat(other)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def folder_entries(folder: str | Path) -> tuple[list[str], list[str]]:
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


def pip_stashes(watched: str) -> list[str]:
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


def remove_empty_tree(folder: str) -> None:
    for root, _, _ in sorted(os.walk(folder), key=lambda entry: -len(entry[0])):
        if not os.listdir(root):
            os.rmdir(root)
