"""A check's result: the facts read, the findings judged from them, each backend's assessment, and the
gate's answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from attn_doctor.facts.measured import Measured
from attn_doctor.facts.model import Facts
from attn_doctor.registry.findings import RULES, Finding, Group, Rule, Severity
from attn_doctor.rules.assess import Assessment, assess_all
from attn_doctor.rules.diagnose import diagnose
from attn_doctor.rules.drift import drift
from attn_doctor.rules.gate import Required, RequirementResult, judge_requirement
from attn_doctor.rules.recommend import Recommendation, config_findings, recommend
from attn_doctor.workload import Workload


@dataclass(frozen=True)
class CheckRequest:
    """What `check` is asked: the CI gate's settings, the workload it judges for, the bench it ranks by."""

    require: tuple[Required, ...] = ()
    ignore: frozenset[Rule] = frozenset()
    no_gpu_ok: bool = False
    lock: dict[str, Any] | None = field(default=None, hash=False)
    workload: Workload = field(default_factory=Workload)
    measured: Measured | None = None  # `check --bench FILE`


@dataclass(frozen=True)
class Report:
    facts: Facts
    findings: tuple[Finding, ...]
    requirements: tuple[RequirementResult, ...] = ()
    ignored: tuple[Finding, ...] = ()
    recommendation: Recommendation | None = None
    # every backend's assessment, by name: what the gate, the recommendation and the package lines read
    assessments: Mapping[str, Assessment] = field(default_factory=lambda: MappingProxyType({}))

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    def fails(self, fail_on: Severity | None) -> bool:
        """True when a requirement is not met, or any finding is at or above `fail_on` (None: never)."""
        unmet = any(not r.met for r in self.requirements)
        return unmet or (fail_on is not None and any(f.severity >= fail_on for f in self.findings))


def judge(facts: Facts, asked: CheckRequest = CheckRequest()) -> Report:
    # --no-gpu-ok forgives what a machine without a GPU (a CPU-only CI runner) says of itself
    no_gpu = asked.no_gpu_ok and not facts.gpus
    forgiven = {r for r in RULES if r in asked.ignore or (no_gpu and r.is_in(Group.NO_GPU))}
    found = diagnose(facts) + (drift(facts, asked.lock) if asked.lock is not None else [])
    # an ignored finding is not judged: it weighs in no verdict either
    assessments = assess_all(facts, asked.workload, [f for f in found if f.rule not in forgiven])
    found += config_findings(facts, asked.workload, assessments)
    return Report(
        facts,
        tuple(sorted((f for f in found if f.rule not in forgiven), key=lambda f: -f.severity)),
        tuple(
            judge_requirement(r, assessments[r.backend.name], bool(facts.gpus), asked.no_gpu_ok) for r in asked.require
        ),
        tuple(f for f in found if f.rule in forgiven),
        recommend(facts, asked.workload, assessments, asked.measured),
        MappingProxyType(assessments),
    )
