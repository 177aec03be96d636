"""fix-shadow: the plan that repairs the FA2/FA4 collisions , and its proof.

Built from the same facts and findings as `check`, so it repairs exactly what `check` reports:
- FA4 shadowed by FA2's stale `flash_attn/cute/` (editable FA4): the stub folder is moved aside.
- FA4's files overwritten or missing: FA4's installed version is reinstalled, files only
  (`--no-deps`: its dependencies and torch are left alone).
- FA2's stub files that FA4 does not own are moved out of FA4's package folder.
- FA2's RECORD no longer lists `flash_attn/cute/`, so `pip uninstall flash-attn` leaves FA4 whole.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from attn_doctor.actions.installer import choose_installer, may_write
from attn_doctor.actions.journal import first_outside
from attn_doctor.actions.plan import Command, MoveAside, Plan, Refusal, RewriteFile, Step
from attn_doctor.facts.model import Package, Resolution
from attn_doctor.registry.backends import FA2_DISTRIBUTION, FA4_DISTRIBUTION
from attn_doctor.registry.findings import FA4_FILES_MISSING, FA4_FILES_OVERWRITTEN, FA4_SHADOWED, Group
from attn_doctor.report import Report

CUTE = "flash_attn/cute/"


def plan_fix_shadow(report: Report, wheel_dir: str | None = None, allow_system: bool = False) -> Plan:
    facts = report.facts
    found = {f.rule for f in report.findings if f.rule.is_in(Group.COLLISION)}
    fa2, fa4 = facts.package(FA2_DISTRIBUTION), facts.package(FA4_DISTRIBUTION)
    reasons = tuple(f"{f.code}: {f.title}" for f in report.findings if f.rule in found)
    if not found or fa4 is None:
        return Plan("fix-shadow", facts.python.executable, facts.python.prefix, (), ())
    may_write(facts.python, fa4.location, allow_system)
    steps: list[Step] = []
    if FA4_SHADOWED in found:
        cute = facts.resolution("flash_attn.cute")
        assert cute is not None and cute.origin is not None  # a shadowed finding names the origin
        stub = str(Path(cute.origin).parent)
        if fa2 is None or not stub.startswith(fa2.location + os.sep):
            raise Refusal(f"flash_attn.cute resolves to {stub}, which is not FA2's: left alone")
        steps.append(MoveAside(stub, "FA2's stale copy of FA4 that shadows the FA4 source tree"))
    if found & {FA4_FILES_OVERWRITTEN, FA4_FILES_MISSING}:
        steps.append(
            Command(
                choose_installer(facts.python, find_links=wheel_dir, offline=bool(wheel_dir)).reinstall(
                    f"{FA4_DISTRIBUTION}=={fa4.version}"
                ),
                watch=(str(Path(fa4.location) / CUTE), fa4.dist_info),
                why=f"FA4's own files back, {FA4_DISTRIBUTION} {fa4.version} only, no dependencies",
            )
        )
    if fa2 is not None:
        fa2_cute = [p for p in record_paths(fa2) if p.startswith(CUTE)]
        _refuse_escapes(fa2, fa2_cute)
        if FA4_SHADOWED not in found:
            owned = set(record_paths(fa4))
            for path in fa2_cute:
                absolute = os.path.join(fa2.location, path)
                if path not in owned and os.path.lexists(absolute):
                    steps.append(MoveAside(absolute, "FA2's stub file inside FA4's package, which FA4 does not own"))
        if fa2_cute:
            steps.append(
                RewriteFile(
                    str(Path(fa2.dist_info) / "RECORD"),
                    record_without(Path(fa2.dist_info) / "RECORD", CUTE),
                    f"FA2 no longer claims {CUTE}, so `pip uninstall flash-attn` leaves FA4's files",
                )
            )
    return Plan("fix-shadow", facts.python.executable, facts.python.prefix, tuple(steps), reasons)


def _refuse_escapes(package: Package, rows: list[str]) -> None:
    """A RECORD row under flash_attn/cute/ that leaves it (`..`, an absolute path, a symlinked
    folder) is not FA2's file to move: pip itself refuses such rows, and so does the repair."""
    by_path = {os.path.join(package.location, row): row for row in rows}
    outside = first_outside(list(by_path), os.path.join(package.location, CUTE))  # as undo checks a journal
    if outside is not None:
        row = by_path[outside]
        raise Refusal(f"{package.name}'s RECORD lists {row!r}, outside {CUTE}: refused, nothing was changed")


def record_paths(package: Package) -> list[str]:
    """Every path in a distribution's RECORD, as written there."""
    record = Path(package.dist_info) / "RECORD"
    try:
        text = record.read_text(encoding="utf-8")
    except OSError:
        return []
    return [row[0] for row in csv.reader(text.splitlines()) if row]


def record_without(record: Path, prefix: str) -> str:
    """RECORD's text less the rows under `prefix`; every other line kept exactly as it was."""
    lines = record.read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(line for line in lines if not next(csv.reader([line]), [""])[0].startswith(prefix))


def verify(before: Report, after: Report) -> list[str]:
    """What still is not right after a repair; empty when the repair is proven."""
    problems = [f"{f.code} remains: {f.title}" for f in after.findings if f.rule.is_in(Group.COLLISION)]
    fa4 = after.facts.package(FA4_DISTRIBUTION)
    if fa4 is not None and (fa4.modified or fa4.missing):
        problems.append(
            f"{FA4_DISTRIBUTION}: {len(fa4.modified)} file(s) differ from its RECORD, {len(fa4.missing)} missing"
        )
    old, new = before.facts.package(FA2_DISTRIBUTION), after.facts.package(FA2_DISTRIBUTION)
    if old is not None:
        outside = _fa2_state(old)
        if new is None or _fa2_state(new) != outside:
            problems.append(f"{FA2_DISTRIBUTION}'s own files outside {CUTE} changed")
    return problems


def _fa2_state(fa2: Package) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """FA2 as far as FA2 itself is concerned: version and its non-cute files' state."""
    modified = tuple(m.path for m in fa2.modified if not m.path.startswith(CUTE))
    missing = tuple(p for p in fa2.missing if not p.startswith(CUTE))
    return fa2.version or "", modified, missing


def verified_lines(before: Report, after: Report) -> list[str]:
    """The before and after that a user reads: where FA4 resolves, and its files."""
    old, new = before.facts.resolution("flash_attn.cute"), after.facts.resolution("flash_attn.cute")
    lines = [f"  flash_attn.cute: {_where(old)}  ->  {_where(new)}"]
    fa4_old, fa4_new = before.facts.package(FA4_DISTRIBUTION), after.facts.package(FA4_DISTRIBUTION)
    if fa4_old is not None and fa4_new is not None and not fa4_new.editable:
        checked = fa4_new.files_hashed + fa4_new.files_size_only
        lines.append(
            f"  {FA4_DISTRIBUTION} files as installed: "
            f"{checked - len(fa4_old.modified) - len(fa4_old.missing)}/{checked}"
            f"  ->  {checked - len(fa4_new.modified) - len(fa4_new.missing)}/{checked}"
        )
    fa2 = after.facts.package(FA2_DISTRIBUTION)
    if fa2 is not None:
        lines.append(f"  {FA2_DISTRIBUTION} {fa2.version}: its own files unchanged; its RECORD no longer lists {CUTE}")
    return lines


def _where(resolution: Resolution | None) -> str:
    if resolution is None or resolution.kind == "missing":
        return "not importable"
    if resolution.kind == "namespace":
        return "an empty namespace package"
    return resolution.origin or resolution.kind
