"""A backend inside torch (SDPA) on a torch and cuDNN known to pick a kernel that goes wrong on a GPU here."""

from __future__ import annotations

from attn_doctor.facts.model import Facts
from attn_doctor.registry.backends import registered
from attn_doctor.registry.findings import SDPA_KNOWN_BAD, Finding, Kind, Subject, finding
from attn_doctor.registry.sdpa import CUDNN_DISTRIBUTIONS
from attn_doctor.registry.versions import in_range


def sdpa_findings(facts: Facts) -> list[Finding]:
    torch = facts.torch
    if torch is None or not torch.cuda:
        return []
    installed = {i.name: i.version for i in facts.installed}
    cudnn = next((installed[d] for d in CUDNN_DISTRIBUTIONS if installed.get(d)), None)
    here = {g.compute_capability for g in facts.gpus if g.vendor == "nvidia"}
    found = []
    for backend, hazard in ((b, h) for b in registered() for h in b.hazards):
        if not in_range(torch.version, hazard.torch) or not here & set(hazard.capabilities):
            continue
        if hazard.cudnn and (cudnn is None or not in_range(cudnn, hazard.cudnn)):
            continue
        found.append(
            finding(
                SDPA_KNOWN_BAD,
                f"SDPA on torch {torch.version}" + (f" with cuDNN {cudnn}" if cudnn else "") + f": {hazard.what}",
                [hazard.remedy],
                [hazard.source, "hurts " + ("training (the backward pass)" if hazard.training else "inference too")],
                subject=Subject(Kind.MODULE, backend.module),
            )
        )
    return found
