"""What every recipe is given (the facts, the installer, the request) and the pip step they all share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from attn_doctor.actions.installer import Installer
from attn_doctor.actions.plan import Command, Step
from attn_doctor.facts.index import index_versions
from attn_doctor.facts.model import Facts, Torch
from attn_doctor.registry.backends import backend_of_distribution


@dataclass(frozen=True)
class InstallRequest:
    backend: str  # one of INSTALLABLE
    installer: str | None = None  # "pip" | "uv"; None: as the environment suggests
    find_links: str | None = None  # a local wheelhouse
    offline: bool = False  # the index is not used at all
    force: bool = False  # plan even where the checks say it cannot run here
    allow_system: bool = False  # a PEP 668 system Python
    sources: tuple[str, ...] = ()  # local trees or archives to build from, instead of fetching (fa2, fa3, sage)
    head_dims: tuple[tuple[int, int], ...] = ()  # (q/k, v) each: FA3 builds only the kernels these need
    community: bool = False  # prebuilt wheels from community indexes too (registry/sources.py)
    mirrors: tuple[tuple[str, str], ...] = ()  # (source name, root URL): a mirror of that source
    wheelhouse: str | None = None  # `build`: compile into a wheel kept here, install nothing

    def root_of(self, source: str, root: str) -> str:
        """A wheel source's root URL, or the mirror of it that --mirror names."""
        return dict(self.mirrors).get(source, root).rstrip("/")


# What --source can build: the backends compiled from a source tree
FROM_SOURCE = ("fa2", "fa3", "sage")


@dataclass(frozen=True)
class RecipeContext:
    facts: Facts
    torch: Torch
    installer: Installer
    watch: tuple[str, ...]
    request: InstallRequest
    here: bool = True  # the facts are this machine's: its files (torch's libraries) can be read
    say: Callable[[str], None] = lambda line: None  # what planning tells as it goes (a wheel fetched to prove it)

    @property
    def compiles(self) -> bool:
        """It is built, not installed prebuilt: from the --source given, or by `build`."""
        return bool(self.request.sources or self.request.wheelhouse)

    @property
    def torch_pin(self) -> str:
        """The installed torch by its distribution's version: torch's version.py may say
        2.11.0+cu130 where the dist-info says 2.11.0, and only the latter is what pip matches
        against the installed torch (seen on the H100: `torch==2.11.0+cu130` found nothing)."""
        package = self.facts.package("torch")
        return f"torch=={package.version if package and package.version else self.torch.version}"


Recipe = tuple[list[Step], list[str], str, str | None]


def pip_step(context: RecipeContext, why: str, *requirements: str, flags: tuple[str, ...] = (), **env: str) -> Command:
    argv = context.installer.install(*requirements, context.torch_pin, flags=flags)
    return Command(argv, context.watch, why, tuple(sorted(env.items())))


def wheel_step(
    context: RecipeContext, why: str, wheel: Path, distribution: str, version: str, *requirements: str
) -> Command:
    """This very wheel file installed by its path, beside `requirements`; over the same release
    installed, its files go in again (`over_installed`)."""
    installed = over_installed(context, distribution, version)
    if installed:
        argv = context.installer.reinstall(str(wheel))
        return Command(argv, context.watch, f"{why}, over the installed {distribution} {installed}")
    return pip_step(context, why, str(wheel), *requirements)


def over_installed(context: RecipeContext, distribution: str, version: str | None) -> str | None:
    """The installed release of `distribution` where it is `version` (the same public version), else
    None. pip takes that release as installed and changes nothing ("Requirement already
    satisfied"; for a wheel file, "already installed with the same version as the provided wheel"),
    while replacing a broken build of it is what was asked (an undefined symbol after a torch
    upgrade, a build for another CUDA): the step then puts its files in again with
    `--force-reinstall --no-deps` and no torch pin, so that torch and the release's dependencies,
    there already, are left alone. A local source folder pip always installs again."""
    package = context.facts.package(distribution)
    if package is None or package.version is None or version is None:
        return None
    try:
        same = Version(package.version).public == Version(version).public
    except InvalidVersion:
        return None
    return package.version if same else None


def files_again(
    context: RecipeContext, distribution: str, version: str, requirement: str, flags: tuple[str, ...] = ()
) -> list[Step]:
    """After a step that installs `requirement` (which resolves what is missing), the release's own
    files put in again where that very release is installed (`over_installed`): none otherwise."""
    installed = over_installed(context, distribution, version)
    if not installed:
        return []
    why = f"{distribution} {installed}'s own files again: pip takes the installed release as installed"
    return [Command(context.installer.reinstall(requirement, flags), context.watch, why)]


def compile_step(
    context: RecipeContext,
    why: str,
    requirement: str,
    env: dict[str, str],
    distribution: str | None = None,
    version: str | None = None,
) -> Command:
    """The step that compiles: into the environment (over the same release installed: built and put
    in again, `over_installed`), or (`build`) into a wheel in the wheelhouse."""
    flags = ("--no-build-isolation", "--no-cache-dir")  # the target's torch is what it builds against
    if context.request.wheelhouse is None:
        installed = over_installed(context, distribution, version) if distribution else None
        if installed:
            argv = context.installer.reinstall(requirement, flags)
            why = f"{why}, over the installed {distribution} {installed}"
            return Command(argv, context.watch, why, tuple(sorted(env.items())))
        return pip_step(context, why, requirement, flags=flags, **env)
    argv = context.installer.wheel(requirement, context.request.wheelhouse, flags)
    why = f"{why}, into a wheel in {context.request.wheelhouse}"
    return Command(argv, context.watch, why, tuple(sorted(env.items())))


def kept_or_pinned(context: RecipeContext, distribution: str, pinned: str) -> tuple[str, list[str]]:
    """The release to plan: the pinned one, or the installed one where it is newer and not known bad
    here. A plan never downgrades a newer release that works to the one these rules were checked
    against; the note says so, and how to prove it."""
    package = context.facts.package(distribution)
    backend = backend_of_distribution(distribution)
    installed = package.version if package is not None else None
    try:
        newer = installed is not None and Version(installed) > Version(pinned)
    except InvalidVersion:
        newer = False
    if not newer or installed is None or backend is None:
        return pinned, []
    if backend.bad_releases_found(installed, context.facts):
        return pinned, [f"{distribution} {installed} is installed but known bad here: {pinned} replaces it"]
    return installed, [
        f"{distribution} {installed} is installed, newer than {pinned} (the newest these rules pin) and not known "
        f"bad here: kept, not downgraded; `attn-doctor verify {backend.name}` proves it on this GPU"
    ]


def newest_fitting(context: RecipeContext, distribution: str, pinned: str) -> tuple[str, list[str]]:
    """The release to plan, asked of the installer's index (or the wheelhouse, offline): the newest
    one not known bad here, never lower than a newer installed one that is not known bad. Where the
    index cannot be asked (planning for another machine, no network), the newest these rules know."""
    backend = backend_of_distribution(distribution)
    offered = (
        index_versions(
            context.facts.python.executable, distribution, context.request.find_links, context.request.offline
        )
        if context.here
        else None
    )
    if offered is None or backend is None:
        version, kept = kept_or_pinned(context, distribution, pinned)
        said = (
            [f"the index could not be asked: the newest release these rules know is {pinned}"] if context.here else []
        )
        return version, [*said, *kept]
    fitting = backend.releases_to_plan(offered, context.facts)
    if not fitting:
        return pinned, [f"the index offers no {distribution} release that is not known bad here: {pinned} planned"]
    version, kept = kept_or_pinned(context, distribution, fitting[0])
    where = "the wheelhouse" if context.request.offline else "the index"
    notes = [f"{distribution} {version}: the newest release {where} offers that is not known bad here", *kept]
    if backend.checked_up_to and Version(version) > Version(backend.checked_up_to):
        notes.append(
            f"{version} is newer than these rules know ({backend.checked_up_to}): `attn-doctor verify "
            f"{backend.name}` proves it on this GPU"
        )
    return version, notes
