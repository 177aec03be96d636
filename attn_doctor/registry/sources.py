"""Where prebuilt wheels of the compiled backends are published, in the order they are trusted:
upstream's own releases, then PyTorch's index (for xFormers, which publishes to both, its index for
this torch's CUDA build before PyPI's one build), then community indexes (only with --community, and
always named in the plan). A wheel's name says its release, Python and platform; which torch and
which GPUs it fits, only its files say: `install` fetches each candidate and proves it before
choosing it (actions/recipes/prebuilt.py).

A source's `root` is what `--mirror NAME=URL` replaces: a cluster's mirror of it, or a local server
in the tests.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from attn_doctor.facts.model import Interpreter, Torch
from attn_doctor.registry.backends import FA2_DISTRIBUTION, FA3_DISTRIBUTION, XFORMERS_DISTRIBUTION
from attn_doctor.registry.recipes import FA2_WHEEL_VERSION
from attn_doctor.registry.versions import release
from attn_doctor.registry.wheels import (
    FA2_RELEASES,
    PYPI_INDEX,
    PYTORCH_INDEX,
    cuda_build,
    fa2_wheel_for,
    fa2_wheel_url,
    fa3_pytorch_index,
)


class Layout(enum.Enum):
    INDEX = "a PEP 503 index"  # <root>/<folder>/<project>/ lists the files
    LINKS = "a page of links"  # one page lists the files (pip's --find-links)
    FILE = "a release's file"  # the wheel's own URL


# (root, distribution, torch, python) -> where this source keeps a wheel for them, or None
Locate = Callable[[str, str, Torch, Interpreter], "str | None"]


@dataclass(frozen=True)
class WheelSource:
    name: str  # what --mirror names
    publisher: str  # said in the plan
    distributions: tuple[str, ...]
    root: str
    layout: Layout
    locate: Locate
    citation: str  # where a reader checks what it publishes
    community: bool = False  # used only with --community


def _dao_ailab(root: str, distribution: str, torch: Torch, python: Interpreter) -> str | None:
    wheel = fa2_wheel_for(FA2_WHEEL_VERSION, torch, python)
    return fa2_wheel_url(FA2_WHEEL_VERSION, wheel, root) if wheel else None


def _pytorch(root: str, distribution: str, torch: Torch, python: Interpreter) -> str | None:
    if distribution == FA3_DISTRIBUTION:
        return fa3_pytorch_index(torch, root)
    # xFormers' CI publishes each release to PyTorch's index per CUDA build (cu126, cu128, cu130)
    return f"{root}/{cuda_build(torch.cuda)}" if torch.cuda else None


def _pypi(root: str, distribution: str, torch: Torch, python: Interpreter) -> str | None:
    return root if torch.cuda else None  # its xFormers wheels are CUDA builds, for a CUDA torch


def _windreamer(root: str, distribution: str, torch: Torch, python: Interpreter) -> str | None:
    # one page of links per CUDA build and torch release: cu128_torch280
    torch_release = "".join(str(n) for n in release(torch.version)[:3])
    return f"{root}/{cuda_build(torch.cuda)}_torch{torch_release}" if torch.cuda else None


SOURCES = (
    WheelSource(
        "dao-ailab",
        "FlashAttention's own GitHub release",
        (FA2_DISTRIBUTION,),
        FA2_RELEASES,
        Layout.FILE,
        _dao_ailab,
        "https://github.com/Dao-AILab/flash-attention/blob/v2.8.3/.github/workflows/publish.yml",
    ),
    WheelSource(
        "pytorch",
        "PyTorch's own index",
        (FA3_DISTRIBUTION, XFORMERS_DISTRIBUTION),
        PYTORCH_INDEX,
        Layout.INDEX,
        _pytorch,
        "https://github.com/pytorch/pytorch/blob/4c8b2b20/.github/workflows/_binary-upload-flash-attention-wheel.yml; "
        "https://github.com/facebookresearch/xformers/blob/v0.0.35/README.md",
    ),
    WheelSource(
        "pypi",
        "PyPI",
        # PyPI keeps one build of each release, for one CUDA (12.8 for 0.0.35): after the index made
        # for this torch's CUDA build
        (XFORMERS_DISTRIBUTION,),
        PYPI_INDEX,
        Layout.INDEX,
        _pypi,
        "https://pypi.org/project/xformers/",
    ),
    WheelSource(
        "windreamer",
        "windreamer/flash-attention3-wheels, a community index",
        (FA3_DISTRIBUTION,),
        "https://windreamer.github.io/flash-attention3-wheels",
        Layout.LINKS,
        _windreamer,
        "https://github.com/windreamer/flash-attention3-wheels",
        community=True,
    ),
)


def sources_for(distribution: str, community: bool) -> list[WheelSource]:
    """The sources that publish `distribution`, most trusted first."""
    return [s for s in SOURCES if distribution in s.distributions and (community or not s.community)]


def source_names() -> list[str]:
    return [s.name for s in SOURCES]
