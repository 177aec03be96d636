"""Finding codes: every code the judge emits is catalogued, and docs/findings.md is the catalog."""

from __future__ import annotations

import ast
from pathlib import Path

from attn_doctor.facts import fleet as fleet_facts
from attn_doctor.facts.imports import _CLASSES
from attn_doctor.render.catalog import render_catalog
from attn_doctor.rules import diagnose, drift, recommend
from attn_doctor.rules.backends import BACKENDS
from attn_doctor.rules.findings import RULES, rule

REPO = Path(__file__).resolve().parents[1]


def emitted_codes() -> set[str]:
    """The codes the judge's source passes to finding(...): literals, or a literal chosen by a
    conditional expression (`"a" if x else "b"`), directly or through a local name."""
    modules = (diagnose, drift, recommend, fleet_facts)
    return set().union(*(_codes_in(Path(str(module.__file__))) for module in modules))


def _codes_in(source: Path) -> set[str]:
    tree = ast.parse(source.read_text())
    named = {
        target.id: node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def literals(expression: ast.expr) -> set[str]:
        if isinstance(expression, ast.Name) and expression.id in named:
            return literals(named[expression.id])
        if isinstance(expression, ast.IfExp):
            return literals(expression.body) | literals(expression.orelse)
        return (
            {expression.value} if isinstance(expression, ast.Constant) and isinstance(expression.value, str) else set()
        )

    return {
        code
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("finding", "node_problem") and node.args
        for code in literals(node.args[0])
    }


def test_every_emitted_code_is_catalogued() -> None:
    codes = emitted_codes()
    assert len(codes) > 20
    for code in codes:
        assert rule(code).code == code
    # import findings are named after the import outcome: each outcome needs its rule
    for outcome in [o for o, _ in _CLASSES] + ["timeout", "failed"]:
        assert rule(f"import-{outcome}")


def test_no_catalogued_code_is_dead() -> None:
    dynamic = {r.code for r in RULES if r.code.startswith("import-")}
    from_registry = {bad.code for b in BACKENDS for bad in b.bad_releases}  # a backend's own bad releases
    assert {r.code for r in RULES} - dynamic == emitted_codes() | from_registry
    assert all(rule(code) for code in from_registry)


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
    from attn_doctor.render.catalog import render_backend
    from attn_doctor.rules.backends import by_name

    text = render_backend(by_name()["sage"])
    assert "not the backend: releases <2 (sageattention-v1)" in text
    assert "not the backend: builds of ==2.2.0 whose sageattention/sm90_compile.py matches" in text
    assert "on compute capability 9.0 (sageattention-hopper-no-kernel)" in text
