"""FlashAttention 2: the release's own wheel where one fits, a wheel built here before, else a compile
sized for this machine; ROCm's own build."""

from __future__ import annotations

import os
from pathlib import Path

from attn_doctor.actions.plan import Command, MoveAside, Refusal, Step
from attn_doctor.actions.recipes.builds import build_setup, no_compile_at_all, read_tree_file
from attn_doctor.actions.recipes.context import (
    Recipe,
    RecipeContext,
    compile_step,
    newest_fitting,
    pip_step,
    wheel_step,
)
from attn_doctor.actions.recipes.prebuilt import built_here, fetched
from attn_doctor.actions.source import declared_version, unpack_argv
from attn_doctor.registry import recipes
from attn_doctor.registry.backends import FA2_DISTRIBUTION
from attn_doctor.registry.wheels import fa2_wheel_for, fa2_wheel_url


def fa2(context: RecipeContext) -> Recipe:
    facts, torch = context.facts, context.torch
    if torch.hip:
        return fa2_rocm(context)
    wheel = fa2_wheel_for(recipes.FA2_WHEEL_VERSION, torch, facts.python)
    tried: list[str] = []
    # the wheelhouse first: a build kept there (`attn-doctor build fa2`, of the release the index
    # offered then: any release worth planning here, the newest that fits) or the release's own wheel
    built, proof = built_here(context, FA2_DISTRIBUTION)
    if built is not None:
        notes = [f"{built.wheel.name} in --find-links: FA2 {built.version}, installed without compiling", *proof]
        step = wheel_step(
            context, "FA2 prebuilt, from the wheelhouse", built.wheel, FA2_DISTRIBUTION, built.version, "einops"
        )
        return [step], notes, FA2_DISTRIBUTION, built.version
    if wheel is not None and not context.compiles and not context.here:
        # another machine's plan names the release's wheel (by its URL, or in its wheelhouse by
        # version): only that machine can prove it
        url = fa2_wheel_url(recipes.FA2_WHEEL_VERSION, wheel)
        local = context.request.find_links or context.request.offline
        requirement = f"flash-attn=={recipes.FA2_WHEEL_VERSION}" if local else f"flash-attn @ {url}"
        notes = [f"a prebuilt FA2 wheel exists for this torch/CUDA/Python/ABI: {wheel} (no compiling)"]
        step = pip_step(context, "FA2's prebuilt wheel from its GitHub release", requirement, "einops")
        return [step], notes, FA2_DISTRIBUTION, recipes.FA2_WHEEL_VERSION
    if wheel is not None:  # fetched and proven before it is chosen
        found, tried = fetched(context, FA2_DISTRIBUTION, recipes.FA2_WHEEL_VERSION)
        if found is not None:
            notes = [f"FA2 {recipes.FA2_WHEEL_VERSION} prebuilt for this torch/CUDA/Python/ABI (no compiling)", *tried]
            step = wheel_step(
                context,
                f"FA2 prebuilt, fetched from {found.origin}",
                found.wheel,
                FA2_DISTRIBUTION,
                found.version,
                "einops",
            )
            return [step], notes, FA2_DISTRIBUTION, recipes.FA2_WHEEL_VERSION
    archs = recipes.fa2_cuda_archs(facts.gpus)
    steps, notes, env = build_setup(context, recipes.FA2_MIN_NVCC)
    jobs = int(env["MAX_JOBS"])
    minutes = recipes.fa2_build_minutes(jobs, len(archs))
    why = (
        "FA2's release wheel for this torch was not taken (below)"
        if tried
        else f"no prebuilt FA2 wheel for torch {torch.version} ({torch.build}), Python {facts.python.version}"
    )
    notes = [
        f"{why}: it compiles, roughly {minutes} min with {jobs} jobs for sm {';'.join(archs)} "
        "(scaled from 19 min measured for sm 90 with 16 jobs on an H100)",
        *tried,  # the release's wheel, where it was fetched and did not fit
        *proof,  # the kept wheels passed over, each with why
        *notes,
    ]
    notes += no_compile_at_all(context, "fa2")
    env.update(FLASH_ATTN_CUDA_ARCHS=";".join(archs), FLASH_ATTENTION_FORCE_BUILD="TRUE")
    if context.request.sources:
        version = recipes.FA2_VERSION
        placed, requirement, where = fa2_source(context)
        steps += placed
        notes.append(where)
    else:  # the sdist the index offers now, not the one these rules were written against
        version, asked = newest_fitting(context, FA2_DISTRIBUTION, recipes.FA2_VERSION)
        requirement = f"flash-attn=={version}"
        notes += asked
    what = f"compile FA2 {version} for sm {';'.join(archs)} only"
    steps.append(compile_step(context, what, requirement, env, FA2_DISTRIBUTION, version))
    return steps, notes, FA2_DISTRIBUTION, version


def fa2_rocm(context: RecipeContext) -> Recipe:
    gfx = sorted({g.gfx_target for g in context.facts.gpus if g.gfx_target in recipes.ROCM_GFX}) or list(
        recipes.ROCM_GFX
    )
    jobs = recipes.build_jobs(context.facts.toolchain.cpus, context.facts.toolchain.ram_gib, len(gfx))
    notes = [
        "no ROCm wheel exists: FA2's CK backend compiles for " + ",".join(gfx),
        "for the Triton backend instead, set FLASH_ATTENTION_TRITON_AMD_ENABLE=TRUE at build and at run time",
    ]
    steps: list[Step] = [pip_step(context, "FA2's build requirements", *recipes.BUILD_REQUIREMENTS)]
    steps.append(
        pip_step(
            context,
            f"compile FA2 {recipes.FA2_VERSION} (ROCm CK)",
            f"flash-attn=={recipes.FA2_VERSION}",
            flags=("--no-build-isolation", "--no-cache-dir"),
            GPU_ARCHS=";".join(gfx),
            MAX_JOBS=str(jobs),
        )
    )
    return steps, notes, FA2_DISTRIBUTION, recipes.FA2_VERSION


def fa2_source(context: RecipeContext) -> tuple[list[Step], str, str]:
    """FA2 from one --source: the PyPI sdist, or an unpacked sdist or checkout of it, checked by
    the version it declares (PyPI's release is what the recipe pins). Returns the steps that put
    it in place, what pip builds, and a note."""
    if len(context.request.sources) != 1:
        raise Refusal("FA2 builds from one --source: its sdist (flash_attn-2.8.3.post2.tar.gz) or a folder of it")
    path = context.request.sources[0]
    source = read_tree_file(path)
    rooted = source.rooted(recipes.FA2_VERSION_FILE) or source.rooted("PKG-INFO")
    version = declared_version(rooted, recipes.FA2_VERSION_FILE) if rooted else None
    if rooted is None or version != recipes.FA2_VERSION:
        raise Refusal(f"--source {path} is flash-attn {version}, not {recipes.FA2_VERSION}")
    note = f"FA2 from {source.path}: version {version} checked"
    if source.archive:
        return [], source.path, note  # pip builds an sdist file as it is
    folder = str(Path(context.facts.python.prefix) / ".attn-doctor" / "src" / f"flash-attn-{version}")
    steps: list[Step] = []
    if os.path.lexists(folder):
        steps.append(MoveAside(folder, "an earlier source tree, kept with this install's backups"))
    steps.append(Command(unpack_argv(rooted, folder, ()), (folder,), f"flash-attn {version} from {source.path}"))
    return steps, folder, note
