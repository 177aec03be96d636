"""Requires-Dist judged as `pip check` judges it: the quick path and packaging's parser agree."""

from __future__ import annotations

import dataclasses

import pytest

from attn_doctor.facts.model import Installed, Markers, Package
from attn_doctor.facts.saved import load_facts
from attn_doctor.rules.requirements import _parsed, unmet
from tests.conftest import FIXTURES

LINUX = Markers(
    "cpython", "3.12.3", "posix", "x86_64", "CPython", "6.8.0", "Linux", "#1 SMP", "3.12.3", "3.12", "linux"
)
INSTALLED = (Installed("torch", "2.11.0"), Installed("einops", "0.8.2"), Installed("triton", "3.6.0"))


@pytest.mark.parametrize(
    ("line", "met"),
    [
        ("einops", True),
        ("einops>=0.8", True),
        ("einops (>=0.9)", False),
        ("nvidia-cutlass-dsl>=4.6.2", False),
        ('optree>=0.13.0; extra == "optree"', True),  # only an extra asks for it
        ('triton==3.6.0; platform_system == "Linux" and platform_machine == "x86_64"', True),
        ('pywin32; sys_platform == "win32"', True),  # not for this platform
        ('nvidia-nccl-cu13==2.28.9; platform_system == "Linux"', False),
        ("torch>=2.12", False),
        ('apache-tvm-ffi<0.2,>=0.1.11; python_version >= "3.9"', False),
        ("einops[extra]>=0.8", True),
    ],
)
def test_a_requirement_line(line: str, met: bool) -> None:
    facts = load_facts(FIXTURES / "machines" / "h100.json")
    facts = dataclasses.replace(facts, installed=INSTALLED, python=dataclasses.replace(facts.python, markers=LINUX))
    package = Package("flash-attn-4", "4.0.0b36", "/site/flash_attn_4-4.0.0b36.dist-info", "/site", requires=(line,))
    found = unmet(package, facts)
    assert (not found) is met
    parsed = _parsed(line, {i.name: i.version for i in INSTALLED}, facts)
    assert (parsed is None) is met  # the quick answer is the parser's


def test_a_report_without_the_installed_list_says_nothing() -> None:
    """Reports saved before `installed` was read cannot be judged for requirements: no guess."""
    facts = load_facts(FIXTURES / "h100-check.json")
    package = Package("x", "1", "/d", "/s", requires=("nothing-installed",))
    assert not facts.installed and unmet(package, facts) == []


def test_the_real_h100_torch_meets_its_requirements() -> None:
    """Read on the H100 (torch 2.11.0+cu130 with its 17 requirements, 198 distributions): no false
    alarm on a real CUDA torch; FA4 installed there with --no-deps, the real unmet ones."""
    from attn_doctor.report import judge

    healthy = load_facts(FIXTURES / "h100-check-requirements.json")
    torch = healthy.package("torch")
    assert torch is not None and len(torch.requires) == 17 and len(healthy.installed) == 198
    assert not [f for f in judge(healthy).findings if f.severity.label == "error"]
    colliding = judge(load_facts(FIXTURES / "h100-fa2-over-fa4-requirements.json"))
    [unmet_fa4] = [f for f in colliding.findings if f.code == "package-requirements-unmet"]
    assert "nvidia-cutlass-dsl>=4.6.2 is not installed" in unmet_fa4.title  # what `No module named 'cutlass'` was
    assert "einops" not in unmet_fa4.title  # there, from the machine's own torch environment
