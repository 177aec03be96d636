"""Which attention backend to use here, and why: the backend table judged against the machine
and the workload. Pure: facts and workload in, a Recommendation and findings out.

The ranking per GPU generation follows what was measured or what upstream builds for:
- Hopper/Blackwell datacentre (majors 9-11): FA4, then FA2, then SDPA. On the real H100 FA4 led
  from 4k tokens (562 vs 497 TFLOP/s fwd+bwd for SDPA's cuDNN backend at 8k) but at 1k tokens
  SDPA matched or beat it (KNOWLEDGE.md §6b): below 2k tokens SDPA goes first.
- Ampere/Ada (8.x) and consumer Blackwell (12.x): FA2, then SDPA (Axolotl uses FA4 on 9-11 only).
- Turing (7.5): xFormers, then SDPA (the guide's choice for T4).
- Older, CPU, unknown: SDPA.
- AMD with FA2's CK targets: FA2, then SDPA.
SageAttention has no backward pass: it is ranked first for inference on its GPUs only.
"""

from __future__ import annotations

from dataclasses import dataclass

from attn_doctor.facts.measured import Measured
from attn_doctor.facts.model import Facts, Gpu
from attn_doctor.rules.backends import BY_NAME, FA4_RULE_VERSION, Backend, fa4_accepts
from attn_doctor.rules.findings import Finding, Severity, finding
from attn_doctor.rules.versions import release
from attn_doctor.workload import CANONICAL, Workload

SHORT_SEQUENCE = 2048  # below it SDPA (cuDNN) matched FA4 on the H100 (KNOWLEDGE.md §6b)


@dataclass(frozen=True)
class Recommendation:
    backend: str  # a name of rules/backends.py, usable now
    config: str  # the Axolotl config line
    reasons: tuple[str, ...]
    runner_up: str | None
    better: str | None = None  # a faster backend that is not usable yet
    better_how: str = ""  # what it takes to get it


def _weakest(gpus: tuple[Gpu, ...]) -> Gpu | None:
    """Mixed GPUs: judge for the oldest, since one process may land on any of them."""
    nvidia = [g for g in gpus if g.vendor == "nvidia" and g.compute_capability]
    if nvidia:
        return min(nvidia, key=lambda g: tuple(int(x) for x in (g.compute_capability or "0.0").split(".")))
    return gpus[0] if gpus else None


def _major(gpu: Gpu) -> int:
    """The compute capability's major, 0 for AMD and unknown GPUs."""
    return int((gpu.compute_capability or "0.0").split(".")[0])


def ranking(gpu: Gpu | None, work: Workload) -> list[str]:
    if gpu is None:
        order = ["sdpa"]
    elif gpu.vendor == "amd":
        order = ["fa2", "sdpa"] if BY_NAME["fa2"].runs_on(gpu) else ["sdpa"]
    else:
        major = _major(gpu)
        if major in (9, 10, 11):
            short = work.seq_len is not None and work.seq_len < SHORT_SEQUENCE
            order = ["sdpa", "fa4", "fa2"] if short else ["fa4", "fa2", "sdpa"]
        elif major in (8, 12):
            order = ["fa2", "sdpa"]
        elif gpu.compute_capability == "7.5":
            order = ["xformers", "sdpa"]
        else:
            order = ["sdpa"]
    if work.training == "inference" and gpu is not None and BY_NAME["sage"].runs_on(gpu):
        order.insert(0, "sage")
    return order


def _unfit(backend: Backend, facts: Facts, gpu: Gpu | None, work: Workload) -> str | None:
    """Why this backend cannot serve this workload here; None when it can."""
    if gpu is not None and not all(backend.runs_on(g) for g in facts.gpus):
        return f"{backend.label} does not run on every GPU here"
    if work.training in ("full", "lora") and not backend.trains:
        return f"{backend.label} has no backward pass: inference only"
    head, head_v = work.head_dim, work.head_dim_v or work.head_dim
    if head and backend.max_head_dim and max(head, head_v or head) > backend.max_head_dim:
        return f"{backend.label} takes head dims up to {backend.max_head_dim}, not {head}"
    if backend.name == "fa4" and head and head_v and gpu is not None and gpu.vendor == "nvidia":
        accepted = fa4_accepts(_major(gpu), head, head_v)
        if accepted is False:
            return (
                f"FA4 ({FA4_RULE_VERSION}) cannot take head dims ({head}, {head_v}) on {gpu.sm}: "
                "Axolotl falls back to FA2"
            )
    torch = facts.torch
    if torch is not None and backend.needs_newer_torch(torch.version):
        return f"{backend.label} needs torch >= {backend.min_torch}"
    amd = gpu is not None and gpu.vendor == "amd"
    if amd and backend.min_rocm and torch is not None and torch.hip and release(torch.hip) < release(backend.min_rocm):
        return f"{backend.label} needs ROCm >= {backend.min_rocm}; torch is built for HIP {torch.hip}"
    hopper = gpu is not None and gpu.compute_capability == "9.0"
    if backend.name == "fa4" and hopper and work.training in ("full", "lora") and facts.fa4_sm90_backward is False:
        return "the installed FA4 has no SM90 backward kernel (flash_bwd_sm90.py): it cannot train on Hopper"
    return None


def why_unusable(backend: Backend, facts: Facts) -> str | None:
    """Why it cannot be used now (not installed, broken); None when it can."""
    if backend.distribution is None:
        return None if facts.torch is not None else "torch is not installed"
    package = facts.package(backend.distribution)
    if package is None:
        return f"{backend.distribution} is not installed"
    if backend.name == "sage" and release(package.version)[:1] < (2,):
        return f"sageattention {package.version} is SageAttention 1"
    result = next((r for r in facts.imports if r.module == backend.module), None)
    if result is not None and result.outcome != "ok":
        return f"import {backend.module} fails ({result.outcome})"
    return None


def recommend(facts: Facts, work: Workload, broken: set[str], measured: Measured | None = None) -> Recommendation:
    """`broken`: the distributions with error findings, which are not usable as they stand.
    `measured`: a bench run on this machine; where it timed the usable backends, its ranking
    replaces the expected one."""
    gpu = _weakest(facts.gpus)
    reasons: list[str] = []
    if gpu is None:
        reasons.append("no GPU: SDPA is what runs (its math and CPU kernels)")
    else:
        reasons.append(
            f"{gpu.architecture} {gpu.sm or gpu.gfx_target}"
            + (" (the oldest of these GPUs)" if len(facts.gpus) > 1 else "")
        )
    fit, now = [], []
    for name in ranking(gpu, work):
        backend = BY_NAME[name]
        why_not = _unfit(backend, facts, gpu, work)
        if why_not:
            reasons.append(why_not)
            continue
        fit.append(backend)
        blocked = why_unusable(backend, facts) or (
            f"{backend.distribution} is broken here (see the findings)" if backend.distribution in broken else None
        )
        if blocked is None:
            now.append(backend)
        elif len(fit) == 1:
            reasons.append(f"{backend.label} would be first: {blocked}")
    if work.seq_len is not None and gpu is not None and _major(gpu) in (9, 10, 11):
        reasons.append(
            f"sequence length {work.seq_len}: on the H100, SDPA's cuDNN backend matched FA4 at 1k tokens and FA4 "
            "led from 4k (measured): the choice is close below 2k"
        )
    if measured is not None:
        now = _as_measured(now, facts, work, measured, reasons)
    chosen = now[0] if now else BY_NAME["sdpa"]
    if work.sample_packing and chosen.name == "sdpa" and gpu is not None and gpu.compute_capability != "9.0":
        reasons.append("Axolotl warns that sample packing with SDPA in bf16 off sm_90 may give a 0.0 loss")
    best = fit[0] if fit else chosen
    runner_up = next((b.name for b in now[1:]), None)
    reasons.insert(1, f"{chosen.label}: {_why(chosen, gpu)}")
    return Recommendation(
        backend=chosen.name,
        config=chosen.axolotl,
        reasons=tuple(reasons),
        runner_up=runner_up,
        better=best.name if best is not chosen else None,
        better_how=best.install if best is not chosen else "",
    )


def _as_measured(
    now: list[Backend], facts: Facts, work: Workload, measured: Measured, reasons: list[str]
) -> list[Backend]:
    """The usable backends in the order they ran in `measured` (those it did not time after)."""
    names = {g.name for g in facts.gpus}
    if measured.gpu not in names:
        reasons.append(f"the bench file was measured on {measured.gpu}, not this machine's GPU: not used")
        return now
    speeds = dict(measured.fastest(seqlen=work.seq_len))
    timed = sorted((b for b in now if b.name in speeds), key=lambda b: -speeds[b.name])
    if not timed:
        return now
    where = f" near {work.seq_len} tokens" if work.seq_len else ""
    figures = ", ".join(f"{b.name} {speeds[b.name]:.0f}" for b in timed)
    reasons.append(f"measured here{where} (bench, fwd+bwd TFLOP/s, bf16 causal): {figures}")
    return timed + [b for b in now if b.name not in speeds]


def _why(backend: Backend, gpu: Gpu | None) -> str:
    if backend.name == "sdpa":
        return "built into torch, always there; the fallback"
    if backend.name == "fa4":
        return "the fastest measured on the H100 from 4k tokens (fwd+bwd 562 TFLOP/s at 8k)"
    if backend.name == "fa2":
        return "FlashAttention's stable build for this GPU, with varlen for sample packing"
    if backend.name == "xformers":
        return "the memory-efficient kernels that still run on Turing"
    if backend.name == "sage":
        return "int8 QK for inference on this GPU"
    return backend.source


def config_findings(facts: Facts, work: Workload, broken: set[str]) -> list[Finding]:
    """What an Axolotl config will meet on this machine (`--config`)."""
    ax = work.axolotl
    if ax is None:
        return []
    found = []
    if ax.s2_attention:
        found.append(
            finding(
                "config-s2-attention",
                "s2_attention is rejected by Axolotl >= 0.17 (no longer supported)",
                [f"use {BY_NAME['sdpa'].axolotl}, or flash_attention_2 where it runs"],
            )
        )
    if ax.attn_implementation and ax.legacy:
        found.append(
            finding(
                "config-mixed-attention-keys",
                f"attn_implementation and the legacy {', '.join(ax.legacy)} are both set: Axolotl stops",
                [f"keep only attn_implementation: {ax.attn_implementation}"],
            )
        )
    elif len(ax.legacy) > 1:
        found.append(
            finding(
                "config-several-attention-flags",
                f"{', '.join(ax.legacy)} are all set: Axolotl silently uses {ax.legacy[0]}",
                [f"keep one: attn_implementation: {ax.effective}"],
            )
        )
    chosen = ax.effective
    if chosen and chosen not in CANONICAL and "/" not in chosen:
        found.append(
            finding(
                "config-unknown-attention",
                f"attn_implementation: {chosen} is not one Axolotl knows",
                [f"one of {', '.join(CANONICAL)}, or a hub kernel org/name"],
            )
        )
        return found
    backend = _backend_of(chosen)
    if backend is not None:
        why_not = why_unusable(backend, facts) or (
            f"{backend.distribution} is broken here (see the findings)" if backend.distribution in broken else None
        )
        if why_not:
            found.append(
                finding("config-backend-unavailable", f"the config asks for {chosen}: {why_not}", [backend.install])
            )
        for gpu in facts.gpus:
            if not backend.runs_on(gpu):
                found.append(
                    finding(
                        "config-backend-unavailable",
                        f"the config asks for {chosen}, which does not run on {gpu.name} ({gpu.sm})",
                        [f"use {BY_NAME['sdpa'].axolotl}"],
                    )
                )
    if chosen == "flex_attention" and ax.torch_compile in (None, False):
        found.append(
            finding(
                "config-flex-without-compile",
                "flex attention without torch_compile runs unfused, slowly",
                ["torch_compile: true"],
            )
        )
    if chosen == "sage" and not ax.adapter:
        found.append(
            finding(
                "config-sage-full-finetune",
                "SageAttention on a full fine-tune: it has no backward pass, and the loss has been seen "
                "to drop to 0 (thu-ml/SageAttention #198)",
                ["adapter: lora  # or another backend"],
            )
        )
    if chosen == "flash_attention_2" and work.head_dim and facts.package("flash-attn-4"):
        for gpu in facts.gpus:
            head_v = work.head_dim_v or work.head_dim
            if _major(gpu) in (9, 10, 11) and fa4_accepts(_major(gpu), work.head_dim, head_v) is False:
                found.append(
                    finding(
                        "config-fa4-head-dims",
                        f"FA4 cannot take head dims ({work.head_dim}, {head_v}) on {gpu.sm}: Axolotl "
                        "falls back to FA2 (flash-attn must then work)",
                    )
                )
                break
    return found


def _backend_of(implementation: str | None) -> Backend | None:
    names = {
        "sdpa": "sdpa",
        "flash_attention_2": "fa2",
        "flash_attention_3": "fa3",
        "flex_attention": "flex",
        "xformers": "xformers",
        "sage": "sage",
    }
    return BY_NAME.get(names.get(implementation or "", ""))


def broken_distributions(findings: list[Finding]) -> set[str]:
    return {f.subject for f in findings if f.severity == Severity.ERROR and f.subject}
