"""FlashAttention 3: a prebuilt wheel proven to fit (the wheelhouse's, else PyTorch's index's), else
compiled from the hopper/ tree at its pinned commit, narrowed to the head dims asked."""

from __future__ import annotations

from attn_doctor.actions.plan import Refusal
from attn_doctor.actions.recipes.builds import build_setup, build_tree, no_compile_at_all, tree_steps
from attn_doctor.actions.recipes.context import Recipe, RecipeContext
from attn_doctor.actions.recipes.prebuilt import prebuilt_recipe
from attn_doctor.registry import recipes
from attn_doctor.registry.backends import FA3_DISTRIBUTION
from attn_doctor.registry.versions import release
from attn_doctor.registry.wheels import fa3_pytorch_index


def fa3(context: RecipeContext) -> Recipe:
    # a prebuilt FA3 (a cluster's own build in the wheelhouse, else one PyTorch's index publishes),
    # proven to fit this torch and these GPUs, spares a compile of up to an hour
    # of any release worth planning here: a newer one than the tree these rules compile is welcome
    planned, tried = prebuilt_recipe(context, FA3_DISTRIBUTION, "FA3")
    if planned is not None:
        return planned
    steps, notes, env = build_setup(context, recipes.FA3_MIN_NVCC)
    notes += tried  # the wheels passed over and the sources tried, each with why
    index = fa3_pytorch_index(context.torch)
    if index is not None and not tried:  # not asked: offline, or another machine's plan
        notes.append(
            f"PyTorch's index publishes FA3 {recipes.FA3_VERSION} prebuilt for this torch's CUDA build: "
            f"`python -m pip download --no-deps --only-binary=:all: flash-attn-3=={recipes.FA3_VERSION} "
            f"--index-url {index} -d DIR`, then `attn-doctor install fa3 --find-links DIR` proves it fits "
            "here and installs it without compiling"
        )
    nvcc = context.facts.toolchain.nvcc
    if nvcc and (12, 3) <= release(nvcc) < (13,) and nvcc != recipes.FA3_NVCC_NO_DOWNLOAD:
        if context.request.offline:
            env["FLASH_ATTENTION_OFFLINE_BUILD"] = "TRUE"
        notes.append(
            f"nvcc {nvcc} is not {recipes.FA3_NVCC_NO_DOWNLOAD}: upstream's hopper/setup.py downloads nvcc 12.6 and "
            "ptxas 12.8 from NVIDIA unless FLASH_ATTENTION_OFFLINE_BUILD is set; CUDA 12.8 is recommended"
        )
    if release(context.facts.python.version) < (3, 10):
        raise Refusal(f"FA3 {recipes.FA3_VERSION} needs Python >= 3.10, this is {context.facts.python.version}")
    switches, narrowed = fa3_switches(context)
    env.update({f"FLASH_ATTENTION_DISABLE_{name}": "TRUE" for name in sorted(switches)})
    # hopper/setup.py's bdist_wheel first tries to download a prebuilt FA3 wheel (none is
    # published) and only an HTTP error falls back to compiling: with no network the URLError
    # fails the install. FORCE_BUILD skips the download (CachedWheelsCommand.run, @0251105a).
    env["FLASH_ATTENTION_FORCE_BUILD"] = "TRUE"
    sm90, sm80 = recipes.fa3_kernel_files(frozenset(switches))
    full90, full80 = recipes.fa3_kernel_files(frozenset())
    jobs = int(env["MAX_JOBS"])
    minutes = recipes.fa3_build_minutes(sm90 + sm80, jobs)
    notes += narrowed
    notes += no_compile_at_all(context, "fa3")
    notes.append(
        f"FA3 compiles {sm90 + sm80} kernel files ({sm90} sm90a, {sm80} sm80; everything is {full90 + full80}): "
        f"roughly {minutes} min with {jobs} jobs"
        + ("" if context.request.head_dims else "; --head-dim N (or --model) builds only that head dim's kernels")
    )
    steps += tree_steps(context, recipes.FA3_TREE)
    steps.append(build_tree(context, recipes.FA3_TREE, "compile FA3 from hopper/ (Hopper kernels)", env))
    notes.append("FA3 is not on PyPI: built from upstream's hopper/ at the pinned commit")
    return steps, notes, FA3_DISTRIBUTION, recipes.FA3_VERSION


def fa3_switches(context: RecipeContext) -> tuple[set[str], list[str]]:
    """The FLASH_ATTENTION_DISABLE_* switches of hopper/setup.py for this machine's GPUs and the
    workload's head dim (recipes.FA3_NARROW_OFF says why each), and what the plan says of them."""
    off: set[str] = set()
    notes = []
    if not any((g.compute_capability or "").startswith("8.") for g in context.facts.gpus):
        off.add("SM80")  # setup.py also builds Ampere kernels unless told not to
        notes.append("FA3 for sm90a only (FLASH_ATTENTION_DISABLE_SM80: no Ampere GPU here)")
    if not context.request.head_dims:
        return off, notes
    kept: set[int] = set()
    diffs: set[str] = set()
    for q, v in context.request.head_dims:
        if max(q, v) > recipes.FA3_MAX_HEAD_DIM:
            raise Refusal(f"FA3 runs head dims up to {recipes.FA3_MAX_HEAD_DIM}; this one is {q},{v}")
        kept |= {recipes.fa3_head_dim_bucket(q), recipes.fa3_head_dim_bucket(max(q, v))}
        diff = recipes.FA3_HDIMDIFF.get((recipes.fa3_head_dim_bucket(q), v)) if q != v else None
        diffs |= {diff} if diff else set()
    off |= {f"HDIM{d}" for d in recipes.FA3_HEAD_DIMS if d not in kept}
    off |= set(recipes.FA3_HDIMDIFF.values()) - diffs
    off |= set(recipes.FA3_NARROW_OFF)
    split = sorted(f"{q},{v}" for q, v in context.request.head_dims if q != v)
    dims = "/".join(str(d) for d in sorted(kept)) + (f" (q,v {' '.join(split)})" if diffs else "")
    notes.append(
        f"narrow FA3 build for head dim {dims}: bf16 and fp16, forward and backward, causal, varlen and GQA; "
        "left out: other head dims, fp8, sliding-window (local) attention, softcap, and decoding's split/paged/"
        "appended KV and pack-GQA (a model needing them gets FA3's error, not a wrong result; install without "
        "--head-dim for everything)"
    )
    return off, notes
