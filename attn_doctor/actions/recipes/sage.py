"""SageAttention 2: compiled from its pinned commit (the v2.2.0 tag is broken on Hopper)."""

from __future__ import annotations

from attn_doctor.actions.plan import Refusal
from attn_doctor.actions.recipes.builds import build_setup, build_tree, tree_steps
from attn_doctor.actions.recipes.context import Recipe, RecipeContext
from attn_doctor.actions.recipes.prebuilt import prebuilt_recipe
from attn_doctor.registry import recipes
from attn_doctor.registry.versions import release


def sage(context: RecipeContext) -> Recipe:
    # of any release not known bad here (the v2.2.0 tag's build is told by its files; 1.x has no extension)
    planned, proof = prebuilt_recipe(context, "sageattention", "SageAttention")
    if planned is not None:
        return planned
    steps, notes, env = build_setup(context, "12.0")
    nvcc = release(context.facts.toolchain.nvcc)
    for gpu in context.facts.gpus:
        needed = recipes.SAGE_MIN_NVCC.get(gpu.compute_capability or "")
        if needed and nvcc < release(needed) and not context.request.force:
            raise Refusal(f"SageAttention 2.2.0 for {gpu.name} ({gpu.target}) needs nvcc >= {needed}, this is {nvcc}")
    archs = sorted({g.compute_capability for g in context.facts.gpus if g.compute_capability in recipes.SAGE_MIN_NVCC})
    if archs:
        env["TORCH_CUDA_ARCH_LIST"] = ";".join(archs)  # else setup.py builds for every GPU it sees
    extensions, per_extension = recipes.sage_parallelism(int(env["MAX_JOBS"]), set(archs))
    env.update(EXT_PARALLEL=str(extensions), MAX_JOBS=str(per_extension))
    notes += [
        *proof,  # the kept wheels passed over, each with why
        "SageAttention 2 has no backward pass at all (custom ops without autograd; thu-ml #90): "
        "inference and frozen-attention use only; full fine-tuning was seen to drive the loss to 0 (thu-ml #198)",
        f"PyPI has only SageAttention 1.x: 2.2.0 is built from commit {recipes.SAGE_TREE.commit[:7]}, not its "
        "v2.2.0 tag, whose sageattn() on Hopper returns uninitialised memory without running the kernel "
        "(https://github.com/thu-ml/SageAttention/issues/288, fixed by PR #307)",
        f"{extensions} extensions built at once, {per_extension} jobs each "
        f"(about {recipes.SAGE_BUILD_MINUTES_SM90} min on a 16-core H100)",
    ]
    steps += tree_steps(context, recipes.SAGE_TREE)
    steps.append(build_tree(context, recipes.SAGE_TREE, "compile SageAttention 2.2.0", env))
    return steps, notes, "sageattention", "2.2.0"
