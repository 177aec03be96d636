"""The layers of the doctor, read from its own imports: data flows one way, and nothing circles.

Bottom to top; a module may import its own layer and those below, never one above (lazy imports
inside functions count: they are dependencies all the same).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import attn_doctor

PACKAGE = Path(str(attn_doctor.__file__)).parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("attn_doctor", "attn_doctor.inputs", "attn_doctor.output"),  # bounded reading, printing
    # plain data: what every layer passes on
    ("attn_doctor.facts.model", "attn_doctor.facts.measured", "attn_doctor.facts.repairs", "attn_doctor.facts.child"),
    ("attn_doctor.registry",),  # backends, recipes, wheel sources, finding rules: data
    ("attn_doctor.facts", "attn_doctor.workload", "attn_doctor.config"),  # the collectors
    ("attn_doctor.rules",),  # the judge: checks, assess, recommend, gate
    ("attn_doctor.report",),
    ("attn_doctor.trials", "attn_doctor.actions"),
    ("attn_doctor.render",),
    ("attn_doctor.cli", "attn_doctor.entry", "attn_doctor.__main__"),
)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("attn_doctor", *path.relative_to(PACKAGE).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports() -> dict[str, set[str]]:
    """Each module -> the doctor's modules it imports, anywhere in it."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("attn_doctor"):
                for alias in node.names:
                    whole = f"{node.module}.{alias.name}"
                    graph[name].add(whole if whole in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name.startswith("attn_doctor")}
    return graph


def layer(module: str) -> int:
    """The layer of the longest prefix that names the module."""
    matches = [
        (len(prefix), index)
        for index, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    return max(matches)[1]


def test_imports_only_go_down() -> None:
    graph = imports()
    assert len(graph) > 60
    upward = [f"{m} -> {t}" for m, targets in graph.items() for t in targets if layer(t) > layer(m)]
    assert not upward, upward


def test_nothing_in_facts_imports_the_judge_or_the_actions() -> None:
    graph = imports()
    reaching = [
        f"{m} -> {t}"
        for m, targets in graph.items()
        if m.startswith("attn_doctor.facts")
        for t in targets
        if t.startswith(("attn_doctor.rules", "attn_doctor.actions", "attn_doctor.render", "attn_doctor.report"))
    ]
    assert not reaching, reaching


def test_no_module_imports_itself_back() -> None:
    """No circle of any length (Tarjan's strongly connected components)."""
    graph = imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in list(graph):
        if module not in index:
            visit(module)
    assert not circles, circles


def test_the_checker_sees_an_upward_import() -> None:
    """The layering itself: a collector reaching into the judge is upward, a judge reading facts is not."""
    assert layer("attn_doctor.facts.collect") < layer("attn_doctor.rules.diagnose")
    assert layer("attn_doctor.facts.model") < layer("attn_doctor.registry.backends") < layer("attn_doctor.facts.target")
    assert layer("attn_doctor.rules.checks.gpu") == layer("attn_doctor.rules")
