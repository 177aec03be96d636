"""`--deep`'s real imports, each in a child process: what failed, and why."""

from __future__ import annotations

from attn_doctor.facts.model import Facts
from attn_doctor.registry.backends import (
    import_checks,
)
from attn_doctor.registry.findings import IMPORT_OUTCOMES, Finding, Kind, Subject, finding
from attn_doctor.rules.fixes import rebuild, reinstall, too_old_fix, xformers_fa4_fix


def import_findings(facts: Facts) -> list[Finding]:
    owner = {m: d for d, m in import_checks().items()}
    found = []
    torch = f"torch {facts.torch.version}" if facts.torch else "the installed torch"
    for result in facts.imports:
        if result.outcome == "ok":
            continue
        package = facts.package(owner.get(result.module, ""))
        fix: list[str] = []
        title = f"`import {result.module}` failed: {result.detail}"
        if result.outcome == "missing-symbol-version":
            title = f"`import {result.module}` fails: {result.detail}"
            if package is not None:
                fix = too_old_fix(facts, package, "libstdc++" if "GLIBCXX" in result.detail else "libc.")
        elif result.outcome == "undefined-symbol":
            title = (
                f"`import {result.module}` fails with an undefined symbol: it was built for another torch than {torch}"
            )
            if package is not None:
                fix = [rebuild(facts, package)]
        elif result.outcome == "timeout":
            title = f"`import {result.module}` did not finish in {result.seconds:.0f} s"
        elif result.module == "xformers.ops" and "flash_attn.flash_attn_interface" in result.detail:
            fix = xformers_fa4_fix(facts)  # the namespace collision, not a broken xformers
        elif package is not None:
            fix = [reinstall(facts, package)]
        found.append(
            finding(
                IMPORT_OUTCOMES[result.outcome],
                title,
                fix,
                [result.detail],
                subject=Subject(Kind.MODULE, result.module),
            )
        )
    return found
