"""Which attention backend to use here, and why: the ranking (rules/ranking.py) walked with each
backend's assessment (rules/assess.py). Pure: facts, workload and assessments in; a
Recommendation and the config's findings out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from attn_doctor.facts.measured import Measured
from attn_doctor.facts.model import Facts
from attn_doctor.registry.backends import (
    AXOLOTL,
    FA4_DISTRIBUTION,
    KERNELS_DISTRIBUTION,
    Backend,
    backend_of_implementation,
    by_name,
    fa4_accepts,
)
from attn_doctor.registry.findings import (
    CONFIG_BACKEND_UNAVAILABLE,
    CONFIG_FA4_HEAD_DIMS,
    CONFIG_FLEX_WITHOUT_COMPILE,
    CONFIG_HUB_KERNEL_NO_BUILD,
    CONFIG_HUB_KERNEL_NOT_CACHED,
    CONFIG_HUB_KERNEL_OFFLINE,
    CONFIG_LEGACY_ATTENTION_FLAG,
    CONFIG_MIXED_ATTENTION_KEYS,
    CONFIG_S2_ATTENTION,
    CONFIG_SAGE_FULL_FINETUNE,
    CONFIG_SEVERAL_ATTENTION_FLAGS,
    CONFIG_UNKNOWN_ATTENTION,
    Finding,
    Group,
    Kind,
    Subject,
    finding,
)
from attn_doctor.registry.hub import KERNELS_SOURCE, OFFLINE_VARIABLES, variant_fits
from attn_doctor.rules.assess import Assessment
from attn_doctor.rules.fixes import pip_install
from attn_doctor.rules.ranking import major, ranking, weakest
from attn_doctor.rules.wheel_fit import misfits
from attn_doctor.workload import CANONICAL, Workload


@dataclass(frozen=True)
class Recommendation:
    backend: str  # a name of registry/backends.py, usable now
    config: str  # the Axolotl config line
    reasons: tuple[str, ...]
    runner_up: str | None
    better: str | None = None  # a faster backend that is not usable yet
    better_how: str = ""  # what it takes to get it
    # False: no backend can run here as installed (torch without this GPU's code, say); `backend` is
    # then the first that will once the errors above are fixed, `better_how` what fixes it
    runs_now: bool = True


def recommend(
    facts: Facts, work: Workload, verdicts: Mapping[str, Assessment], measured: Measured | None = None
) -> Recommendation | None:
    """`verdicts`: every backend's assessment. `measured`: a bench run on this machine; where it
    timed the usable backends, its ranking replaces the expected one. None without torch: no
    backend runs until it is installed (the torch-missing finding says how)."""
    if facts.torch is None:
        return None
    sdpa = by_name()["sdpa"]
    gpu = weakest(facts.gpus)
    reasons: list[str] = []
    if gpu is None:
        reasons.append("no GPU: SDPA is what runs (its math and CPU kernels)")
    else:
        reasons.append(
            f"{gpu.architecture} {gpu.target}" + (" (the oldest of these GPUs)" if len(facts.gpus) > 1 else "")
        )
    fit: list[Backend] = []
    now: list[Backend] = []
    for backend in ranking(gpu, work):
        verdict = verdicts[backend.name]
        if verdict.unfit:
            reasons.append(verdict.unfit[0])
            continue
        fit.append(backend)
        if not verdict.problems:
            now.append(backend)
        elif len(fit) == 1:
            reasons.append(f"{backend.label} would be first: {verdict.problems[0]}")
    if measured is not None:
        now = _as_measured(now, facts, work, measured, reasons)
    chosen = now[0] if now else fit[0] if fit else sdpa
    if work.sample_packing and chosen.name == "sdpa" and gpu is not None and gpu.compute_capability != "9.0":
        reasons.append("Axolotl warns that sample packing with SDPA in bf16 off sm_90 may give a 0.0 loss")
    if chosen.name == "fa3" and any(b.name == "fa4" for b in now) and gpu is not None and major(gpu) in (9, 10, 11):
        reasons.append(
            "Axolotl: with flash-attn-4 importable, its FA4 patch replaces FA3 on sm90+ whatever "
            "attn_implementation says: FA3 trains there only without flash-attn-4 "
            f"({AXOLOTL}/src/axolotl/monkeypatch/attention/flash_attn_4.py)"
        )
    # a faster backend not usable yet: one ranked ahead of the choice that cannot run now (one
    # that can, and is behind it, is behind it by this machine's own measurement)
    ahead = fit[: fit.index(chosen)] if chosen in fit else fit
    better = next((b for b in ahead if b not in now), None)
    if better is not None and better.hub_route and better.compiles_here(facts) and facts.toolchain.nvcc is None:
        # no wheel of it for this torch and no compiler to build it: the same kernels, prebuilt
        hub = by_name()[better.hub_route]
        if hub in fit:
            reasons.append(
                f"{better.label} has no release wheel for torch {facts.torch.version} and there is no nvcc "
                f"to build it: {hub.label} brings its kernels prebuilt"
            )
            better = None if hub in now or hub is chosen else hub
    runner_up = next((b.name for b in now[1:]), None)
    reasons.insert(1, f"{chosen.label}: {chosen.why or chosen.source}")
    # a known fault of the choice, said beside it, with its remedy (shown without -v)
    caveats = [f for f in verdicts[chosen.name].findings if f.rule.is_in(Group.CAVEAT)]
    reasons[2:2] = [f"but: {f.title}; {f.fix[0]}" if f.fix else f"but: {f.title}" for f in caveats]
    return Recommendation(
        backend=chosen.name,
        config=chosen.axolotl,
        reasons=tuple(reasons),
        runner_up=runner_up,
        better=better.name if better else None,
        better_how=verdicts[better.name].fix if better else "" if now else verdicts[chosen.name].fix,
        runs_now=bool(now),
    )


def _as_measured(
    now: list[Backend], facts: Facts, work: Workload, measured: Measured, reasons: list[str]
) -> list[Backend]:
    """The usable backends in the order they ran in `measured` (those it did not time after): near
    the workload's sequence length, else over all its shapes. Each shape's fastest is said too:
    the choice for one length is not the choice for all."""
    names = {g.name for g in facts.gpus}
    if measured.gpu not in names:
        reasons.append(f"the bench file was measured on {measured.gpu}, not this machine's GPU: not used")
        return now
    speeds = dict(measured.fastest(seqlen=work.seq_len))
    timed = sorted((b for b in now if b.name in speeds), key=lambda b: -speeds[b.name])
    if not timed:
        return now
    where = f" near {work.seq_len} tokens" if work.seq_len else " over the standard shapes"
    figures = ", ".join(f"{b.name} {speeds[b.name]:.0f}" for b in timed)
    reasons.append(f"measured here{where} (bench, fwd+bwd TFLOP/s, bf16 causal): {figures}")
    per_shape = [
        f"{shape} {ranked[0][0]} {ranked[0][1]:.0f}"
        + (f" ({ranked[1][0]} {ranked[1][1]:.0f})" if len(ranked) > 1 else "")
        for shape, ranked in measured.winners({b.name for b in now})
    ]
    reasons.append("fastest per shape here (B×S×H×D, fwd+bwd TFLOP/s, next): " + "; ".join(per_shape))
    return timed + [b for b in now if b.name not in speeds]


# transformers loads an attn_implementation of the form org/name from the Hub; get_kernel raises
# ImportError without the `kernels` distribution, and repos outside kernels-community need
# allow_all_kernels (src/transformers/integrations/hub_kernels.py: is_kernel, get_kernel)
HUB_KERNELS_SOURCE = (
    "https://github.com/huggingface/transformers/blob/main/src/transformers/integrations/hub_kernels.py"
)


def config_findings(facts: Facts, work: Workload, verdicts: Mapping[str, Assessment]) -> list[Finding]:
    """What an Axolotl config will meet on this machine (`--config`)."""
    ax = work.axolotl
    if ax is None:
        return []
    found = []
    if ax.s2_attention:
        found.append(
            finding(
                CONFIG_S2_ATTENTION,
                "s2_attention is rejected by Axolotl >= 0.17 (no longer supported)",
                [f"use {by_name()['sdpa'].axolotl}, or flash_attention_2 where it runs"],
            )
        )
    if ax.attn_implementation and ax.legacy:
        found.append(
            finding(
                CONFIG_MIXED_ATTENTION_KEYS,
                f"attn_implementation and the legacy {', '.join(ax.legacy)} are both set: Axolotl stops",
                [f"keep only attn_implementation: {ax.attn_implementation}"],
            )
        )
    elif len(ax.legacy) == 1:
        found.append(
            finding(
                CONFIG_LEGACY_ATTENTION_FLAG,
                f"{ax.legacy[0]}: true is deprecated in Axolotl: attn_implementation names the backend now",
                [f"attn_implementation: {ax.effective}  # in place of {ax.legacy[0]}: true"],
                subject=Subject(Kind.CONFIG, ax.legacy[0]),
            )
        )
    elif len(ax.legacy) > 1:
        found.append(
            finding(
                CONFIG_SEVERAL_ATTENTION_FLAGS,
                f"{', '.join(ax.legacy)} are all set: Axolotl silently uses {ax.legacy[0]}",
                [f"keep one: attn_implementation: {ax.effective}"],
            )
        )
    chosen = ax.effective
    if chosen and chosen not in CANONICAL and "/" not in chosen:
        found.append(
            finding(
                CONFIG_UNKNOWN_ATTENTION,
                f"attn_implementation: {chosen} is not one Axolotl knows",
                [f"one of {', '.join(CANONICAL)}, or a hub kernel org/name"],
            )
        )
        return found
    if chosen and "/" in chosen:
        found += _hub_path_findings(facts, chosen)
    backend = backend_of_implementation(chosen)
    if backend is not None and "/" not in (chosen or "") and not verdicts[backend.name].usable:  # a Hub path: above
        verdict = verdicts[backend.name]
        found.append(
            finding(
                CONFIG_BACKEND_UNAVAILABLE,
                f"the config asks for {chosen}: {verdict.reasons[0]}",
                [backend.install] if verdict.problems and not verdict.unfit else [f"use {by_name()['sdpa'].axolotl}"],
                verdict.reasons,
                subject=Subject(Kind.CONFIG, "attn_implementation"),
            )
        )
    if chosen == "flex_attention" and ax.torch_compile in (None, False):
        found.append(
            finding(
                CONFIG_FLEX_WITHOUT_COMPILE,
                "flex attention without torch_compile runs unfused, slowly",
                ["torch_compile: true"],
            )
        )
    if chosen == "sage" and not ax.adapter:
        found.append(
            finding(
                CONFIG_SAGE_FULL_FINETUNE,
                "SageAttention on a full fine-tune: it has no backward pass, and the loss has been seen "
                "to drop to 0 (thu-ml/SageAttention #198)",
                ["adapter: lora  # or another backend"],
            )
        )
    if chosen == "flash_attention_2" and work.head_dim and facts.package(FA4_DISTRIBUTION):
        for gpu in facts.gpus:
            head_v = work.head_dim_v or work.head_dim
            if major(gpu) in (9, 10, 11) and fa4_accepts(major(gpu), work.head_dim, head_v) is False:
                found.append(
                    finding(
                        CONFIG_FA4_HEAD_DIMS,
                        f"FA4 cannot take head dims ({work.head_dim}, {head_v}) on {gpu.sm}: Axolotl "
                        "falls back to FA2 (flash-attn must then work)",
                    )
                )
                break
    return found


def _hub_kernel_unfit(facts: Facts, known: Backend) -> list[str]:
    """Why a Hub kernel the registry knows (hub-fa2, hub-fa3) cannot serve here, whatever is
    installed or cached: a GPU its builds carry no code for, a torch older than its builds."""
    reasons = [
        f"{known.label} carries no code for GPU {gpu.index} ({gpu.name}, {gpu.target}): the model loads and its "
        "first attention call fails"
        for gpu in facts.gpus
        if not known.runs_on(gpu)
    ]
    if facts.torch is not None and known.needs_newer_torch(facts.torch.version):
        reasons.append(
            f"the Hub builds {known.axolotl_names[0]} for torch {known.min_torch} on; "
            f"this is torch {facts.torch.version}"
        )
    return reasons


def _hub_path_findings(facts: Facts, chosen: str) -> list[Finding]:
    """An attn_implementation of the form org/name[@revision][:function]: loaded by transformers
    through `kernels`, in the build for this torch that the local cache holds or the Hub gives."""
    subject = Subject(Kind.CONFIG, "attn_implementation")
    repo = chosen.split("@")[0].split(":")[0]
    known = backend_of_implementation(repo)
    unfit = _hub_kernel_unfit(facts, known) if known else []
    if known and unfit:  # no `kernels` release and no fetch changes what its builds carry
        return [
            finding(
                CONFIG_BACKEND_UNAVAILABLE,
                f"the config asks for {chosen}: {unfit[0]}",
                [f"use {by_name()['sdpa'].axolotl}"],
                [*unfit[1:], known.support_for(None).source],
                subject=subject,
            )
        ]
    if KERNELS_DISTRIBUTION not in {i.name for i in facts.installed}:
        return [
            finding(
                CONFIG_BACKEND_UNAVAILABLE,
                f"the config asks for {chosen}, a kernel that transformers loads from the Hugging Face Hub "
                "through the `kernels` package, which is not installed: loading the model fails",
                [pip_install(facts, "'transformers[kernels]'") + "  # the kernels release this transformers takes"],
                [HUB_KERNELS_SOURCE],
                subject=subject,
            )
        ]
    cached = facts.hub_kernel(repo)
    torch = facts.torch
    if torch is None:
        return []  # torch-missing says what comes first
    fitting = [v for v in cached.variants if variant_fits(v, torch, facts.python)] if cached else []
    misfit = misfits(cached.binaries, facts) if cached else []
    if cached and fitting and misfit:  # the build `kernels` would load, read as an installed extension is
        return [
            finding(
                CONFIG_BACKEND_UNAVAILABLE,
                f"the config asks for {chosen}: the cached build `kernels` would load here does not fit: {misfit[0]}",
                [f"use {by_name()['sdpa'].axolotl}"],
                [*misfit[1:], *(b.path for b in cached.binaries)],
                subject=subject,
            )
        ]
    if fitting:
        return []
    offline = [v for v in OFFLINE_VARIABLES if (facts.variable(v) or "0").lower() not in ("0", "false", "no", "")]
    built_for = f"torch {torch.version} ({torch.build}), {facts.python.platform}"
    seen = f"cached builds: {', '.join(cached.variants) or 'none'} ({cached.cache})" if cached else "not in the cache"
    if offline:
        return [
            finding(
                CONFIG_HUB_KERNEL_OFFLINE,
                f"{', '.join(offline)} is set and the local Hub cache holds no build of {repo} for {built_for}: "
                "loading the model fails",
                [
                    f"unset {' '.join(offline)} for the first load, where huggingface.co is reachable (the build for "
                    "this torch is then cached), or copy a Hub cache that holds it into this one"
                ],
                [seen, KERNELS_SOURCE],
                subject=subject,
            )
        ]
    if cached:
        return [
            finding(
                CONFIG_HUB_KERNEL_NO_BUILD,
                f"the local Hub cache holds {repo}, but no build of it for {built_for}: it is fetched at load",
                [],
                [seen, KERNELS_SOURCE],
                subject=subject,
            )
        ]
    return [
        finding(
            CONFIG_HUB_KERNEL_NOT_CACHED,
            f"{repo} is not in the local Hub cache: transformers fetches its build for {built_for} from "
            "huggingface.co at the first load (whether the Hub publishes one is known only there; "
            f"`kernels variants {repo} --json` asks it)",
            [],
            [KERNELS_SOURCE],
            subject=subject,
        )
    ]
