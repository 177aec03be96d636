"""verify's and bench's results for a reader (text) and for a program (JSON)."""

from __future__ import annotations

import json
import math

from rich.console import Console
from rich.table import Table

from attn_doctor.facts.measured import Measured
from attn_doctor.facts.model import Facts
from attn_doctor.trials.run import Outcome
from attn_doctor.trials.verify import Verdict

_MARK = {"passed": "ok", "wrong": "WRONG", "missing-kernel": "MISSING KERNEL", "crashed": "CRASHED"}


def _worst(outcome: Outcome) -> str:
    if not outcome.errors:
        return ""
    name, value = max(outcome.errors, key=lambda item: math.inf if math.isnan(item[1]) else item[1])
    return f"{value:.1e} ({name})"


def where(facts: Facts) -> str:
    """The GPU and torch a trial ran on, for its heading."""
    gpu = facts.gpus[0] if facts.gpus else None
    device = f"{gpu.name} ({gpu.target})" if gpu else "the CPU (no GPU)"
    return f"{device}, torch {facts.torch.version if facts.torch else '-'}"


def render_verdicts(verdicts: list[Verdict], where: str, console: Console, verbose: bool) -> None:
    console.print(f"Verified on {where}, against a float32 reference:")
    for verdict in verdicts:
        passed = sum(o.status == "passed" for o in verdict.outcomes)
        label = f"{verdict.backend.name:<9}{passed}/{len(verdict.outcomes)} passed"
        console.print(f"  {label}" + ("" if verdict.passed else "   [bold red]FAILED[/]"), highlight=False)
        shown = [o for o in verdict.outcomes if verbose or o.status != "passed"]
        if not verbose and len(shown) > 1 and len({(o.status, o.message) for o in shown}) == 1:
            shown = [Outcome(o.backend, f"all {len(shown)} cases", o.status, o.message) for o in shown[:1]]
        for outcome in shown:
            detail = outcome.message or _worst(outcome)
            mark = _MARK.get(outcome.status, outcome.status.upper())
            console.print(f"      {outcome.case:<30} {mark:<15} {detail}", highlight=False, markup=False)
        if not verdict.backend.trains and verdict.passed:
            console.print("      forward only: it has no backward pass", highlight=False)
        if verdict.check_reasons:  # not counted against the command: check already says why
            said = f"      check calls it unusable: {verdict.check_reasons[0]}"
            console.print(said, highlight=False, markup=False, soft_wrap=True)
            if verdict.check_fix:  # a command is never wrapped: it is copied
                console.print(f"      fix: {verdict.check_fix}", highlight=False, markup=False, soft_wrap=True)


def verdicts_json(verdicts: list[Verdict], where: str, code: int) -> str:
    data = {
        "schema": "attn-doctor/verify-1",
        "where": where,
        "exit_code": code,
        "backends": [
            {
                "backend": v.backend.name,
                "passed": v.passed,
                "usable_per_check": v.usable_per_check,
                "check_reasons": list(v.check_reasons),
                "check_fix": v.check_fix,
                "cases": [
                    {"case": o.case, "status": o.status, "message": o.message, "errors": dict(o.errors)}
                    for o in v.outcomes
                ],
            }
            for v in verdicts
        ],
    }
    return json.dumps(data, indent=2) + "\n"


def render_measured(measured: Measured, console: Console) -> None:
    ceiling = f"; bf16 matmul {measured.matmul_tflops:.0f} TFLOP/s" if measured.matmul_tflops else ""
    console.print(
        f"Bench on {measured.gpu}, torch {measured.torch}, bf16, causal{ceiling} "
        "(median ms and TFLOP/s; x SDPA = speed relative to SDPA)",
        highlight=False,
    )
    table = Table(box=None, pad_edge=False)
    for title in ("shape BxSxHxD", "backend", "fwd ms", "TFLOP/s", "x SDPA", "fwd+bwd ms", "TFLOP/s", "x SDPA"):
        table.add_column(title, justify="left" if title in ("shape BxSxHxD", "backend") else "right")
    shapes = list(dict.fromkeys(t.shape for t in measured.timings))
    backends = list(dict.fromkeys(t.backend for t in measured.timings))
    for shape in shapes:
        for backend in backends:
            cells = []
            for mode in ("fwd", "fwd+bwd"):
                timing = measured.timing(backend, shape, mode)
                base = measured.tflops("sdpa", shape, mode)
                if timing is None:
                    cells += ["-", "-", "-"]
                else:
                    ratio = f"{timing.tflops / base:.2f}" if base else "-"
                    cells += [f"{timing.ms:.3f}", f"{timing.tflops:.3g}" + ("*" if timing.host_bound else ""), ratio]
            table.add_row(shape, backend, *cells)
    console.print(table)
    if any(t.host_bound for t in measured.timings):
        console.print(
            "  * host-bound: the host issued these calls no faster than the GPU ran them; timed with the calls "
            "queued ahead, so the figure is the GPU's. A training step made of such calls (a small model at "
            "short sequences) runs at the host's pace.",
            highlight=False,
            markup=False,
        )
    for backend, why in measured.failed:
        console.print(f"  not timed: {backend}: {why}", highlight=False, markup=False)
    ranking = measured.fastest()
    if ranking:
        console.print(
            "Fastest fwd+bwd (mean TFLOP/s over the shapes): "
            + ", ".join(f"{name} {value:.3g}" for name, value in ranking),
            highlight=False,
        )
