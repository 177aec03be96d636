"""xFormers: the release built for the installed torch, from PyTorch's index for its CUDA build."""

from __future__ import annotations

from attn_doctor.actions.plan import Refusal
from attn_doctor.actions.recipes.context import Recipe, RecipeContext, pip_step
from attn_doctor.registry import recipes
from attn_doctor.registry.versions import release


def xformers(context: RecipeContext) -> Recipe:
    chosen = recipes.xformers_for(context.torch.version)
    if chosen is None:
        known = ", ".join(f"{x.version} (torch{x.torch})" for x in recipes.XFORMERS[:4])
        raise Refusal(
            f"no xFormers release is built for torch {context.torch.version}: each wheel requires its own torch "
            f"({known}); installing one would replace torch. Use SDPA, or move torch to a supported release"
        )
    notes = [f"xformers {chosen.version} requires torch{chosen.torch} ({chosen.source})"]
    flags: tuple[str, ...] = ()
    if release(context.torch.cuda)[:1] >= (13,) and not (context.request.offline or context.request.find_links):
        flags = ("--index-url", recipes.XFORMERS_CU13_INDEX)
        notes.append("PyPI's xformers wheels are CUDA 12.8 builds: the CUDA 13 build comes from PyTorch's index")
    return (
        [
            pip_step(
                context,
                f"the xFormers release built for torch {context.torch.version}",
                f"xformers=={chosen.version}",
                flags=flags,
            )
        ],
        notes,
        "xformers",
        chosen.version,
    )
