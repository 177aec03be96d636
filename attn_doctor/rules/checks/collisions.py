"""The FA2/FA4 collisions, each from what is on disk: FA4 shadowed, hidden, overwritten or missing;
FA2 without its extension; FA2's ROCm Triton build without its variable."""

from __future__ import annotations

import shlex
from pathlib import Path

from attn_doctor.facts.model import Facts, Package, Resolution
from attn_doctor.registry.backends import (
    FA2_DISTRIBUTION,
    FA2_TRITON_AMD,
    FA4_DISTRIBUTION,
)
from attn_doctor.registry.findings import (
    FA2_EXTENSION_MISSING,
    FA2_ROCM_TRITON_DISABLED,
    FA2_UNINSTALL_BREAKS_FA4,
    FA4_FILES_MISSING,
    FA4_FILES_OVERWRITTEN,
    FA4_HIDDEN,
    FA4_SHADOWED,
    Finding,
    distribution,
    finding,
)
from attn_doctor.registry.versions import in_range
from attn_doctor.rules.fixes import inside, listed, pip_install, rebuild, reinstall


def collision_findings(facts: Facts) -> list[Finding]:
    """The FA2/FA4 collisions, each from what is on disk (each reproduced in tests/test_collisions.py)."""
    fa2, fa4 = facts.package(FA2_DISTRIBUTION), facts.package(FA4_DISTRIBUTION)
    found: list[Finding] = []
    extension = facts.resolution("flash_attn_2_cuda")
    # ROCm's Triton build of FA2 has no extension by design, so only CUDA builds are judged.
    cuda_fa2 = fa2 is not None and not fa2.metadata_problem and not (facts.torch and facts.torch.hip)
    if fa2 is not None and cuda_fa2 and (extension is None or extension.kind == "missing"):
        found.append(
            finding(
                FA2_EXTENSION_MISSING,
                f"flash-attn {fa2.version} has no compiled flash_attn_2_cuda: `import flash_attn` will fail",
                # FA2's setup.py imports torch to build: torch first where it is missing
                [pip_install(facts, "torch"), rebuild(facts, fa2)] if facts.torch is None else [rebuild(facts, fa2)],
                [
                    "no flash_attn_2_cuda extension module on the target's sys.path",
                    f"RECORD of {fa2.dist_info} lists: {', '.join(fa2.extension_modules) or 'no extension module'}",
                ],
                subject=distribution(FA2_DISTRIBUTION),
            )
        )
    found += _fa2_rocm_triton(facts, fa2, extension)
    if fa4 is None or fa4.metadata_problem:
        return found
    again = reinstall(facts, fa4)
    # attn-doctor's own repair first (planned, backed up, verified, undoable), then the same by hand
    repair = f"attn-doctor fix-shadow --python {shlex.quote(facts.python.executable)}"
    cute = facts.resolution("flash_attn.cute")
    expected = _fa4_origin(fa4, cute.other_candidates if cute else ())
    if cute is not None and cute.origin and expected and Path(cute.origin) != Path(expected):
        stub = Path(cute.origin).parent
        owner = "FA2's stale cute/ stub" if fa2 and inside(stub, fa2.location) else "another copy"
        backup = shlex.quote(str(stub) + ".fa2-stub")
        found.append(
            finding(
                FA4_SHADOWED,
                f"flash_attn.cute resolves to {owner} at {stub}, not to flash-attn-4 {fa4.version}",
                [repair, "# or by hand (moved aside, not deleted):", f"mv {shlex.quote(str(stub))} {backup}"],
                [
                    f"flash_attn.cute -> {cute.origin} (found by {cute.finder})",
                    f"flash-attn-4 expects {expected}",
                ],
                subject=distribution(FA4_DISTRIBUTION),
            )
        )
    found += _fa4_hidden(fa4, facts)
    if fa4.modified:
        owners = sorted({m.now_matches or "an unknown source" for m in fa4.modified})
        found.append(
            finding(
                FA4_FILES_OVERWRITTEN,
                f"{len(fa4.modified)} of flash-attn-4's files are now {' / '.join(owners)}'s copies "
                f"({listed([m.path for m in fa4.modified])})",
                [repair, "# or by hand:", again],
                [f"{m.path}: sha256 is {m.now_matches or 'unknown'}'s, not flash-attn-4's" for m in fa4.modified],
                subject=distribution(FA4_DISTRIBUTION),
            )
        )
    if fa4.missing:
        found.append(
            finding(
                FA4_FILES_MISSING,
                f"{len(fa4.missing)} of flash-attn-4's files are missing ({listed(list(fa4.missing))})",
                [repair, "# or by hand:", again],
                [f"missing: {p}" for p in fa4.missing],
                subject=distribution(FA4_DISTRIBUTION),
            )
        )
    for shared in fa4.shared:
        if shared.other == FA2_DISTRIBUTION:
            found.append(
                finding(
                    FA2_UNINSTALL_BREAKS_FA4,
                    f"`pip uninstall flash-attn` would delete {len(shared.paths)} of flash-attn-4's files "
                    f"({listed(list(shared.paths))})",
                    [repair, "# or, by hand, after any `pip uninstall flash-attn`:", again],
                    [f"in both RECORDs: {p}" for p in shared.paths],
                    subject=distribution(FA4_DISTRIBUTION),
                )
            )
    return found


def _fa2_rocm_triton(facts: Facts, fa2: Package | None, extension: Resolution | None) -> list[Finding]:
    """FA2's ROCm build through Triton has no compiled extension: it imports only with
    FLASH_ATTENTION_TRITON_AMD_ENABLE=TRUE set, else it looks for flash_attn_2_cuda and fails."""
    if fa2 is None or fa2.metadata_problem or facts.torch is None or not facts.torch.hip:
        return []
    if extension is not None and extension.kind != "missing":
        return []  # the CK build, compiled
    value = facts.variable(FA2_TRITON_AMD)
    if value == "TRUE" or not in_range(fa2.version or "", ">=2.7.1"):
        return []
    return [
        finding(
            FA2_ROCM_TRITON_DISABLED,
            f"flash-attn {fa2.version} is a ROCm Triton build (no flash_attn_2_cuda) and {FA2_TRITON_AMD} is "
            f"{'unset' if value is None else repr(value)}: `import flash_attn` will fail",
            [f"export {FA2_TRITON_AMD}=TRUE  # in the training job's environment too; only the exact TRUE counts"],
            [
                "https://github.com/Dao-AILab/flash-attention/blob/v2.8.3/flash_attn/flash_attn_interface.py#L11-L15",
                f"RECORD of {fa2.dist_info} lists: {', '.join(fa2.extension_modules) or 'no extension module'}",
            ],
            subject=distribution(FA2_DISTRIBUTION),
        )
    ]


def _fa4_hidden(fa4: Package, facts: Facts) -> list[Finding]:
    """Another `flash_attn` earlier on sys.path (PYTHONPATH, a .pth folder, the user site, a
    `pip --target` folder) that has no cute/: `flash_attn.cute` is searched in it alone, and the
    installed FA4 is never found."""
    cute, parent = facts.resolution("flash_attn.cute"), facts.resolution("flash_attn")
    if fa4.editable or cute is None or cute.kind != "missing" or parent is None or parent.kind != "package":
        return []
    if not parent.origin or inside(Path(parent.origin), fa4.location):
        return []
    folder = Path(parent.origin).parent
    aside = shlex.quote(f"{folder}.hides-fa4")
    return [
        finding(
            FA4_HIDDEN,
            f"flash_attn resolves to {folder}, earlier on sys.path and without cute/: flash-attn-4 {fa4.version} "
            f"in {fa4.location} is never imported",
            [
                f"mv {shlex.quote(str(folder))} {aside}  # the other flash_attn, set aside (not deleted)",
                f"# or take {folder.parent} off sys.path (PYTHONPATH, a .pth file, the user site)",
            ],
            [f"flash_attn -> {parent.origin} (found by {parent.finder})", f"flash_attn.cute: {cute.detail}"],
            subject=distribution(FA4_DISTRIBUTION),
        )
    ]


def _fa4_origin(fa4: Package, candidates: tuple[str, ...]) -> str | None:
    """Where FA4's `flash_attn.cute` should load from: its editable source tree (what the editable
    finder answers), else the wheel's file in site-packages."""
    if fa4.editable:
        if candidates:
            return candidates[0]
        if fa4.source_url and fa4.source_url.startswith("file://"):
            return str(Path(fa4.source_url[len("file://") :]) / "__init__.py")
        return None
    return str(Path(fa4.location) / "flash_attn" / "cute" / "__init__.py")
