"""A plan: the exact steps an action will take, each one a file operation or a command.

A plan is data. `--dry-run` prints it; the runner prints the same lines and then carries them
out, so what a dry run shows is what a real run does.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass


class Refusal(Exception):
    """The action will not be attempted here; the message says why and what to do instead."""


@dataclass(frozen=True)
class MoveAside:
    """Move a file or folder into the repair's backup folder (never a bare delete)."""

    path: str
    why: str

    def describe(self) -> str:
        return f"move aside  {self.path}  ({self.why})"


@dataclass(frozen=True)
class RewriteFile:
    """Replace a file's content, keeping the original in the backup folder."""

    path: str
    content: str
    why: str

    def describe(self) -> str:
        return f"rewrite     {self.path}  ({self.why})"


@dataclass(frozen=True)
class Command:
    """Run a command. Every file under `watch` is backed up first, so that undo can put each
    folder back as it was, byte for byte, and remove what the command created."""

    argv: tuple[str, ...]
    watch: tuple[str, ...]
    why: str
    env: tuple[tuple[str, str], ...] = ()  # set for this command only, on top of the doctor's own

    def describe(self) -> str:
        settings = "".join(f"{name}={shlex.quote(value)} " for name, value in self.env)
        return f"run         {settings}{shlex.join(self.argv)}  ({self.why})"


Step = MoveAside | RewriteFile | Command


@dataclass(frozen=True)
class Plan:
    action: str  # "fix-shadow", "install-fa4"
    python: str  # the target interpreter
    prefix: str  # the target environment: its repairs are kept under it
    steps: tuple[Step, ...]
    reasons: tuple[str, ...]  # the findings the plan answers, or why these steps
    notes: tuple[str, ...] = ()  # what the user should know before saying yes

    def lines(self) -> list[str]:
        return [f"{number}. {step.describe()}" for number, step in enumerate(self.steps, 1)]
