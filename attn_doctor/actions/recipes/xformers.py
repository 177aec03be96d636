"""xFormers: a wheel proven to fit before it is installed (the wheelhouse's, else one fetched from
PyTorch's index for this torch's CUDA build or PyPI), the newest release first. Where no source can
be asked, the newest release that installs beside the installed torch as the installer's index
resolves it (each release up to 0.0.34 requires one exact torch), else the release these rules know
for this torch; from PyTorch's index for a CUDA 13 torch."""

from __future__ import annotations

from packaging.version import Version

from attn_doctor.actions.plan import Refusal
from attn_doctor.actions.recipes.context import Recipe, RecipeContext, files_again, pip_step
from attn_doctor.actions.recipes.prebuilt import PASSED_OVER, prebuilt_recipe
from attn_doctor.facts.index import resolved_version
from attn_doctor.registry import recipes
from attn_doctor.registry.backends import XFORMERS_DISTRIBUTION, by_name
from attn_doctor.registry.versions import release
from attn_doctor.registry.wheels import PYTORCH_INDEX


def xformers(context: RecipeContext) -> Recipe:
    planned, tried = prebuilt_recipe(context, XFORMERS_DISTRIBUTION, "xFormers")
    if planned is not None:
        return planned
    judged = [n for n in tried if PASSED_OVER in n]
    if judged and not context.request.force:
        # pip would install one of the wheels just read and passed over: the doctor installs none
        raise Refusal(
            "no xFormers wheel fits here: " + "; ".join(judged) + ". Use SDPA, or give a wheel that fits "
            "with --find-links DIR (--force installs what the index resolves all the same)"
        )
    steps, notes, distribution, version = _resolved(context)
    return steps, [*notes, *tried], distribution, version


def _resolved(context: RecipeContext) -> Recipe:
    """Where no wheel could be fetched and read (offline, no source reached, another machine's
    plan): the release the installer's index resolves beside torch, else the rules' table."""
    flags: tuple[str, ...] = ()
    notes: list[str] = []
    if release(context.torch.cuda)[:1] >= (13,) and not (context.request.offline or context.request.find_links):
        # PyPI's xformers wheels since 0.0.33.post1 are CUDA 12.8 builds; for a CUDA 13 torch, PyTorch's
        # own index (or its mirror) has the cu130 build (xformers README @v0.0.35)
        index = context.request.root_of("pytorch", PYTORCH_INDEX) + "/cu130"
        flags = ("--index-url", index)
        notes.append("PyPI's xformers wheels are CUDA 12.8 builds: the CUDA 13 build comes from PyTorch's index")
    known = recipes.xformers_for(context.torch.version)
    asked = (
        resolved_version(
            context.facts.python.executable,
            XFORMERS_DISTRIBUTION,
            [context.torch_pin],
            context.request.find_links,
            context.request.offline,
            flags,
        )
        if context.here
        else None
    )
    if asked is not None:
        version = asked
        where = "the wheelhouse" if context.request.offline else "the index"
        notes.insert(0, f"xformers {asked}: the newest release {where} offers that installs beside {context.torch_pin}")
        checked = by_name()["xformers"].checked_up_to
        if checked and Version(asked) > Version(checked):
            notes.append(f"{asked} is newer than these rules know ({checked}): `attn-doctor verify xformers` proves it")
    elif known is not None:
        version = known.version
        notes.insert(0, f"xformers {known.version} requires torch{known.torch} ({known.source})")
        if context.here:
            notes.append(f"the index could not be asked: {known.version} is what these rules know for this torch")
    else:
        listed = ", ".join(f"{x.version} (torch{x.torch})" for x in recipes.XFORMERS[:4])
        raise Refusal(
            f"no xFormers release is built for torch {context.torch.version}: each wheel requires its own torch "
            f"({listed}); installing one would replace torch. Use SDPA, or move torch to a supported release"
        )
    requirement = f"xformers=={version}"
    step = pip_step(context, f"the xFormers release built for torch {context.torch.version}", requirement, flags=flags)
    again = files_again(context, XFORMERS_DISTRIBUTION, version, requirement, flags)
    return [step, *again], notes, XFORMERS_DISTRIBUTION, version
