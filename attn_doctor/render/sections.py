"""The report as sections of marked lines: what the terminal and markdown renderers both show."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from attn_doctor.facts.locate import THIS_PYTHON
from attn_doctor.facts.model import Facts, Package
from attn_doctor.registry.backends import distributions, label_of, shown_module
from attn_doctor.registry.findings import Kind, Severity, Subject, distribution
from attn_doctor.report import Report

OK, ERROR, WARNING, NOTE, ABSENT = "ok", "error", "warning", "note", "absent"


@dataclass(frozen=True)
class Line:
    mark: str
    text: str
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class Section:
    title: str
    lines: list[Line] = field(default_factory=list)


def sections(report: Report) -> list[Section]:
    facts = report.facts
    marks: dict[Subject, str] = {}
    for verdict in report.assessments.values():  # an installed backend that cannot be used as it is
        if verdict.broken and verdict.backend.distribution:
            marks[distribution(verdict.backend.distribution)] = ERROR
    for f in report.findings:  # findings are sorted most severe first: the first mark wins
        if f.subject is not None:
            marks.setdefault(f.subject, ERROR if f.severity == Severity.ERROR else WARNING)
    return [
        _gpus(facts, marks),
        _python(facts),
        _torch(report),
        _packages(facts, marks),
        *([_binaries(facts)] if facts.binaries else []),
        *([_imports(facts)] if facts.imports else []),
        _toolchain(facts),
    ]


def _gpus(facts: Facts, marks: dict[Subject, str]) -> Section:
    driver = facts.driver
    section = Section("GPU")
    for g in facts.gpus:
        arch = (
            f"{g.architecture} {g.sm} (compute capability {g.compute_capability})"
            if g.compute_capability
            else (f"{g.architecture} {g.gfx_target}")
        )
        memory = f", {g.memory_mib / 1024:.0f} GiB" if g.memory_mib else ""
        mig = ", MIG on" if g.mig else ""
        physical = f" (physical {g.physical_index})" if g.physical_index not in (None, g.index) else ""
        section.lines.append(
            Line(
                marks.get(Subject(Kind.GPU, str(g.index)), OK),
                f"GPU {g.index}{physical}: {g.name}, {arch}{memory}{mig}",
                (f"uuid {g.uuid}",) if g.uuid else (),
            )
        )
    if driver.driver_version:
        section.lines.append(
            Line(OK, f"NVIDIA driver {driver.driver_version}, CUDA up to {driver.cuda_driver_version}")
        )
    elif driver.nvidia_status != "ok" and not facts.gpus:
        section.lines.append(Line(WARNING, f"no NVIDIA GPU: {driver.nvidia_detail}"))
    if driver.rocm_version:
        section.lines.append(Line(OK, f"ROCm {driver.rocm_version}"))
    if driver.cuda_visible_devices is not None:
        hidden = f" ({driver.hidden_gpus} hidden)" if driver.hidden_gpus else ""
        section.lines.append(Line(NOTE, f"CUDA_VISIBLE_DEVICES={driver.cuda_visible_devices!r}{hidden}"))
    return section


def _python(facts: Facts) -> Section:
    py = facts.python
    glibc = f", glibc {py.glibc}" if py.glibc else ""
    tools = [f"pip {py.pip_version}" if py.pip_version else "no pip", f"uv at {py.uv}" if py.uv else "no uv"]
    lines = [
        Line(
            OK,
            f"{py.implementation} {py.version} ({py.environment}) {py.executable}",
            (f"prefix {py.prefix}", *(f"site-packages {s}" for s in py.site_packages)),
        ),
        Line(NOTE, f"{py.platform}{glibc}; {', '.join(tools)}"),
    ]
    if py.externally_managed:
        lines.append(Line(NOTE, "externally managed (PEP 668)"))
    if facts.target_found_by == THIS_PYTHON:  # never judged silently: say how to judge another
        lines.append(
            Line(
                WARNING,
                "judged: the Python attn-doctor runs in (no active venv or conda env, no .venv here); "
                "--python PATH (an interpreter or an environment's folder) judges another",
            )
        )
    elif facts.target_found_by:
        lines.append(Line(NOTE, f"the target: {facts.target_found_by}"))
    return Section("Python", lines)


def _torch(report: Report) -> Section:
    facts, torch = report.facts, report.facts.torch
    if torch is None:
        return Section(
            "torch",
            [Line(ERROR if facts.torch_problem else WARNING, facts.torch_problem or "torch is not installed")],
        )
    mark = OK if torch.cuda or torch.hip else WARNING
    lines = [Line(mark, f"torch {torch.version}, {torch.build}", (f"at {torch.location}",))]
    # the backends inside torch, as their one verdict has them: shown, never judged here
    for verdict in report.assessments.values():
        backend = verdict.backend
        if not backend.in_torch:
            continue
        if not verdict.installed:
            lines.append(Line(ABSENT, f"{backend.label} needs torch >= {backend.min_torch}"))
        else:
            problems = verdict.problems
            lines.append(Line(ERROR if problems else OK, f"{backend.label} ({backend.module})", problems))
    return Section("torch", lines)


def _packages(facts: Facts, marks: dict[Subject, str]) -> Section:
    section = Section("Attention packages")
    for name in distributions():
        if name == "torch":
            continue
        copies = [p for p in facts.packages if p.name == name]
        if not copies:
            section.lines.append(Line(ABSENT, f"{label_of(name)} ({name}): not installed"))
        for package in copies:
            section.lines.append(_package_line(facts, package, marks.get(distribution(name), OK)))
    return section


def _package_line(facts: Facts, package: Package, mark: str) -> Line:
    label = label_of(package.name)
    if package.metadata_problem:
        return Line(ERROR, f"{label} ({package.name}): {package.metadata_problem}", (package.dist_info,))
    parts = [f"{label} ({package.name}) {package.version}"]
    if package.editable:
        parts.append(f"editable from {package.source_url}")
    checked = package.files_hashed + package.files_size_only
    if checked:
        bad = len(package.modified) + len(package.missing)
        parts.append(
            f"{checked - len(package.modified)}/{checked} files as installed"
            if bad
            else f"{checked} files as installed"
        )
    evidence = [f"dist-info {package.dist_info}"]
    module = shown_module(package.name)
    resolution = facts.resolution(module) if module else None
    if resolution is not None:
        where = resolution.origin or ", ".join(resolution.search_locations) or resolution.detail
        evidence.append(f"import {module} -> {resolution.kind} {where}")
    evidence += [
        f"modified: {m.path}" + (f" (now {m.now_matches}'s)" if m.now_matches else "") for m in package.modified
    ]
    evidence += [f"missing: {p}" for p in package.missing]
    return Line(mark, ", ".join(parts), tuple(evidence))


def _binaries(facts: Facts) -> Section:
    torch = f"torch {facts.torch.version}" if facts.torch else "torch"
    lines = []
    for binary in facts.binaries:
        name = f"{Path(binary.path).name} ({binary.package})"
        evidence = (
            binary.path,
            f"needs {', '.join(binary.needed)}",
            f"C++ ABI {binary.abi}, torch's {binary.torch_abi}",
        )
        if binary.error:
            lines.append(Line(WARNING, f"{name}: unreadable", (binary.error,)))
        elif binary.missing_libraries or binary.missing_symbols or binary.missing_versions:
            problems = [f"needs {lib}: not found" for lib in binary.missing_libraries]
            problems += [f"needs {n.version} from {n.library}: not defined" for n in binary.missing_versions]
            if binary.missing_symbols:
                problems.append(f"{len(binary.missing_symbols)} of {binary.torch_symbols} torch symbols missing")
            lines.append(Line(ERROR, f"{name}: {'; '.join(problems)}", evidence))
        else:
            lines.append(Line(OK, f"{name}: all {binary.torch_symbols} torch symbols exported by {torch}", evidence))
    return Section("Compiled extensions (read as ELF, nothing imported)", lines)


def _imports(facts: Facts) -> Section:
    lines = []
    for result in facts.imports:
        if result.outcome == "ok":
            lines.append(Line(OK, f"import {result.module} ({result.seconds:.1f} s)"))
        else:
            lines.append(Line(ERROR, f"import {result.module}: {result.outcome}", (result.detail,)))
    return Section("Imports (child processes: --deep, --require)", lines)


def _toolchain(facts: Facts) -> Section:
    tools = facts.toolchain
    lines = [
        Line(
            (OK if tools.nvcc else WARNING) if tools.nvcc_path else ABSENT,
            f"nvcc {tools.nvcc or '(its release unknown: see nvcc-version-unknown)'} at {tools.nvcc_path}"
            if tools.nvcc_path
            else "no nvcc",
        ),
        Line(
            OK if tools.cuda_home else ABSENT,
            f"CUDA_HOME {tools.cuda_home}" if tools.cuda_home else "no CUDA_HOME",
        ),
    ]
    for name, path in (("ninja", tools.ninja), ("C++ compiler", tools.cxx), ("git", tools.git)):
        lines.append(Line(OK if path else ABSENT, f"{name} {path}" if path else f"no {name}"))
    lines.append(Line(NOTE, f"{tools.cpus} CPUs, {tools.ram_gib:.0f} GiB RAM"))
    return Section("Build toolchain", lines)
