"""`install --source`: what a local source tree or archive is (its commit, its version), read
without running git or unpacking it, so that an install refuses the wrong tree before it builds;
and, run as `python -m attn_doctor.actions.source`, the step that copies or unpacks it into the
doctor's own build folder.

Where the commit comes from:
- a git checkout: `.git/HEAD` (a `.git` file of a submodule or worktree points to its git folder),
  through loose refs or `packed-refs`;
- a `git archive` tar (also gzip/bzip2/xz) or zip: git writes the commit it archived into the
  archive itself, as the pax global header's `comment` of a tar (what `git get-tar-commit-id`
  prints) and as the zip's comment. GitHub's "Download" archives of a commit are made this way.
A plain folder (an unpacked archive, a copy) records no commit, and is refused where a commit is
pinned. The version is read from the file the tree declares it in, or an sdist's PKG-INFO.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from attn_doctor.inputs import InputError, read_bytes

COMMIT = re.compile(r"[0-9a-f]{40}")
# `__version__ = "3.0.0"` (hopper/__init__.py), `version='2.2.0',` (SageAttention's setup.py)
VERSION = re.compile(r"""(?:^|[\s(,])(?:__version__|version)\s*=\s*['"]([^'"]+)['"]""")
PKG_INFO_VERSION = re.compile(r"^Version:\s*(\S+)\s*$", re.MULTILINE)
MAX_TEXT = 1024 * 1024  # a version file or PKG-INFO is kilobytes
MAX_PACKED_REFS = 64 * 1024 * 1024  # a line per tag and branch: large repositories have many


class SourceError(ValueError):
    """The source cannot be read (missing, not a tree or an archive we know)."""


@dataclass(frozen=True)
class Source:
    """One `--source`, as read."""

    path: str
    kind: str  # "checkout" | "folder" | "tar" | "zip"
    commit: str | None  # None: nothing in it records one
    top: str = ""  # the folder of an archive the tree is in ("flash-attention-0251105/"), else ""
    single: str = ""  # an archive's one top folder, if all of it is in one: maybe the tree's

    @property
    def archive(self) -> bool:
        return self.kind in ("tar", "zip")

    def rooted(self, marker: str) -> Source | None:
        """This source with its top folder chosen so that `marker` (a file every such tree has)
        is found; None when it is in neither place."""
        for top in dict.fromkeys(("", self.single)):
            candidate = Source(self.path, self.kind, self.commit, top, self.single)
            if candidate.has(marker):
                return candidate
        return None

    def read(self, name: str) -> str | None:
        """A text file of the tree (a path inside it), or None."""
        return read_text(self, name)

    def has(self, name: str) -> bool:
        return self.read(name) is not None if self.archive else (Path(self.path) / name).exists()


def read_source(path: str) -> Source:
    where = Path(path)
    if where.is_dir():
        commit = git_head(where)
        return Source(str(where.resolve()), "checkout" if commit else "folder", commit, "")
    if not where.is_file():
        raise SourceError(f"--source {path}: no such file or folder")
    if zipfile.is_zipfile(where):
        with zipfile.ZipFile(where) as archive:
            comment = archive.comment.decode("ascii", "replace").strip()
            return Source(str(where.resolve()), "zip", _commit(comment), "", _single(archive.namelist()))
    try:
        with tarfile.open(where) as archive:
            names = [m.name for m in archive]  # the pax global header comes before the first
            comment = str(archive.pax_headers.get("comment", "")).strip()
            return Source(str(where.resolve()), "tar", _commit(comment), "", _single(names))
    except (tarfile.TarError, OSError, EOFError) as error:
        raise SourceError(f"--source {path}: not a folder, a tar or a zip archive ({error})") from error


def _commit(text: str) -> str | None:
    return text if COMMIT.fullmatch(text) else None


def _single(names: list[str]) -> str:
    """`git archive --prefix=NAME/` and GitHub's archives put everything in one folder."""
    parts = {PurePosixPath(n).parts[0] for n in names if PurePosixPath(n).parts}
    return f"{parts.pop()}/" if len(parts) == 1 else ""


def read_text(source: Source, name: str) -> str | None:
    if source.kind == "zip":
        with zipfile.ZipFile(source.path) as archive:
            try:
                info = archive.getinfo(source.top + name)
            except KeyError:
                return None
            return None if info.file_size > MAX_TEXT else archive.read(info).decode("utf-8", "replace")
    if source.kind == "tar":
        with tarfile.open(source.path) as archive:
            for member in archive:
                if member.name == source.top + name and member.isfile() and member.size <= MAX_TEXT:
                    handle = archive.extractfile(member)
                    return handle.read().decode("utf-8", "replace") if handle else None
        return None
    try:
        return _small_text(Path(source.path) / name)
    except OSError:
        return None


def _small_text(path: Path, limit: int = MAX_TEXT) -> str:
    """A small regular file's text, read as every user-given file is (attn_doctor.inputs: a FIFO is
    never opened, nothing over `limit` is read); OSError for anything else."""
    try:
        return read_bytes(path, "", limit).decode("utf-8", "replace")
    except InputError as error:
        raise OSError(str(error)) from error


def declared_version(source: Source, version_file: str) -> str | None:
    """The version the tree declares in `version_file`, else an sdist's PKG-INFO."""
    text = source.read(version_file) if version_file else None
    found = VERSION.search(text) if text else None
    if found:
        return found.group(1)
    info = source.read("PKG-INFO")
    found = PKG_INFO_VERSION.search(info) if info else None
    return found.group(1) if found else None


def git_head(folder: Path) -> str | None:
    """The commit a checkout has out, read from its git folder; None when it is not one."""
    dot = folder / ".git"
    try:
        if dot.is_file():  # a submodule or a worktree: "gitdir: ../../.git/modules/csrc/cutlass"
            text = _small_text(dot).strip()
            if not text.startswith("gitdir:"):
                return None
            gitdir = (folder / text.removeprefix("gitdir:").strip()).resolve()
        elif dot.is_dir():
            gitdir = dot
        else:
            return None
        head = _small_text(gitdir / "HEAD").strip()
        if COMMIT.fullmatch(head):
            return head  # detached, as a pinned checkout is
        if not head.startswith("ref: "):
            return None
        ref = head.removeprefix("ref: ").strip()
        common = gitdir
        if (gitdir / "commondir").is_file():  # a worktree keeps its refs in the main git folder
            common = (gitdir / _small_text(gitdir / "commondir").strip()).resolve()
        for where in (gitdir, common):
            loose = where / ref
            if loose.is_file():
                value = _small_text(loose).strip()
                return value if COMMIT.fullmatch(value) else None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in _small_text(packed, MAX_PACKED_REFS).splitlines():
                value, _, name = line.partition(" ")
                if name.strip() == ref and COMMIT.fullmatch(value):
                    return value
    except OSError:
        return None
    return None


# --- the step: copy a folder or unpack an archive into the build folder ---


def unpack_argv(source: Source, destination: str, paths: tuple[str, ...]) -> tuple[str, ...]:
    """The command that puts `paths` of the source (all of it when empty) into `destination`,
    run by the doctor's own interpreter: the target's may be any Python."""
    argv = [sys.executable, "-m", "attn_doctor.actions.source", source.path, destination]
    if source.top:
        argv += ["--strip", source.top]
    for path in paths:
        argv += ["--only", path]
    return tuple(argv)


def _wanted(name: str, paths: list[str]) -> bool:
    return not paths or any(name == p or name.startswith(p.rstrip("/") + "/") for p in paths)


def unpack(source: str, destination: str, strip: str, paths: list[str]) -> int:
    """Copy or extract; files only inside `destination` (tar's data filter, zip names checked),
    never a .git folder. Returns how many files were written."""
    target = Path(destination)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    written = 0
    if Path(source).is_dir():
        for path in paths or [""]:
            origin = Path(source) / path
            if origin.is_dir():
                shutil.copytree(
                    origin, target / path, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git")
                )
            elif origin.exists():
                (target / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / path)
        return sum(len(files) for _, _, files in os.walk(target))
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                name = info.filename.removeprefix(strip)
                if not name or info.is_dir() or not _wanted(name, paths) or ".git" in PurePosixPath(name).parts:
                    continue
                out = (root / name).resolve()
                if not out.is_relative_to(root):
                    raise SystemExit(f"refused: {info.filename} points outside {destination}")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(archive.read(info))
                written += 1
        return written
    with tarfile.open(source) as archive:
        chosen = []
        for member in archive:
            name = member.name.removeprefix(strip)
            if not name or not _wanted(name, paths) or ".git" in PurePosixPath(name).parts:
                continue
            member.name = name
            chosen.append(member)
        if hasattr(tarfile, "data_filter"):  # 3.12, backported to 3.8.17/3.9.17/3.10.12/3.11.4
            archive.extractall(root, members=chosen, filter="data")
        else:
            for member in chosen:
                if not (root / member.name).resolve().is_relative_to(root) or member.issym() or member.islnk():
                    raise SystemExit(f"refused: {member.name} points outside {destination}")
            archive.extractall(root, members=chosen)
        written = sum(1 for m in chosen if m.isfile())
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attn_doctor.actions.source")
    parser.add_argument("source")
    parser.add_argument("destination")
    parser.add_argument("--strip", default="", help="the archive's top folder")
    parser.add_argument("--only", action="append", default=[], help="a path of the tree to take (repeatable)")
    options = parser.parse_args(argv)
    count = unpack(options.source, options.destination, options.strip, options.only)
    print(f"{count} files into {options.destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
