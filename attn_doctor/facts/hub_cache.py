"""The Hugging Face Hub kernels already in the local cache: what `attn_implementation: org/name`
can load without the network.

`kernels` keeps a kernel where huggingface_hub keeps any repository: `$KERNELS_CACHE`, else
`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; from kernels 0.14 as
`kernels--ORG--NAME` (the repository type `kernel`), before it as `models--ORG--NAME`. Each
snapshot keeps only the build variants fetched, under `build/VARIANT/`
(https://github.com/huggingface/kernels/blob/v0.16.0/docs/source/env.md;
huggingface_hub's `repo_folder_name`). Read only where `kernels` is installed; folder names only,
bounded. The shared objects of the builds `kernels` would load for this torch are listed
(`compiled_files`) for the collector to read as it reads installed extensions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from attn_doctor.facts.model import HubKernel

MAX_REPOSITORIES = 200
MAX_VARIANTS = 200  # per repository, over its snapshots
MAX_COMPILED_FILES = 32  # per repository: the shared objects of its fitting builds read
MAX_WALKED = 10_000  # per repository: entries looked at to find them (a build holds tens)


def hub_cache(environ: Mapping[str, str]) -> Path:
    for variable in ("KERNELS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if environ.get(variable):
            return Path(environ[variable])
    home = environ.get("HF_HOME") or os.path.join(
        environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME") or "~", ".cache"), "huggingface"
    )
    return Path(os.path.expanduser(home)) / "hub"


def read_hub_kernels(environ: Mapping[str, str]) -> tuple[HubKernel, ...]:
    cache = hub_cache(environ)
    try:
        entries = sorted(e.name for e in os.scandir(cache) if e.is_dir(follow_symlinks=False))
    except OSError:
        return ()
    found = []
    for name in entries:
        kind, _, rest = name.partition("--")
        owner, _, repo = rest.partition("--")
        if kind not in ("kernels", "models") or not owner or not repo:
            continue
        snapshots = cache / name / "snapshots"
        variants = _variants(snapshots)
        if kind == "models" and not variants:
            continue  # a model's cache, not a kernel's
        found.append(HubKernel(f"{owner}/{repo}", variants, str(snapshots)))
        if len(found) == MAX_REPOSITORIES:
            break
    return tuple(found)


def _variants(snapshots: Path) -> tuple[str, ...]:
    names: set[str] = set()
    try:
        revisions = list(os.scandir(snapshots))
    except OSError:
        return ()
    for revision in revisions:
        try:
            names.update(e.name for e in os.scandir(Path(revision.path) / "build") if e.is_dir())
        except OSError:
            continue
        if len(names) >= MAX_VARIANTS:
            break
    return tuple(sorted(names)[:MAX_VARIANTS])


def compiled_files(kernel: HubKernel, fits: Callable[[str], bool | None]) -> list[str]:
    """The shared objects under each cached build of `kernel` that `fits` (the variants `kernels`
    would load here): at most MAX_COMPILED_FILES, looking at MAX_WALKED entries at most, without
    following links to folders."""
    found: list[str] = []
    walked = 0
    try:
        revisions = sorted(e.path for e in os.scandir(kernel.cache) if e.is_dir())
    except OSError:
        return []
    for revision in revisions:
        for variant in (v for v in kernel.variants if fits(v)):
            for folder, folders, files in os.walk(Path(revision) / "build" / variant):
                folders.sort()  # walked in name order, whatever the file system lists first
                walked += len(folders) + len(files)
                found += [os.path.join(folder, f) for f in sorted(files) if f.endswith(".so")]
                if len(found) >= MAX_COMPILED_FILES or walked > MAX_WALKED:
                    return found[:MAX_COMPILED_FILES]
    return found
