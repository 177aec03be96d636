"""Each attention package's records: broken or duplicate dist-info, changed files, bad releases and
lookalikes, unmet requirements."""

from __future__ import annotations

import shlex

from attn_doctor.facts.model import Facts, Package
from attn_doctor.registry.backends import (
    FA4_DISTRIBUTION,
    backend_of_distribution,
    by_name,
    verified_distributions,
)
from attn_doctor.registry.findings import (
    PACKAGE_DUPLICATE,
    PACKAGE_FILES_MODIFIED,
    PACKAGE_LOOKALIKE,
    PACKAGE_METADATA_BROKEN,
    PACKAGE_REQUIREMENTS_UNMET,
    Finding,
    distribution,
    finding,
)
from attn_doctor.registry.versions import is_version
from attn_doctor.rules.fixes import instead, pip_install, reinstall
from attn_doctor.rules.requirements import unmet


def package_findings(facts: Facts) -> list[Finding]:
    found: list[Finding] = []
    by_name: dict[str, list[Package]] = {}
    for package in facts.packages:
        by_name.setdefault(package.name, []).append(package)
    for name, copies in by_name.items():
        if len(copies) > 1:
            found.append(
                finding(
                    PACKAGE_DUPLICATE,
                    f"{name} has {len(copies)} dist-info folders: "
                    + ", ".join(f"{c.version} in {c.location}" for c in copies),
                    [
                        f"mv {shlex.quote(c.dist_info)} {shlex.quote(c.dist_info)}.stale  # keep only the one you use"
                        for c in copies[1:]
                    ]
                    + [reinstall(facts, copies[0])],
                    [c.dist_info for c in copies],
                    subject=distribution(name),
                )
            )
    for package in facts.packages:
        problem = package.metadata_problem
        if problem is None and package.version is not None and not is_version(package.version):
            problem = f"invalid version {package.version!r}"
        if problem:
            folder = shlex.quote(package.dist_info)
            found.append(
                finding(
                    PACKAGE_METADATA_BROKEN,
                    f"{package.name}: {problem}",
                    [
                        f"mv {folder} {folder}.broken  # set the broken record aside",
                        reinstall(facts, package),
                    ],
                    [package.dist_info],
                    subject=distribution(package.name),
                )
            )
            continue
        if package.name in _generic_verified():
            shared = {p for s in package.shared for p in s.paths}
            changed = [m.path for m in package.modified if m.path not in shared]
            missing = [p for p in package.missing if p not in shared]
            if changed or missing:
                found.append(
                    finding(
                        PACKAGE_FILES_MODIFIED,
                        f"{package.name} {package.version}: {len(changed)} file(s) changed, {len(missing)} missing "
                        "since install",
                        [reinstall(facts, package)],
                        [f"changed: {p}" for p in changed] + [f"missing: {p}" for p in missing],
                        subject=distribution(package.name),
                    )
                )
        found += _release_findings(facts, package)
        found += _requirement_findings(facts, package)
    return found


def _generic_verified() -> list[str]:
    """Packages whose RECORD is checked generically; FA4's changed files get the collision findings."""
    return [d for d in verified_distributions() if d != FA4_DISTRIBUTION]


def _release_findings(facts: Facts, package: Package) -> list[Finding]:
    """A release that installs but is not the backend: the registry's bad releases and lookalikes."""
    backend = backend_of_distribution(package.name)
    version = package.version
    if backend is None or version is None:
        return []
    # the real backend where its newest release runs on every GPU here; else what does run here
    # (SageAttention 1 on a T4: SageAttention 2 refuses sm_75)
    refused = [g for g in facts.gpus if not backend.runs_on(g)]
    fix = instead(refused[0]) if refused else backend.install
    found = [
        finding(
            bad.rule,
            bad.title.format(version=version),
            [pip_install(facts, shlex.quote(bad.fix)) if bad.fix else fix],
            [bad.source],
            subject=distribution(package.name),
        )
        for bad in backend.bad_releases_found(version, facts)
    ]
    found += [
        finding(
            PACKAGE_LOOKALIKE,
            lookalike.title(version),
            [f"{backend.install}", f"# or, for what it is: {by_name()[lookalike.instead].install}"],
            [package.dist_info],
            subject=distribution(package.name),
        )
        for lookalike in backend.lookalikes_found(version)
    ]
    return found


def _requirement_findings(facts: Facts, package: Package) -> list[Finding]:
    """Requires-Dist not met (package-requirements-unmet). The fix installs exactly what is missing
    with torch held where it is; a requirement on another torch is answered by the release that
    matches the installed torch instead."""
    if package.name != "torch" and backend_of_distribution(package.name) is None:
        return []
    missing = unmet(package, facts)
    if not missing:
        return []
    if facts.torch is None and facts.torch_problem is None:  # torch-missing says it, with its own fix
        missing = [u for u in missing if u.name != "torch"]
        if not missing:
            return []
    on_torch = [u for u in missing if u.name == "torch"]
    rest = [u for u in missing if u.name != "torch"]
    backend = backend_of_distribution(package.name)
    fix = []
    if rest:
        torch = facts.package("torch")
        held = (
            " " + shlex.quote(f"torch=={torch.version}") if torch and torch.version and package.name != "torch" else ""
        )
        wanted = " ".join(shlex.quote(u.wanted) for u in rest)
        fix.append(f"{pip_install(facts, wanted + held)}  # only what is missing; torch stays")
    if on_torch and backend is not None:
        fix.append(f"{backend.install}")
    return [
        finding(
            PACKAGE_REQUIREMENTS_UNMET,
            f"{package.name} {package.version} requires {'; '.join(u.describe() for u in missing)}",
            fix,
            [f"Requires-Dist: {u.line}" for u in missing],
            subject=distribution(package.name),
        )
    ]
