"""FlashAttention 4: the newest pre-release the index offers that is not known bad here, with the CUDA extra
of torch's build."""

from __future__ import annotations

from attn_doctor.actions.recipes.context import Recipe, RecipeContext, files_again, newest_fitting, pip_step
from attn_doctor.registry import recipes
from attn_doctor.registry.backends import FA2_DISTRIBUTION, FA4_DISTRIBUTION
from attn_doctor.registry.versions import release


def fa4(context: RecipeContext) -> Recipe:
    extra = "[cu13]" if release(context.torch.cuda)[:1] >= (13,) else ""
    version, kept = newest_fitting(context, FA4_DISTRIBUTION, recipes.FA4_VERSION)
    requirement = f"flash-attn-4{extra}=={version}"
    notes = [
        f"flash-attn-4 {version} is a pre-release, pinned exactly (plain `pip install flash-attn-4` "
        "finds no release); the cu13 extra brings the CUDA 13 CuTe DSL libraries"
        if extra
        else f"flash-attn-4 {version} is a pre-release, pinned exactly",
        *kept,
        "the first call per shape JIT-compiles (~2 s); importing flash_attn.cute takes ~10 s (CuTe DSL)",
    ]
    if context.facts.package(FA2_DISTRIBUTION) is not None:
        notes.append(
            "FA2 is installed and shares flash_attn/cute/ with FA4: after the install the doctor repairs "
            "that collision with fix-shadow's plan, shown and undoable on its own"
        )
    why = "FA4 and its CuTe DSL dependencies" + (" for CUDA 13" if extra else "")
    steps = [pip_step(context, why, requirement), *files_again(context, FA4_DISTRIBUTION, version, requirement)]
    return steps, notes, FA4_DISTRIBUTION, version
