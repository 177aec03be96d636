"""fix-shadow's run: the plan carried out under the runner's protocol, then proven by collecting
the facts again and judging them as `check` does."""

from __future__ import annotations

from collections.abc import Callable

from attn_doctor.actions.plan import Plan
from attn_doctor.actions.runner import carry_out_checked
from attn_doctor.actions.shadow import verified_lines, verify
from attn_doctor.facts.collect import collect
from attn_doctor.facts.locate import TargetError
from attn_doctor.report import Report, judge


def carry_out_fix_shadow(plan: Plan, before: Report, python: str | None, say: Callable[[str], None]) -> list[str]:
    """The lines that show the repair worked. Raises the runner's Undone (a failed repair is
    put back) or RunnerError (another action holds the environment: nothing changed)."""
    after: list[Report] = []

    def check() -> list[str]:
        try:
            after.append(judge(collect(python)))
        except TargetError as error:
            return [str(error)]
        return verify(before, after[0])

    carry_out_checked(plan, check, say)
    return verified_lines(before, after[0])
