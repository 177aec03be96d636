"""The command line that installs into the target environment: its own pip, or uv.

Never `sudo` and never a shell: an argv list, the target interpreter named explicitly, so what
the plan prints is exactly what runs.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass

from attn_doctor.actions.plan import Refusal
from attn_doctor.facts.model import Interpreter


@dataclass(frozen=True)
class Installer:
    command: tuple[str, ...]  # up to and including `install`, aimed at the target
    options: tuple[str, ...] = ()  # for every install: the wheelhouse, PEP 668's consent

    def install(self, *requirements: str, flags: tuple[str, ...] = ()) -> tuple[str, ...]:
        return (*self.command, *self.options, *flags, *requirements)

    def wheel(self, requirement: str, folder: str, flags: tuple[str, ...] = ()) -> tuple[str, ...]:
        """Build `requirement` into a wheel in `folder` with the target's packages (torch) and
        install nothing: pip's `wheel` command, which uv does not have."""
        if self.command[-1] != "install":  # uv's command ends with the target: `uv pip install --python X`
            raise Refusal("a wheel is built with pip (uv has no `pip wheel`): pass --installer pip")
        return (*self.command[:-1], "wheel", *self.options, "--no-deps", "--wheel-dir", folder, *flags, requirement)

    def reinstall(self, requirement: str, flags: tuple[str, ...] = ()) -> tuple[str, ...]:
        """This exact requirement's files again, its dependencies untouched (uv spells
        `--force-reinstall` as `--reinstall` and takes both)."""
        return self.install(requirement, flags=("--force-reinstall", "--no-deps", *flags))


def may_write(python: Interpreter, folder: str | None, allow_system: bool) -> None:
    """Refuse a system Python's packages (PEP 668) unless asked, and a folder we cannot write
    (None: another machine's, not checked)."""
    if python.externally_managed and not allow_system:
        raise Refusal(
            f"{python.executable} is the system's Python (PEP 668, externally managed): "
            "its packages belong to the OS package manager; pass --allow-system to change it anyway"
        )
    if folder is not None and not os.access(folder, os.W_OK):
        raise Refusal(f"cannot write {folder}: run as the owner of this environment")


def choose_installer(
    python: Interpreter,
    wanted: str | None = None,
    find_links: str | None = None,
    offline: bool = False,
    allow_system: bool = False,
) -> Installer:
    """`wanted` ("pip" or "uv") as the user asked; else uv for a venv that uv made or one
    without pip; else the target's own pip; else this interpreter's pip acting on the target
    (pip >= 22.3)."""
    kind = wanted or python.preferred_installer
    options: tuple[str, ...] = ("--no-index",) if offline else ()
    if find_links:
        options += ("--find-links", find_links)
    if allow_system and python.externally_managed:
        options += ("--break-system-packages",)
    if kind == "uv":
        if not python.uv:
            raise Refusal("--installer uv: no uv on PATH or in the target environment")
        return Installer((python.uv, "pip", "install", "--python", python.executable), options)
    if python.pip_version:
        return Installer((python.executable, "-m", "pip", "install"), options)
    if importlib.util.find_spec("pip") is not None:
        return Installer((sys.executable, "-m", "pip", "--python", python.executable, "install"), options)
    raise Refusal(f"{python.executable} has no pip and there is no uv: first run {python.executable} -m ensurepip")
