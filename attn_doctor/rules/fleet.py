"""The fleet's verdict: each node's fingerprint of what matters to attention, the nodes grouped by
it, and what each minority group has that the majority has not. Pure: nodes in, verdict out.

A multi-node job dies on its one odd node (another torch, an FA2 built for the previous torch),
so the verdict is about difference as much as about each node's own findings.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from attn_doctor.facts.model import Facts, Package
from attn_doctor.registry.findings import Finding, Severity

if TYPE_CHECKING:
    from attn_doctor.facts.fleet import Answer

# One node's facts judged as `check` judges them: its findings, and whether they fail the gate.
NodeJudge = Callable[[Facts], tuple[tuple[Finding, ...], bool]]

# The fields of the fingerprint that are not a distribution's name, in the order they are shown.
# Each is a name `--allow-drift` accepts; so is every distribution's name, and `packages` for all.
FIXED_FIELDS = ("gpu", "driver", "python", "torch")
FINDINGS_FIELD = "findings"
ALL_PACKAGES = "packages"
NOT_INSTALLED = "not installed"


@dataclass(frozen=True)
class Node:
    """One node's answer: its facts and findings as judged, or the problem that stopped its check."""

    name: str
    where: str  # the report file, or the Ray node ID
    facts: Facts | None
    findings: tuple[Finding, ...] = ()  # judged from the facts, or the one fleet finding
    fails: bool = False  # a finding at or above --fail-on, or an unmet --require

    @property
    def checked(self) -> bool:
        return self.facts is not None


@dataclass(frozen=True)
class Trait:
    """One field of a fingerprint: what is shown, and the parts compared."""

    field: str
    value: str
    parts: tuple[tuple[str, str], ...] = ()
    # who wrote the files (pip, uv): says why two RECORDs of one release differ, and is not
    # compared itself, since INSTALLER is one of RECORD's rows
    installer: str = dataclasses.field(default="", compare=False)


@dataclass(frozen=True)
class Difference:
    field: str
    text: str  # "torch 2.8.0+cu128 vs 2.9.1+cu130"
    node_value: str
    majority_value: str
    allowed: bool


@dataclass(frozen=True)
class Group:
    nodes: tuple[str, ...]
    traits: tuple[Trait, ...]
    differences: tuple[Difference, ...] = ()  # from the majority's; none for the majority itself

    @property
    def drifts(self) -> bool:
        return any(not d.allowed for d in self.differences)


@dataclass(frozen=True)
class Fleet:
    nodes: tuple[Node, ...]
    groups: tuple[Group, ...]  # the majority first
    allowed: frozenset[str] = dataclasses.field(default_factory=frozenset)

    @property
    def checked(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.checked)

    @property
    def unchecked(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if not n.checked)

    @property
    def drift(self) -> tuple[str, ...]:
        """The fields some group differs in from the majority, not allowed by --allow-drift."""
        return tuple(dict.fromkeys(d.field for g in self.groups for d in g.differences if not d.allowed))

    @property
    def failing(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.fails)

    def group_of(self, name: str) -> int | None:
        return next((i for i, g in enumerate(self.groups) if name in g.nodes), None)

    def errors(self) -> list[tuple[Node, Finding]]:
        """Every error finding with its node: what a person reads first."""
        return [(n, f) for n in self.nodes for f in n.findings if f.severity is Severity.ERROR]

    @property
    def fails(self) -> bool:
        return bool(self.failing or self.drift)


def fingerprint(facts: Facts, findings: tuple[Finding, ...]) -> tuple[Trait, ...]:
    """What matters to attention on one node. Leaves out what differs on every node by nature:
    hostname, time, paths, the toolchain, GPU UUIDs."""
    packages: dict[str, list[Package]] = {}
    for package in facts.packages:
        if package.name != "torch":  # torch has its own field, from its version.py
            packages.setdefault(package.name, []).append(package)
    return (
        _gpu(facts),
        _driver(facts),
        # compiled extensions are built per CPython minor (cp311, cp312): micro versions do not matter
        Trait("python", f"{facts.python.implementation} {'.'.join(facts.python.version.split('.')[:2])}"),
        _torch(facts),
        *(_package(name, found) for name, found in sorted(packages.items())),
        Trait(FINDINGS_FIELD, ", ".join(sorted({f.code for f in findings})) or "none"),
    )


def judge_fleet(
    answers: list[Answer], judge_node: NodeJudge, fail_on: Severity | None, allowed: frozenset[str] = frozenset()
) -> Fleet:
    """Judge each node, group the checked ones by fingerprint; the largest group is the majority,
    and each other group is described by how it differs from it."""
    nodes = []
    for answer in answers:
        if answer.facts is not None:
            findings, fails = judge_node(answer.facts)
            nodes.append(Node(answer.name, answer.where, answer.facts, findings, fails))
        else:
            problems = (answer.problem,) if answer.problem else ()
            fails = fail_on is not None and any(p.severity >= fail_on for p in problems)
            nodes.append(Node(answer.name, answer.where, None, problems, fails))
    return group_nodes(nodes, allowed)


def group_nodes(nodes: list[Node], allowed: frozenset[str] = frozenset()) -> Fleet:
    prints: dict[tuple[Trait, ...], list[str]] = {}
    for node in nodes:
        if node.facts is not None:
            prints.setdefault(fingerprint(node.facts, node.findings), []).append(node.name)
    errors = {n.name: sum(1 for f in n.findings if f.severity is Severity.ERROR) for n in nodes}
    # a tie goes to the healthier group, then to the first name: the same input, the same majority
    ranked = sorted(prints.items(), key=lambda item: (-len(item[1]), sum(errors[n] for n in item[1]), min(item[1])))
    if not ranked:
        return Fleet(tuple(nodes), (), allowed)
    majority = _complete(ranked[0][0], [p for p, _ in ranked])
    groups = [Group(tuple(ranked[0][1]), majority)]
    for traits, names in ranked[1:]:
        mine = _complete(traits, [p for p, _ in ranked])
        groups.append(Group(tuple(names), mine, _differences(mine, majority, allowed)))
    return Fleet(tuple(nodes), tuple(groups), allowed)


def _complete(traits: tuple[Trait, ...], every: list[tuple[Trait, ...]]) -> tuple[Trait, ...]:
    """The traits with a `not installed` one for each package some other node has."""
    have = {t.field for t in traits}
    missing = sorted({t.field for p in every for t in p} - have)
    added = tuple(Trait(name, NOT_INSTALLED) for name in missing)
    *head, findings = traits
    return (*_in_order((*head, *added)), findings)


def _in_order(traits: tuple[Trait, ...]) -> tuple[Trait, ...]:
    fixed = [t for name in FIXED_FIELDS for t in traits if t.field == name]
    return (*fixed, *sorted((t for t in traits if t.field not in FIXED_FIELDS), key=lambda t: t.field))


def _differences(
    mine: tuple[Trait, ...], majority: tuple[Trait, ...], allowed: frozenset[str]
) -> tuple[Difference, ...]:
    theirs = {t.field: t for t in majority}
    found = []
    for trait in mine:
        other = theirs[trait.field]
        if trait == other:
            continue
        is_package = trait.field not in (*FIXED_FIELDS, FINDINGS_FIELD)
        accepted = trait.field in allowed or (is_package and ALL_PACKAGES in allowed)
        found.append(Difference(trait.field, _describe(trait, other), trait.value, other.value, accepted))
    return tuple(found)


def _describe(mine: Trait, theirs: Trait) -> str:
    if mine.field == FINDINGS_FIELD:
        have = set(_codes(mine.value)) - set(_codes(theirs.value))
        lack = set(_codes(theirs.value)) - set(_codes(mine.value))
        return "findings: " + ", ".join([*(f"+{c}" for c in sorted(have)), *(f"-{c}" for c in sorted(lack))])
    a, b = dict(mine.parts), dict(theirs.parts)
    if a and b and a.get("version") == b.get("version"):  # same release of a package, or of torch
        if a.get("files") != b.get("files"):
            return f"{mine.field} files {a.get('files')} vs {b.get('files')}"
        if a.get("record") != b.get("record"):
            by = f" (installed by {mine.installer} vs {theirs.installer})" if mine.installer != theirs.installer else ""
            return f"{mine.field} files differ by RECORD digest{by}"
    return f"{mine.field} {mine.value} vs {theirs.value}"


def _codes(value: str) -> list[str]:
    return [] if value == "none" else value.split(", ")


def _gpu(facts: Facts) -> Trait:
    models = Counter(f"{g.name} ({g.compute_capability or g.gfx_target or g.architecture})" for g in facts.gpus)
    value = ", ".join(f"{count}x {model}" for model, count in sorted(models.items())) or "no GPU"
    return Trait("gpu", value)


def _driver(facts: Facts) -> Trait:
    driver = facts.driver
    said = []
    if driver.driver_version:
        said.append(f"{driver.driver_version} (CUDA {driver.cuda_driver_version or 'unknown'})")
    if driver.rocm_version:
        said.append(f"ROCm {driver.rocm_version}")
    return Trait("driver", ", ".join(said) or f"none ({driver.nvidia_status})")


def _torch(facts: Facts) -> Trait:
    torch = facts.torch
    if torch is None:
        return Trait("torch", "unreadable" if facts.torch_problem else NOT_INSTALLED)
    return Trait("torch", f"{torch.version} ({torch.build})", (("version", torch.version), ("build", torch.build)))


def _package(name: str, found: list[Package]) -> Trait:
    if len(found) > 1:  # two dist-infos of one name: a state of its own, shown whole
        versions = " and ".join(p.version or "?" for p in found)
        return Trait(name, f"{versions} (two dist-infos)", (("dist-infos", versions),))
    [package] = found
    files = _files(package)
    parts = (
        ("version", package.version or "unknown"),
        ("files", files),
        ("record", package.record_sha256 or ""),
    )
    shown = f"{package.version or 'unknown version'}" + (f", files {files}" if files else "")
    return Trait(name, shown, parts, package.installer or "unknown")


def _files(package: Package) -> str:
    if package.metadata_problem:
        return "metadata unreadable"
    if package.editable:
        return "editable"
    if not package.files_total:
        return ""  # RECORD is read for the verified packages only
    broken = [
        f"{len(package.modified)} modified" if package.modified else "",
        f"{len(package.missing)} missing" if package.missing else "",
    ]
    said = ", ".join(b for b in broken if b)
    return f"{said} of {package.files_total}" if said else "as installed"
