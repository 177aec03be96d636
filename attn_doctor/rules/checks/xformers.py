"""xFormers next to FA4 without FA2: flash-attn-4's namespace taken for FA2."""

from __future__ import annotations

from attn_doctor.facts.model import Facts
from attn_doctor.registry.backends import (
    FA4_DISTRIBUTION,
)
from attn_doctor.registry.findings import XFORMERS_FA4_NAMESPACE, Finding, distribution, finding
from attn_doctor.registry.versions import in_range
from attn_doctor.rules.fixes import xformers_fa4_fix

XFORMERS_FLASH_SOURCE = (
    "https://github.com/facebookresearch/xformers/blob/v0.0.35/xformers/ops/fmha/flash.py#L57-L59 "
    "(find_spec('flash_attn'), then import flash_attn.flash_attn_interface; first at v0.0.30, after the bundled "
    "_C_flashattention, which 0.0.34 no longer tries first)"
)


def xformers_findings(facts: Facts) -> list[Finding]:
    """xFormers next to FA4 without FA2: FA4's files make `flash_attn` a namespace package, which
    xformers.ops takes for FA2 and imports flash_attn.flash_attn_interface from: `import
    xformers.ops` fails (seen with xformers 0.0.35 and flash-attn-4 4.0.0b36)."""
    xformers, fa4 = facts.package("xformers"), facts.package(FA4_DISTRIBUTION)
    parent = facts.resolution("flash_attn")
    if xformers is None or fa4 is None or parent is None or parent.kind != "namespace":
        return []
    bundled = any("_C_flashattention" in path for path in xformers.extension_modules)
    if not in_range(xformers.version or "", ">=0.0.34") and (
        bundled or not in_range(xformers.version or "", ">=0.0.30")
    ):
        return []
    return [
        finding(
            XFORMERS_FA4_NAMESPACE,
            f"`import xformers.ops` fails: xformers {xformers.version} takes flash-attn-4's flash_attn/ namespace "
            "for FA2 and imports flash_attn.flash_attn_interface, which only FA2 has",
            xformers_fa4_fix(facts),
            [f"flash_attn -> namespace {', '.join(parent.search_locations)}", XFORMERS_FLASH_SOURCE],
            subject=distribution("xformers"),
        )
    ]
