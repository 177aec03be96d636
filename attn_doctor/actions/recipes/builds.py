"""What the compiled recipes share: sources checked before a build, the build sized for this machine."""

from __future__ import annotations

import os
from pathlib import Path

from attn_doctor.actions.plan import Command, MoveAside, Refusal, Step
from attn_doctor.actions.recipes.context import RecipeContext, compile_step, pip_step
from attn_doctor.actions.source import Source, SourceError, declared_version, git_head, read_source, unpack_argv
from attn_doctor.registry import recipes
from attn_doctor.registry.backends import by_name
from attn_doctor.registry.versions import release
from attn_doctor.rules.checks.toolchain import nvcc_unusable


def build_setup(context: RecipeContext, min_nvcc: str) -> tuple[list[Step], list[str], dict[str, str]]:
    """What every CUDA compile needs: a matching nvcc, ninja and the build requirements first,
    MAX_JOBS from cores and memory. Returns the steps so far, notes and the build's environment."""
    tools, torch = context.facts.toolchain, context.torch
    problems = []
    unusable = nvcc_unusable(tools)
    if unusable is not None or tools.nvcc is None:
        problems.append(unusable or "no nvcc")
    elif release(tools.nvcc) < release(min_nvcc):
        problems.append(f"nvcc {tools.nvcc} is older than {min_nvcc}")
    elif release(tools.nvcc)[:1] != release(torch.cuda)[:1]:
        problems.append(f"nvcc {tools.nvcc} and torch's CUDA {torch.cuda} differ in major version")
    if tools.cxx is None:
        problems.append("no C++ compiler (g++)")
    if problems and not context.request.force:
        raise Refusal("cannot compile here: " + "; ".join(problems))
    archs = len({g.compute_capability or g.gfx_target for g in context.facts.gpus}) or 4  # builds are narrowed to them
    jobs = recipes.build_jobs(tools.cpus, tools.ram_gib, archs)
    env = {"MAX_JOBS": str(jobs), "NVCC_THREADS": str(recipes.NVCC_THREADS)}
    if tools.cuda_home:
        env["CUDA_HOME"] = tools.cuda_home
    peak = recipes.build_peak_gib(jobs, archs)
    notes = [
        f"MAX_JOBS={jobs}: {tools.cpus} cores, {tools.ram_gib:.0f} GiB RAM, {recipes.nvcc_threads(archs)} nvcc "
        f"thread(s) a job at ~{recipes.GIB_PER_NVCC_THREAD:.0f} GiB each: expect a peak near {peak:.0f} GiB "
        "(upstream's own default still runs machines out of memory)"
    ]
    steps: list[Step] = [
        pip_step(context, "build requirements first: without ninja the build is serial", *recipes.BUILD_REQUIREMENTS)
    ]
    return steps, notes, env


def source_folder(context: RecipeContext, tree: recipes.SourceTree) -> str:
    name = tree.url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    return str(Path(context.facts.python.prefix) / ".attn-doctor" / "src" / f"{name}-{tree.commit[:12]}")


def clone(context: RecipeContext, tree: recipes.SourceTree) -> list[Step]:
    if context.request.offline:
        raise Refusal(f"--offline: this backend is built from {tree.url} at {tree.tag}, which needs the network")
    git = context.facts.toolchain.git
    if git is None:
        raise Refusal(f"git is not installed: it is needed to fetch {tree.url} at {tree.tag}")
    folder = source_folder(context, tree)
    steps: list[Step] = []
    if os.path.lexists(folder):
        steps.append(MoveAside(folder, "an earlier checkout, kept with this install's backups"))
    steps.append(
        Command(
            (git, "clone", "--filter=blob:none", "--no-checkout", tree.url, folder),
            (folder,),
            f"fetch {tree.url.removesuffix('.git').rsplit('/', 2)[-2]}'s repository",
        )
    )
    steps.append(
        Command(
            (git, "-C", folder, "checkout", "--detach", tree.commit),
            (folder,),
            f"the pinned commit {tree.commit[:12]} ({tree.tag}), never a branch",
        )
    )
    return steps


def tree_steps(context: RecipeContext, tree: recipes.SourceTree) -> list[Step]:
    """The tree at its pinned commit in the build folder: cloned, or from the --source given."""
    return from_sources(context, tree) if context.request.sources else clone(context, tree)


def read_tree_file(path: str) -> Source:
    try:
        return read_source(path)
    except SourceError as error:
        raise Refusal(str(error)) from error


def from_sources(context: RecipeContext, tree: recipes.SourceTree) -> list[Step]:
    """Each --source identified by the commit it records (the tree's, or one of its submodules'
    recorded at the tree's commit), its version checked; refused when any is not what the
    recipe pins. Then copied or unpacked into the build folder, only the parts the build reads."""
    name = tree.url.removesuffix(".git").rsplit("/", 2)
    label = f"{name[-2]}/{name[-1]}"
    submodules = {s.commit: s for s in tree.submodules}
    main: Source | None = None
    given: dict[str, Source] = {}
    for path in context.request.sources:
        source = read_tree_file(path)
        if source.commit is None:
            raise Refusal(
                f"--source {path} records no commit (not a git checkout, not a `git archive`): {label} is pinned "
                f"to {tree.commit[:12]} ({tree.tag}); pass a checkout of it or `git archive {tree.commit[:12]}`"
            )
        if source.commit == tree.commit:
            main = source
        elif source.commit in submodules:
            given[submodules[source.commit].path] = source
        else:
            wanted = ", ".join(
                [f"{label} {tree.commit[:12]} ({tree.tag})"] + [f"{s.path} {s.commit[:12]}" for s in tree.submodules]
            )
            raise Refusal(f"--source {path} is commit {source.commit[:12]}, not a pinned one: {wanted}")
    if main is None:
        raise Refusal(f"no --source is {label} at the pinned {tree.commit[:12]} ({tree.tag})")
    rooted = main.rooted(tree.version_file)
    version = declared_version(rooted, tree.version_file) if rooted else None
    if rooted is None or version != tree.version:
        raise Refusal(f"--source {main.path} declares version {version} in {tree.version_file}, not {tree.version}")
    folder = source_folder(context, tree)
    paths = list(tree.paths)
    extra: list[Step] = []
    for sub in tree.submodules:
        inside = f"{sub.path}/{sub.needs}"
        if sub.path in given:
            placed = given[sub.path].rooted(sub.needs)
            if placed is None:
                raise Refusal(f"--source {given[sub.path].path} has no {sub.needs}: not {sub.url} at {sub.commit[:12]}")
            extra.append(
                Command(
                    unpack_argv(placed, str(Path(folder, sub.path)), sub.paths),
                    (folder,),
                    f"{sub.path} from {placed.kind} {Path(placed.path).name} (commit {sub.commit[:12]})",
                )
            )
        elif rooted.kind == "checkout" and rooted.has(inside):
            commit = git_head(Path(rooted.path, sub.path))
            if commit != sub.commit:
                raise Refusal(
                    f"{sub.path} in {rooted.path} is at {commit[:12] if commit else 'no known commit'}, not "
                    f"{sub.commit[:12]} (recorded at {tree.commit[:12]}): git submodule update --init {sub.path}"
                )
            paths += [f"{sub.path}/{p}" for p in sub.paths] if tree.paths else []
        else:
            raise Refusal(
                f"{label} needs {sub.path} ({sub.url.removesuffix('.git')} at {sub.commit[:12]}), which "
                f"{rooted.path} lacks (`git archive` leaves submodules out): pass it as another --source, a checkout "
                f"or `git archive {sub.commit[:12]} {' '.join(sub.paths)}` of it"
            )
    steps: list[Step] = []
    if os.path.lexists(folder):
        steps.append(MoveAside(folder, "an earlier source tree, kept with this install's backups"))
    what = ", ".join(paths) if paths else "all of it"
    steps.append(
        Command(
            unpack_argv(rooted, folder, tuple(paths)),
            (folder,),
            f"{label} from {rooted.kind} {Path(rooted.path).name}: commit {tree.commit[:12]} ({tree.tag}) and "
            f"version {version} checked; {what}",
        )
    )
    return steps + extra


def build_tree(context: RecipeContext, tree: recipes.SourceTree, why: str, env: dict[str, str]) -> Command:
    path = str(Path(source_folder(context, tree), tree.subdirectory))  # "" adds nothing
    return compile_step(context, why, path, env)


def no_compile_at_all(context: RecipeContext, backend: str) -> list[str]:
    """The route around a compile, where the backend's record names one (`hub_route`): its kernels
    prebuilt on the Hugging Face Hub, loaded by `kernels` for this torch and CUDA. Nothing where a
    wheelhouse build is what was asked for."""
    route = by_name()[backend].hub_route
    if not route or context.request.wheelhouse is not None:
        return []
    hub = by_name()[route]
    if hub.needs_newer_torch(context.torch.version) or not all(hub.runs_on(g) for g in context.facts.gpus):
        return []  # not a route here either
    return [
        f"or no compile at all, {hub.label}: {hub.why}. Its install and config lines: `attn-doctor explain {hub.name}`"
    ]
