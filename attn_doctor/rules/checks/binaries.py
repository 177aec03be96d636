"""Each compiled extension read as an ELF file: the `undefined symbol` and the missing library before any import."""

from __future__ import annotations

from pathlib import Path

from attn_doctor.facts.model import Facts, VersionNeed
from attn_doctor.registry.backends import (
    import_checks,
)
from attn_doctor.registry.findings import (
    ABI_CXX11_MISMATCH,
    ABI_MISSING_LIBRARY,
    ABI_UNDEFINED_SYMBOL,
    ABI_UNREADABLE,
    ABI_VERSION_MISSING,
    Finding,
    distribution,
    finding,
)
from attn_doctor.rules.fixes import listed, rebuild, too_old_fix


def binary_findings(facts: Facts) -> list[Finding]:
    """The ELF reading of each compiled extension: the `undefined symbol` before any import."""
    found = []
    torch = facts.torch
    torch_name = f"torch {torch.version}" if torch else "the installed torch"
    for binary in facts.binaries:
        name = Path(binary.path).name
        package = facts.package(binary.package)
        deep = _deep_result(facts, binary.package)
        evidence = [binary.path, *deep]
        if binary.error:
            found.append(
                finding(
                    ABI_UNREADABLE, f"{name}: {binary.error}", evidence=evidence, subject=distribution(binary.package)
                )
            )
            continue
        for library, needs in _by_library(binary.missing_versions).items():
            found.append(
                finding(
                    ABI_VERSION_MISSING,
                    f"{name} needs {', '.join(n.version for n in needs)} from {library}, which {needs[0].provider} "
                    f"(what the loader gives it) does not define"
                    + (f": it has up to {needs[0].newest}" if needs[0].newest else ""),
                    too_old_fix(facts, package, library),
                    [*evidence, *(f"needs {n.version} from {n.library}" for n in needs)],
                    subject=distribution(binary.package),
                )
            )
        if binary.missing_libraries:
            why = _cuda_runtime_hint(binary.missing_libraries, torch.cuda if torch else None)
            found.append(
                finding(
                    ABI_MISSING_LIBRARY,
                    f"{name} needs {', '.join(binary.missing_libraries)}, which the loader will not find{why}",
                    [rebuild(facts, package)] if package else [],
                    [*evidence, f"DT_NEEDED: {', '.join(binary.needed)}"],
                    subject=distribution(binary.package),
                )
            )
        if binary.missing_symbols:
            shown = listed(list(binary.readable_symbols or binary.missing_symbols), limit=2)
            mismatch = binary.abi and binary.torch_abi and binary.abi != binary.torch_abi
            rule = ABI_CXX11_MISMATCH if mismatch else ABI_UNDEFINED_SYMBOL
            title = (
                f"{name} was built with the {binary.abi} C++ ABI, {torch_name} with the {binary.torch_abi} one"
                if mismatch
                else f"{name} imports {len(binary.missing_symbols)} torch symbol(s) that {torch_name} does not "
                f"export ({shown}): it was built for another torch"
            )
            symbols = [f"missing: {r}" for r in (binary.readable_symbols or binary.missing_symbols)[:10]]
            found.append(
                finding(
                    rule,
                    title,
                    [rebuild(facts, package)] if package else [],
                    [*evidence, *symbols],
                    subject=distribution(binary.package),
                )
            )
    return found


def _by_library(needs: tuple[VersionNeed, ...]) -> dict[str, list[VersionNeed]]:
    grouped: dict[str, list[VersionNeed]] = {}
    for need in needs:
        grouped.setdefault(need.library, []).append(need)
    return grouped


def _deep_result(facts: Facts, package: str) -> list[str]:
    """What `--deep`'s real import said about the same package, to set beside the prediction."""
    module = import_checks().get(package)
    return [
        f"--deep: import {r.module} -> {r.outcome} {r.detail}".rstrip() for r in facts.imports if r.module == module
    ]


def _cuda_runtime_hint(libraries: tuple[str, ...], torch_cuda: str | None) -> str:
    for library in libraries:
        if library.startswith("libcudart.so.") and torch_cuda:
            built = library.split(".so.")[1].split(".")[0]
            if built != torch_cuda.split(".")[0]:
                return f" (it was built for CUDA {built}; torch is a CUDA {torch_cuda} build)"
    return ""
