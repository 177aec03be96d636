"""What every recipe is given (the facts, the installer, the request) and the pip step they all share."""

from __future__ import annotations

from dataclasses import dataclass

from attn_doctor.actions.installer import Installer
from attn_doctor.actions.plan import Command, Step
from attn_doctor.facts.model import Facts, Torch


@dataclass(frozen=True)
class InstallRequest:
    backend: str  # one of INSTALLABLE
    installer: str | None = None  # "pip" | "uv"; None: as the environment suggests
    find_links: str | None = None  # a local wheelhouse
    offline: bool = False  # the index is not used at all
    force: bool = False  # plan even where the checks say it cannot run here
    allow_system: bool = False  # a PEP 668 system Python
    sources: tuple[str, ...] = ()  # local trees or archives to build from, instead of fetching (fa2, fa3, sage)
    head_dims: tuple[tuple[int, int], ...] = ()  # (q/k, v) each: FA3 builds only the kernels these need


# What --source can build: the backends compiled from a source tree
FROM_SOURCE = ("fa2", "fa3", "sage")


@dataclass(frozen=True)
class RecipeContext:
    facts: Facts
    torch: Torch
    installer: Installer
    watch: tuple[str, ...]
    request: InstallRequest

    @property
    def torch_pin(self) -> str:
        """The installed torch by its distribution's version: torch's version.py may say
        2.11.0+cu130 where the dist-info says 2.11.0, and only the latter is what pip matches
        against the installed torch (seen on the H100: `torch==2.11.0+cu130` found nothing)."""
        package = self.facts.package("torch")
        return f"torch=={package.version if package and package.version else self.torch.version}"


Recipe = tuple[list[Step], list[str], str, str | None]


def pip_step(context: RecipeContext, why: str, *requirements: str, flags: tuple[str, ...] = (), **env: str) -> Command:
    argv = context.installer.install(*requirements, context.torch_pin, flags=flags)
    return Command(argv, context.watch, why, tuple(sorted(env.items())))
