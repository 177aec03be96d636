"""Finding codes: every code the judge emits is catalogued, and docs/findings.md is the catalog."""

from __future__ import annotations

import ast
from pathlib import Path

import attn_doctor
from attn_doctor.facts.imports import _CLASSES
from attn_doctor.registry import findings
from attn_doctor.registry.findings import IMPORT_OUTCOMES, RULES, Rule, rule
from attn_doctor.render.catalog import render_catalog

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(str(attn_doctor.__file__)).parent
CATALOG = Path(str(findings.__file__))

# Driver.nvidia_status values (facts/gpu.py): a fact's own vocabulary, kept in saved reports, that
# happens to spell the rule each status raises; only the NVML reader and its check may write them.
NVML_STATUSES = {"no-gpu", "nvml-library-missing", "driver-not-loaded", "driver-mismatch", "nvml-error"}
NVML_MODULES = {PACKAGE / "facts" / "gpu.py", PACKAGE / "rules" / "checks" / "gpu.py"}


def _sources() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p != CATALOG]


def test_every_rule_constant_is_in_the_catalog_once() -> None:
    constants = [value for name, value in vars(findings).items() if isinstance(value, Rule) and name.isupper()]
    assert len(constants) == len(RULES) > 50
    assert set(constants) == set(RULES)
    assert all(rule(r.code) is r for r in RULES)
    assert rule("no-such-code") is None


def test_no_finding_code_is_written_as_a_string_outside_its_rule() -> None:
    """Layers pass the rule constants: a code spelled as a string elsewhere is a miss waiting for a typo."""
    codes = {r.code for r in RULES}
    spelled = []
    for source in _sources():
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Constant) and node.value in codes:
                if source in NVML_MODULES and node.value in NVML_STATUSES:
                    continue
                spelled.append(f"{source.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not spelled, spelled


def test_every_rule_is_raised_somewhere() -> None:
    """Each constant is named outside the catalog (import outcomes through IMPORT_OUTCOMES)."""
    named = {
        node.id if isinstance(node, ast.Name) else node.attr
        for source in _sources()
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Name | ast.Attribute)
    }
    by_outcome = set(IMPORT_OUTCOMES.values())
    dead = [name for name, value in vars(findings).items() if value in RULES and name not in named]
    assert not [name for name in dead if vars(findings)[name] not in by_outcome], dead


def test_every_import_outcome_has_its_rule() -> None:
    assert set(IMPORT_OUTCOMES) == {o for o, _ in _CLASSES} | {"timeout", "failed"}
    assert all(r.code == f"import-{o}" for o, r in IMPORT_OUTCOMES.items())


def test_codes_are_unique_and_stable_shaped() -> None:
    codes = [r.code for r in RULES]
    assert len(codes) == len(set(codes))
    assert all(c == c.lower() and " " not in c for c in codes)


def test_docs_are_generated_from_the_catalog() -> None:
    assert (REPO / "docs" / "findings.md").read_text() == render_catalog(RULES, markdown=True), (
        "docs/findings.md is stale: attn-doctor explain --markdown > docs/findings.md"
    )


def test_report_schema_doc_lists_every_field() -> None:
    import dataclasses

    from attn_doctor.facts import model

    doc = (REPO / "docs" / "report-schema.md").read_text()
    classes = [
        model.Facts,
        model.Gpu,
        model.Driver,
        model.Interpreter,
        model.Torch,
        model.Package,
        model.Resolution,
        model.Toolchain,
        model.ImportResult,
        model.HubKernel,
        model.ModifiedFile,
        model.SharedFiles,
        model.Binary,
    ]
    missing = [f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c) if f"`{f.name}`" not in doc]
    assert not missing, f"docs/report-schema.md does not describe {missing}"
    assert f'`"{model.SCHEMA}"`' in doc


def test_explain_says_which_builds_a_file_tells_apart() -> None:
    """SageAttention 2.2.0 is broken on Hopper only as built from its tag: explain must not call
    every 2.2.0 'not the backend'."""
    from attn_doctor.registry.backends import by_name
    from attn_doctor.render.catalog import render_backend

    text = render_backend(by_name()["sage"])
    assert "not the backend: releases <2 (sageattention-v1)" in text
    assert "not the backend: builds of ==2.2.0 whose sageattention/sm90_compile.py matches" in text
    assert "on compute capability 9.0 (sageattention-hopper-no-kernel)" in text
