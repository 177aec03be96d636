"""A prebuilt wheel instead of a compile, proven before it is chosen: from the --find-links
wheelhouse (one built once on this cluster and kept), else fetched from the sources that publish it
(registry/sources.py), most trusted first. Each candidate is read as `check` reads installed files:
its shared objects against this torch (the symbols they import) and these GPUs (the code in their
fatbins), and its own files against the builds known bad. A wheel's name cannot say which torch it
was built against; its symbols can. What is passed over is said, with why.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from attn_doctor.actions.recipes.context import Recipe, RecipeContext, wheel_step
from attn_doctor.facts.model import Facts
from attn_doctor.facts.published import Listed, NotFetched, fetch, listed, metadata
from attn_doctor.facts.wheels import WheelError, read_wheel, requires_dist, wheel_marks, wheel_requires
from attn_doctor.registry.backends import backend_of_distribution
from attn_doctor.registry.sources import Layout, WheelSource, sources_for
from attn_doctor.registry.versions import release
from attn_doctor.registry.wheels import cpython_tag, machine_of
from attn_doctor.rules.wheel_fit import broken_builds, misfits, torch_unmet

T = TypeVar("T")

PROVEN = "its shared objects load next to this torch and carry code for every GPU here"
# each candidate is a download (FA2's are ~250 MB): a source's older releases are not all fetched
# when its newest do not fit (they were built alike, as a rule)
MAX_FETCHED_PER_SOURCE = 3
PASSED_OVER = " passed over: "  # how a note names a candidate read and found not to fit


@dataclass(frozen=True)
class Fetched:
    wheel: Path  # in a temporary folder removed when the doctor exits
    origin: str  # the source and the wheel's URL, for the plan and the journal
    version: str


@dataclass(frozen=True)
class Kept:
    wheel: Path  # in the --find-links wheelhouse: installed by its path, the very file proven
    version: str


def prebuilt_recipe(context: RecipeContext, distribution: str, label: str) -> tuple[Recipe | None, list[str]]:
    """The plan that installs a prebuilt wheel of `distribution` proven to fit here, by its path:
    the wheelhouse's (`built_here`), else one a source publishes (`fetched`). None where none fits,
    with what was tried and passed over, each with why."""
    kept, proof = built_here(context, distribution)
    if kept is not None:
        note = f"{kept.wheel.name} in --find-links: {label} {kept.version} prebuilt, installed without compiling"
        step = wheel_step(context, f"{label} prebuilt, from the wheelhouse", kept.wheel, distribution, kept.version)
        return ([step], [note, *proof], distribution, kept.version), []
    found, tried = fetched(context, distribution, None)
    if found is not None:
        note = f"{label} {found.version} prebuilt, installed without compiling"
        why = f"{label} prebuilt, fetched from {found.origin}"
        step = wheel_step(context, why, found.wheel, distribution, found.version)
        return ([step], [note, *proof, *tried], distribution, found.version), []
    return None, [*proof, *tried]


def built_here(context: RecipeContext, distribution: str) -> tuple[Kept | None, list[str]]:
    """A wheel in --find-links for the target's Python and machine, of a release worth planning
    here (the newest first), proven to fit: it, and why each other candidate was passed over.
    pip, given the name, could take another file of the same release (a closer tag); the plan
    installs this one by its path. None where the backend is compiled (--source, `build`)."""
    if not context.request.find_links or context.compiles:
        return None, []
    files = [
        w for w in Path(context.request.find_links).glob("*.whl") if installs_here(w.name, distribution, None, context)
    ]
    ordered = _newest_first(context, sorted(files, reverse=True), lambda w: w.name, distribution)
    passed_over = [
        f"{w.name}{PASSED_OVER}not a release to plan here (known bad, another backend's, or a pre-release "
        "beside final releases)"
        for w in files
        if w not in {wheel for wheel, _ in ordered}
    ]
    for wheel, found in ordered:
        if not context.here:  # another machine's report: its torch's files are not here to read
            return Kept(wheel, found), []
        reasons = misfit_reasons(context.facts, wheel, distribution, found)
        if not reasons:
            return Kept(wheel, found), [*passed_over, f"{wheel.name} proven before installing: {PROVEN}"]
        passed_over.append(f"{wheel.name}{PASSED_OVER}{'; '.join(reasons)}")
    return None, passed_over


def fetched(context: RecipeContext, distribution: str, version: str | None) -> tuple[Fetched | None, list[str]]:
    """The first wheel of this release (None: of any release not known bad here, the newest first,
    pre-releases only where a source has nothing else), from the sources that publish it for this
    torch, that is proven to fit here; and what was tried. Nothing is fetched offline or for
    another machine, nor where the backend is compiled (--source, `build`)."""
    if context.request.offline or not context.here or context.compiles:
        return None, []
    tried: list[str] = []
    for source in sources_for(distribution, context.request.community):
        named = f"{source.publisher} ({source.name})"
        root = context.request.root_of(source.name, source.root)
        where = source.locate(root, distribution, context.torch, context.facts.python)
        if where is None:
            tried.append(f"{named} publishes no {distribution} for torch {context.torch.version}")
            continue
        try:
            files = _offered(source, where, distribution)
        except NotFetched as error:
            tried.append(
                f"{named} not reached: {error}; a wheel fetched from it otherwise is proven alike with --find-links DIR"
            )
            continue
        offered = [f for f in files if installs_here(f.filename, distribution, version, context)]
        candidates = _newest_first(context, offered, lambda f: f.filename, distribution)
        if not candidates:
            release = f"{distribution} {version}" if version else f"{distribution} release not known bad here"
            tried.append(f"{named} lists no {release} wheel for this Python and machine")
        fetches = 0
        for file, found_version in candidates:
            unmet = _requirements_unmet(context, file)
            if unmet:  # told by the metadata the index serves beside the wheel: nothing downloaded
                tried.append(f"{file.filename} from {named}{PASSED_OVER}{'; '.join(unmet)}")
                continue
            if fetches == MAX_FETCHED_PER_SOURCE:
                tried.append(f"{named}: older candidates not fetched ({MAX_FETCHED_PER_SOURCE} were, none fits)")
                break
            fetches += 1
            found, reason = _proven(context, file, distribution, found_version)
            if found is not None:
                origin = f"{named}: {file.url}"
                proof = f"{file.filename} from {origin}: proven before installing, {PROVEN}"
                return Fetched(found, origin, found_version), [*tried, proof]
            tried.append(f"{file.filename} from {named}{PASSED_OVER}{reason}")
    return None, tried


def _requirements_unmet(context: RecipeContext, file: Listed) -> list[str]:
    """Why the wheel's own requirements rule it out here, where the index serves its metadata."""
    if not file.metadata:
        return []
    try:
        return torch_unmet(requires_dist(metadata(file)), context.facts)
    except NotFetched:
        return []  # the wheel itself is read then


def _newest_first(
    context: RecipeContext, files: list[T], filename: Callable[[T], str], distribution: str
) -> list[tuple[T, str]]:
    """The candidates of the releases worth planning here (Backend.releases_to_plan), with their
    release, newest first; the files of one release in the order given."""
    releases = {f: str(parse_wheel_filename(filename(f))[1].public) for f in files}
    backend = backend_of_distribution(distribution)
    order = (
        backend.releases_to_plan(releases.values(), context.facts)
        if backend is not None
        else sorted(set(releases.values()), key=Version, reverse=True)
    )
    return [(f, release) for release in order for f in files if releases[f] == release]


def _offered(source: WheelSource, where: str, distribution: str) -> list[Listed]:
    match source.layout:
        case Layout.FILE:
            return [Listed(urllib.parse.unquote(where.rsplit("/", 1)[-1]), where, None)]
        case Layout.INDEX:
            return listed(f"{where.rstrip('/')}/{canonicalize_name(distribution)}/")
        case Layout.LINKS:
            return listed(where)


def _proven(context: RecipeContext, file: Listed, distribution: str, version: str) -> tuple[Path | None, str]:
    """The candidate fetched and read: its path where it fits, else why not (it is then removed)."""
    context.say(f"fetching {file.url} to prove it fits here")
    try:
        wheel = fetch(file, _download_folder())
    except NotFetched as error:
        return None, f"not fetched: {error}"
    reasons = misfit_reasons(context.facts, wheel, distribution, version)
    if not reasons:
        return wheel, ""
    wheel.unlink()
    return None, "; ".join(reasons)


def installs_here(filename: str, distribution: str, version: str | None, context: RecipeContext) -> bool:
    """A wheel of `distribution` at `version` (None: any; its local part aside: FA2's release wheels
    say their torch there) that installs on the target's CPython, machine and glibc."""
    try:
        name, found, _, tags = parse_wheel_filename(filename)
        wanted = Version(version) if version is not None else None
    except (InvalidWheelFilename, InvalidVersion):
        return False
    if name != canonicalize_name(distribution):
        return False
    if wanted is not None and (found.public != wanted.public or wanted.local not in (None, found.local)):
        return False
    python = context.facts.python
    return not tags.isdisjoint(_supported_tags(python.version, machine_of(python), python.glibc))


@functools.cache
def _supported_tags(python_version: str, machine: str, glibc: str | None) -> frozenset[Tag]:
    """The tags pip installs on that CPython, machine and glibc, by packaging's own generators
    (cp312-cp312, cp312-abi3 down to cp32-abi3, py312-none down to py30-none, ...), given the
    target's platforms: manylinux_2_N for every N up to its glibc (PEP 600) and the legacy names of
    those (manylinux2014 is 2.17, manylinux2010 2.12, manylinux1 2.5)."""
    major_minor = release(python_version)[:2]
    try:
        newest = int(glibc.split(".")[1]) if glibc else _GLIBC_UNKNOWN
    except (IndexError, ValueError):
        newest = _GLIBC_UNKNOWN
    platforms = []
    for minor in range(newest, 4, -1):
        platforms.append(f"manylinux_2_{minor}_{machine}")
        if minor in _LEGACY_MANYLINUX:
            platforms.append(f"{_LEGACY_MANYLINUX[minor]}_{machine}")
    platforms.append(f"linux_{machine}")
    interpreter = cpython_tag(python_version)
    return frozenset(cpython_tags(major_minor, platforms=platforms)) | frozenset(
        compatible_tags(major_minor, interpreter, platforms)
    )


_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
# a target whose glibc the probe could not read: any manylinux wheel is let through to the proof
# (and to pip), as before the glibc was read
_GLIBC_UNKNOWN = 99


def misfit_reasons(facts: Facts, wheel: Path, distribution: str, version: str) -> list[str]:
    """Why this wheel of a compiled backend does not fit here: none when it does."""
    torch = facts.torch.location if facts.torch else None
    try:
        binaries = read_wheel(str(wheel), distribution, torch)
        # a build with the compile skipped (FLASH_ATTENTION_SKIP_CUDA_BUILD) installs and imports, and fails
        # at its first call
        reasons = misfits(binaries, facts) if binaries else ["it carries no compiled extension"]
    except WheelError as error:
        reasons = [str(error)]
    reasons += torch_unmet(wheel_requires(str(wheel)), facts)
    backend = backend_of_distribution(distribution)
    if backend is not None:
        marks = [b.mark for b in backend.bad_releases if b.mark is not None]
        reasons += broken_builds(backend, version, wheel_marks(str(wheel), distribution, marks), facts)
    return reasons


_folder: Path | None = None


def _download_folder() -> Path:
    """One temporary folder for what this run fetches, removed when the doctor exits: the plan
    installs the chosen wheel from there."""
    global _folder
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="attn-doctor-wheels-"))
        atexit.register(shutil.rmtree, _folder, True)
    return _folder
