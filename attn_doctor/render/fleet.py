"""The fleet report: terminal, JSON (schema attn-doctor/fleet-1, docs/report-schema.md), markdown
and JUnit (a test case per node). The majority group first, then each group that differs, with
what differs; then every error with its node."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from rich.console import Console
from rich.markup import escape

from attn_doctor.registry.findings import Severity
from attn_doctor.render.junit import document
from attn_doctor.rules.fleet import Fleet, Group, Node

FLEET_SCHEMA = "attn-doctor/fleet-1"
SHOWN_NAMES = 8  # a group of 900 nodes is named by its first few; JSON names them all


def fleet_data(fleet: Fleet, source: str, exit_code: int) -> dict[str, Any]:
    return {
        "schema": FLEET_SCHEMA,
        "source": source,
        "groups": [
            {
                "nodes": list(group.nodes),
                "majority": index == 0,
                "fingerprint": {t.field: t.value for t in group.traits},
                "differences": [
                    {
                        "field": d.field,
                        "text": d.text,
                        "value": d.node_value,
                        "majority_value": d.majority_value,
                        "allowed": d.allowed,
                    }
                    for d in group.differences
                ],
            }
            for index, group in enumerate(fleet.groups)
        ],
        "nodes": [
            {
                "name": node.name,
                "where": node.where,
                "checked": node.checked,
                "group": fleet.group_of(node.name),
                "fails": node.fails,
                "hostname": node.facts.hostname if node.facts else None,
                "collected_at": node.facts.collected_at if node.facts else None,
                "doctor_version": node.facts.doctor_version if node.facts else None,
                "findings": [
                    {"code": f.code, "severity": f.severity.label, "title": f.title, "fix": list(f.fix)}
                    for f in node.findings
                ],
            }
            for node in fleet.nodes
        ],
        "drift": list(fleet.drift),
        "allowed_drift": sorted(fleet.allowed),
        "summary": {
            "nodes": len(fleet.nodes),
            "checked": len(fleet.checked),
            "groups": len(fleet.groups),
            "failing_nodes": len(fleet.failing),
            "errors": len(fleet.errors()),
            "exit_code": exit_code,
        },
    }


def render_fleet_json(fleet: Fleet, source: str, exit_code: int) -> str:
    return json.dumps(fleet_data(fleet, source, exit_code), indent=2) + "\n"


def differs_line(group: Group) -> str:
    """`node-17: torch 2.8.0+cu128 vs 2.9.1+cu130; flash-attn files differ by RECORD digest`"""
    said = "; ".join(d.text + (" (allowed)" if d.allowed else "") for d in group.differences)
    return f"{_names(group.nodes)}: {said}"


def headline(fleet: Fleet, source: str) -> str:
    return f"{len(fleet.nodes)} node(s) from {source}: {len(fleet.checked)} checked, {len(fleet.groups)} group(s)"


def verdict(fleet: Fleet) -> str:
    said = []
    if fleet.failing:
        said.append(f"{len(fleet.failing)} node(s) failing")
    if fleet.drift:
        said.append(f"nodes differ in {', '.join(fleet.drift)}")
    if said:
        return "problems found: " + "; ".join(said)
    allowed = sorted({d.field for g in fleet.groups for d in g.differences})
    return "no node failing" + (f"; differences allowed: {', '.join(allowed)}" if allowed else ", every node alike")


def render_fleet_terminal(fleet: Fleet, source: str, console: Console) -> None:
    console.print(f"[bold]Fleet[/] {escape(headline(fleet, source))}", highlight=False)
    for index, group in enumerate(fleet.groups):
        if index == 0:
            console.print(f"  [green]✓[/] majority, {len(group.nodes)} node(s): {escape(_names(group.nodes))}")
            console.print(f"      [dim]{escape(_fingerprint(group))}[/]", highlight=False)
        else:
            mark = "[red]✗[/]" if group.drifts else "[yellow]![/]"
            console.print(f"  {mark} {len(group.nodes)} node(s) differ: {escape(differs_line(group))}", highlight=False)
    unchecked = fleet.unchecked
    if unchecked:
        console.print("[bold]Not checked[/]")
    for node in unchecked:
        for f in node.findings:
            severity = "[red]✗[/]" if f.severity is Severity.ERROR else "[yellow]![/]"
            console.print(f"  {severity} {escape(node.name)} [dim]\\[{f.code}][/] {escape(f.title)}", highlight=False)
    errors = [(n, f) for n, f in fleet.errors() if n.checked]
    if errors:
        console.print("[bold]Errors[/]")
    for node, f in errors:
        console.print(f"  [red]✗[/] {escape(node.name)} [dim]\\[{f.code}][/] {escape(f.title)}", highlight=False)
        for command in f.fix:
            console.print(f"      [bold]$[/] {escape(command)}", highlight=False, soft_wrap=True)
    console.print(f"\n{escape(verdict(fleet))}", highlight=False)


def render_fleet_markdown(fleet: Fleet, source: str) -> str:
    out = [f"## attn-doctor fleet: {headline(fleet, source)}", ""]
    for index, group in enumerate(fleet.groups):
        if index == 0:
            out += [f"- ✓ majority, {len(group.nodes)} node(s): {_names(group.nodes)}", f"  - `{_fingerprint(group)}`"]
        else:
            out.append(f"- {'✗' if group.drifts else '!'} {len(group.nodes)} node(s) differ: {differs_line(group)}")
    if fleet.unchecked:
        out += ["", "### Not checked", ""]
    for node in fleet.unchecked:
        out += [f"- ✗ **{node.name}** `{f.code}`: {f.title}" for f in node.findings]
    errors = [(n, f) for n, f in fleet.errors() if n.checked]
    if errors:
        out += ["", "### Errors", ""]
    for node, f in errors:
        out.append(f"- ✗ **{node.name}** `{f.code}`: {f.title}")
        if f.fix:
            out += ["  ```sh", *(f"  {command}" for command in f.fix), "  ```"]
    out += ["", verdict(fleet), ""]
    return "\n".join(out)


def render_fleet_junit(fleet: Fleet, source: str) -> str:
    """A test case per node: it fails on a finding at or above --fail-on, on a difference from the
    majority that --allow-drift does not accept, or when it could not be checked."""
    suite = ET.Element("testsuite", name=f"attn-doctor fleet ({source})")
    failures = 0
    for node in fleet.nodes:
        case = ET.SubElement(suite, "testcase", classname="attn-doctor.fleet", name=node.name)
        index = fleet.group_of(node.name)
        group = fleet.groups[index] if index is not None else None
        reasons = _failing(node) + ([differs_line(group)] if group is not None and group.drifts else [])
        if reasons:
            failures += 1
            failure = ET.SubElement(case, "failure", message=reasons[0], type="fleet")
            failure.text = "\n".join(reasons)
        elif node.findings:
            ET.SubElement(case, "system-out").text = "\n".join(f"{f.severity.label}: {f.title}" for f in node.findings)
    return document(suite, failures)


def _failing(node: Node) -> list[str]:
    if not node.fails:
        return []
    # an unmet --require fails a node with no finding at all
    return [f"{f.severity.label} [{f.code}] {f.title}" for f in node.findings] or ["a --require is not met"]


def _names(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")


def _fingerprint(group: Group) -> str:
    return " · ".join(f"{t.field} {t.value}" for t in group.traits)
