"""The backend registry: everything the doctor knows about each attention backend, said once.

Each backend is one `Backend` record: its distributions, the modules that prove it loads, which
GPUs each of its releases runs on, its torch/ROCm floors, head-dim rules, what it can train, the
Axolotl line that selects it, where it ranks, its own bad releases, and how to install it. The
probe's request, the package labels, the `--deep` imports, the CLI's choices, `explain`, the
gate, the recommendation and `verify` are all derived from `BACKENDS`; a backend added here
appears in each of them. Every rule carries its source, a page a user can open.

GPU support is by compute capability for NVIDIA (a "major.minor" listed, or any minor of a
listed major) and by gfx target for AMD; `None` means "not limited by this table".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from packaging.version import Version

from attn_doctor.facts.model import Facts, Gpu, Interpreter, Torch
from attn_doctor.registry.findings import (
    FLASH_ATTN_4_PLACEHOLDER,
    RELEASE_BROKEN_HERE,
    SAGEATTENTION_HOPPER_NO_KERNEL,
    SAGEATTENTION_V1,
    Rule,
)
from attn_doctor.registry.hub import CACHE_VARIABLES, KERNELS_SOURCE, OFFLINE_VARIABLES
from attn_doctor.registry.recipes import FA2_WHEEL_VERSION
from attn_doctor.registry.sdpa import HAZARDS as SDPA_HAZARDS
from attn_doctor.registry.sdpa import SDPA_MODULE, SdpaHazard
from attn_doctor.registry.versions import in_range, release
from attn_doctor.registry.wheels import fa2_wheel_for

FA = "https://github.com/Dao-AILab/flash-attention"
AXOLOTL = "https://github.com/axolotl-ai-cloud/axolotl/blob/v0.18.0"
SAGE = "https://github.com/thu-ml/SageAttention"
XFORMERS = "https://github.com/facebookresearch/xformers"

# The day these rules were last checked against upstream (releases, issue threads, the files at
# their tags): `--version` and the JSON report carry it, and a release newer than the newest each
# backend's rules were checked against is said to be so (release-newer-than-rules).
RULES_CHECKED = "2026-12-06"
TORCH_CHECKED_UP_TO = "2.15.0"  # the newest torch these rules know (its builds, SDPA's kernels, flex)
# the newest releases of the dependencies whose combinations the bad releases name (FA4's).
# nvidia-cutlass-dsl 4.8.1: FA4 4.0.0b36 verified with it on an H100 (torch 2.11.0+cu130, against
# the float32 reference: tests/fixtures/h100-fa2-sage-fa3-fa4.txt); the 4.8 development wheels'
# regressions were fixed before the release (https://github.com/NVIDIA/cutlass/issues/3594,
# https://github.com/NVIDIA/cutlass/issues/3595)
DEPENDENCIES_CHECKED_UP_TO = {"nvidia-cutlass-dsl": "4.8.1", "quack-kernels": "0.6.5", "triton": "3.9.0"}

# the distributions whose files and collisions some checks and actions handle by name
FA2_DISTRIBUTION = "flash-attn"
FA3_DISTRIBUTION = "flash-attn-3"
FA4_DISTRIBUTION = "flash-attn-4"
XFORMERS_DISTRIBUTION = "xformers"
KERNELS_DISTRIBUTION = "kernels"
TRANSFORMERS_DISTRIBUTION = "transformers"


@dataclass(frozen=True)
class Support:
    """The GPUs that the releases in `versions` (a PEP 440 specifier; "" = every release) run on."""

    versions: str
    nvidia: tuple[str, ...] | None  # "8" = any 8.x; "9.0" = exactly 9.0; () = none
    amd: tuple[str, ...] | None  # gfx targets; () = none
    source: str
    backward: tuple[str, ...] | None = None  # the NVIDIA GPUs it trains on, where fewer than it runs on

    def runs_on(self, gpu: Gpu) -> bool:
        if gpu.vendor == "amd":
            return self.amd is None or gpu.gfx_target in self.amd
        if self.nvidia is None:
            return True
        capability = gpu.compute_capability or ""
        return capability in self.nvidia or capability.split(".")[0] in self.nvidia

    def trains_on(self, gpu: Gpu) -> bool:
        if gpu.vendor != "nvidia" or self.backward is None:
            return True
        capability = gpu.compute_capability or ""
        return capability in self.backward or capability.split(".")[0] in self.backward


@dataclass(frozen=True)
class HeadDimLimit:
    """Head dims above `max_head_dim` are refused by the releases in `versions` on every NVIDIA
    GPU but `except_on` (capabilities), or only on `only_on` where given, in the backward pass
    only when `backward_only`."""

    max_head_dim: int
    source: str
    versions: str = ""
    except_on: tuple[str, ...] = ()
    backward_only: bool = False
    refused_up_to: int | None = None  # only head dims up to this one are refused
    only_on: tuple[str, ...] = ()
    why: str = ""  # what fails, and what to do about it, where the limit is no plain upstream check

    def refuses(self, version: str | None, gpu: Gpu | None, head_dim: int, training: bool) -> bool:
        if head_dim <= self.max_head_dim or (self.backward_only and not training):
            return False
        if self.refused_up_to is not None and head_dim > self.refused_up_to:
            return False
        # a limit of some releases only (the old ones) is not the newest release's (version None)
        if self.versions and (version is None or not in_range(version, self.versions)):
            return False
        if self.only_on:
            return gpu is not None and gpu.vendor == "nvidia" and gpu.compute_capability in self.only_on
        return gpu is None or gpu.vendor != "nvidia" or gpu.compute_capability not in self.except_on


@dataclass(frozen=True)
class FileMark:
    """What tells a broken build from a good one where both carry the same version: a pattern in
    one of its installed files, and the GPUs on which the fault bites."""

    path: str  # as RECORD names it, relative to site-packages
    pattern: str  # a regular expression found in the broken build's file only
    capabilities: tuple[str, ...] = ()  # compute capabilities where it bites; empty: all


@dataclass(frozen=True)
class BadRelease:
    """Releases that install but are not the backend (a placeholder, another major), builds of a
    release that are broken (told by a FileMark), or releases broken only on some GPUs or next to
    some release of a dependency."""

    versions: str
    rule: Rule  # the finding it raises
    title: str  # "{version}" is the installed one
    source: str
    mark: FileMark | None = None
    capabilities: tuple[str, ...] = ()  # it bites only where a GPU of these is; empty: everywhere
    beside: tuple[tuple[str, str], ...] = ()  # (distribution, versions): it bites only next to these
    fix: str = ""  # a requirement that mends it (pip's form), where the backend's own install is not it

    def found(self, distribution: str, version: str | None, facts: Facts) -> bool:
        """Whether this installed release is the bad one, here."""
        if version is None or not in_range(version, self.versions):
            return False
        here = {g.compute_capability for g in facts.gpus}
        if self.capabilities and not here & set(self.capabilities):
            return False
        installed = {i.name: i.version for i in facts.installed}
        if any(not in_range(installed.get(name) or "", spec) for name, spec in self.beside):
            return False
        if self.mark is None:
            return True
        bites = not self.mark.capabilities or bool(here & set(self.mark.capabilities))
        return bites and f"{distribution}:{self.mark.path}" in facts.marked_files


@dataclass(frozen=True)
class Lookalike:
    """Another distribution that installs this backend's module under another name."""

    distribution: str
    versions: str
    what: str
    instead: str  # the backend it really is

    def title(self, version: str) -> str:
        return f"{self.distribution} {version} is {self.what}"


@dataclass(frozen=True)
class Backend:
    name: str  # what --require, install, verify and explain take: "fa2"
    label: str
    distribution: str | None  # None: part of torch (sdpa, flex)
    module: str  # the import that proves it loads, compiled parts included
    support: tuple[Support, ...]  # the first whose versions hold the installed version decides
    install: str  # how to get it, as a fix
    source: str
    resolve: tuple[str, ...] = ()  # modules whose resolution `check` reads; the first is shown
    verified: bool = False  # its files are checked against RECORD
    min_torch: str | None = None
    axolotl_min_torch: str | None = None  # where Axolotl's config validator asks for a newer torch
    min_rocm: str | None = None  # the HIP/ROCm version of torch's build, on AMD
    trains: bool = True  # has a backward pass
    varlen: bool = False  # a packed-sequence API
    head_dims: tuple[HeadDimLimit, ...] = ()
    # a backend's own head-dim rule beyond simple limits: (cc major, dim, dim_v) -> accepted; None: not checked
    head_dim_rule: Callable[[int, int, int], bool | None] | None = None
    head_dim_rule_version: str = ""  # the release whose rule head_dim_rule encodes
    axolotl: str = ""  # the config line that selects it
    axolotl_names: tuple[str, ...] = ()  # its attn_implementation values
    # position in the recommendation per GPU class (ranking.gpu_class); lower goes first
    ranks: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    why: str = ""  # why it is chosen, when it is
    caveats: tuple[str, ...] = ()
    bad_releases: tuple[BadRelease, ...] = ()
    lookalikes: tuple[Lookalike, ...] = ()
    installable: bool = False  # `attn-doctor install NAME` has a recipe (actions/install.py)
    verifiable: bool = False  # trials/kernel.py has its adapter (by name): verify and bench run it
    quantized: bool = False  # int8 inside by design: verify allows it a larger error
    # it trains on Hopper only where its installed files carry the SM90 backward (Facts.fa4_sm90_backward)
    hopper_backward_from_files: bool = False
    # what it runs through: a finding that one of these cannot run on a GPU here (Group.CANNOT_RUN_HERE)
    # makes this backend unusable too
    runs_through: tuple[str, ...] = ()
    compiled_by_dynamo: bool = False  # its kernels come from torch.compile: DYNAMO_PYTHON's floors apply
    # torch and cuDNN releases on which it picks a kernel known to go wrong on some GPUs (SDPA)
    hazards: tuple[SdpaHazard, ...] = ()
    checked_up_to: str = ""  # the newest release its rules were checked against (RULES_CHECKED)
    requires: tuple[str, ...] = ()  # other distributions it serves through (transformers loads a Hub kernel)
    # the backend that serves the same kernels prebuilt (from the Hugging Face Hub): the choice where
    # this one would have to be compiled here and there is no compiler
    hub_route: str = ""
    # the prebuilt wheel its install takes for this torch and Python; None: none, so it compiles
    release_wheel: Callable[[Torch, Interpreter], str | None] | None = None

    def compiles_here(self, facts: Facts) -> bool:
        """Its install would compile here: a CUDA torch no release wheel of it is built for."""
        torch = facts.torch
        return bool(torch and torch.cuda and self.release_wheel and self.release_wheel(torch, facts.python) is None)

    def support_for(self, version: str | None) -> Support:
        """The rule of the installed version, else of the newest release (what an install brings)."""
        if version is not None:
            for rule in self.support:
                if in_range(version, rule.versions):
                    return rule
        return self.support[0]

    def runs_on(self, gpu: Gpu, version: str | None = None) -> bool:
        return self.support_for(version).runs_on(gpu)

    def bad_releases_found(self, version: str | None, facts: Facts) -> list[BadRelease]:
        """The bad releases (or builds) the installed version is, here: one reading for the
        findings and the assessment."""
        return [b for b in self.bad_releases if self.distribution and b.found(self.distribution, version, facts)]

    def lookalikes_found(self, version: str | None) -> list[Lookalike]:
        return [like for like in self.lookalikes if version is not None and in_range(version, like.versions)]

    def releases_to_plan(self, versions: Iterable[str], facts: Facts) -> list[str]:
        """Of these releases, the ones worth planning here, newest first: none known bad here, none
        another backend's under this name (FA3's beta as flash_attn 3.0.0b1); pre-releases only where
        there is no final release (flash-attn-4 has only those)."""
        fitting = {v for v in versions if not self.bad_releases_found(v, facts) and not self.lookalikes_found(v)}
        finals = [v for v in fitting if not Version(v).is_prerelease]
        return sorted(finals or fitting, key=Version, reverse=True)

    def needs_newer_torch(self, torch_version: str, for_axolotl: bool = False) -> bool:
        """Whether this torch is older than the backend's first (or than the one Axolotl asks for)."""
        floor = (for_axolotl and self.axolotl_min_torch) or self.min_torch
        return floor is not None and release(torch_version) < release(floor)

    @property
    def in_torch(self) -> bool:
        """A kernel torch itself ships, from its release min_torch on (SDPA, flex)."""
        return self.distribution is None and self.min_torch is not None

    @property
    def shown_module(self) -> str:
        return self.resolve[0] if self.resolve else self.module


@dataclass(frozen=True)
class Companion:
    """A distribution `check` reads that is not a backend itself."""

    distribution: str
    label: str
    module: str | None = None


def fa4_accepts(cc_major: int, head_dim: int, head_dim_v: int, alignment: int = 8) -> bool | None:
    """FA4's `_validate_head_dims` of flash-attn-4 4.0.0b36 (flash_attn/cute/interface.py), as
    data; Axolotl calls it with alignment 8 (bf16/fp16). None: FA4 does not check on this
    architecture (SM80, SM120)."""
    aligned = head_dim % alignment == 0 and head_dim_v % alignment == 0
    if cc_major == 9:
        return aligned and 8 <= head_dim <= 256 and 8 <= head_dim_v <= 256
    if cc_major in (10, 11):
        return (
            (aligned and 8 <= head_dim <= 128 and 8 <= head_dim_v <= 128)
            or (head_dim, head_dim_v) == (192, 128)
            or (head_dim_v == 512 and head_dim in (64, 512))
            or (head_dim, head_dim_v) == (256, 256)
        )
    return None


_EVERYWHERE = (Support("", None, None, "torch's math backend runs on any device"),)

# torch.compile refuses Python releases newer than its Dynamo knows: (Python, the first torch that
# compiles on it). torch/_dynamo/eval_frame.py at v2.5.0 ("Dynamo is not supported on Python 3.13+"),
# v2.6.0 (3.13 allowed) and v2.9.0/v2.10.0 (3.14 allowed from 2.10).
DYNAMO_PYTHON = ((">=3.14", "2.10"), (">=3.13", "2.6"))
_TORCH = "https://github.com/pytorch/pytorch"
_SMALL_SMEM = ("8.6", "8.9", "12.0", "12.1")  # 99 KB of shared memory per block, against 163-227 KB
_SMALLER_BLOCKS = (
    "pass flex_attention kernel_options with smaller blocks (BLOCK_M1/N1/M2/N2 = 32), or compile it with "
    "mode='max-autotune', which drops the configs that do not fit"
)
# Flex attention's default Triton configs by GPU and head dim (torch/_inductor/kernel/flex_attention.py,
# later torch/_inductor/template_heuristics/triton.py) are not checked against the GPU's shared memory:
# where one is too large the kernel fails with "out of resource: shared memory".
FLEX_SHARED_MEMORY = (
    HeadDimLimit(
        64,
        f"{_TORCH}/issues/133254 (RTX 4090, head dim 128: 131074 of 101376 bytes); {_TORCH}/blob/v2.5.0/torch/"
        "_inductor/kernel/flex_attention.py (backward 64x128, 3 stages, for every GPU from sm_80)",
        versions="<2.7",
        only_on=("8.6", "8.9"),
        backward_only=True,
        why=f"its default backward kernel needs more shared memory than this GPU has; {_SMALLER_BLOCKS}",
    ),
    HeadDimLimit(
        64,
        f"{_TORCH}/blob/v2.8.0/torch/_inductor/template_heuristics.py (every GPU from sm_90 gets the H100 "
        "configs, sized for 227 KB, until v2.9.0 gives sm_120 its own)",
        versions="<2.9",
        only_on=("12.0", "12.1"),
        backward_only=True,
        why=f"it runs the H100's backward configs on this 99 KB GPU; {_SMALLER_BLOCKS}",
    ),
    HeadDimLimit(
        128,
        f"{_TORCH}/issues/198224 (sm_12x backward, head dims above 128 padded to 256: 114688 of 101376 bytes; "
        "open in 2.15.0)",
        only_on=("12.0", "12.1"),
        backward_only=True,
        why=f"its default sm_12x backward kernel needs more shared memory than this GPU has; {_SMALLER_BLOCKS}",
    ),
    HeadDimLimit(
        128,
        f"{_TORCH}/issues/180278 (head dim 192 on sm_86/sm_89: ~144 KiB); fixed in v2.13.0 by {_TORCH}/pull/181835",
        versions="<2.13",
        only_on=("8.6", "8.9"),
        refused_up_to=192,
        why=f"its default kernel for head dim 192 needs more shared memory than this GPU has (torch 2.13 fits it); "
        f"{_SMALLER_BLOCKS}",
    ),
    HeadDimLimit(
        256,
        f"{_TORCH}/issues/160018 (head dim 512 'basically not possible' without splitting it); "
        "https://github.com/NVIDIA-NeMo/Automodel/pull/3064 (head dim 512 on an H100: 263168 of 232448 bytes)",
        why="its default kernels for head dims above 256 need more shared memory than any GPU has; only small "
        "blocks (kernel_options BLOCK_M/BLOCK_N = 32, one stage) fit at all",
    ),
)

# The GPU classes that ranks are given for (ranking.gpu_class decides which one a GPU is in).
# Blackwell datacentre (sm100-sm110) ranks as Hopper unless a backend says otherwise: what was
# measured there is Hopper's.
HOPPER, BLACKWELL, AMPERE, TURING, AMD, OTHER, INFERENCE = (
    "sm90",
    "sm100-sm110",
    "sm80-sm120",
    "sm75",
    "amd",
    "other",
    "inference",
)


def _ranks(**positions: float) -> Mapping[str, float]:
    names = {
        "hopper": HOPPER,
        "blackwell": BLACKWELL,
        "ampere": AMPERE,
        "turing": TURING,
        "amd": AMD,
        "other": OTHER,
        "inference": INFERENCE,
    }
    if "hopper" in positions:
        positions.setdefault("blackwell", positions["hopper"])
    return MappingProxyType({names[k]: v for k, v in positions.items()})


BACKENDS: tuple[Backend, ...] = (
    Backend(
        name="sdpa",
        label="PyTorch SDPA",
        distribution=None,
        module=SDPA_MODULE,
        hazards=SDPA_HAZARDS,
        support=_EVERYWHERE,
        min_torch="2.0",
        install="install torch first (attn-doctor never chooses torch for you): https://pytorch.org/get-started/locally/",
        source="https://pytorch.org/docs/stable/generated/torch.nn.functional.scaled_dot_product_attention.html "
        "(math backend on any device; flash backend sm80-sm121, head dim <= 256)",
        varlen=False,
        runs_through=("torch",),
        axolotl="attn_implementation: sdpa",
        axolotl_names=("sdpa",),
        ranks=_ranks(hopper=3, ampere=2, turing=2, amd=2, other=1),
        why="built into torch, always there; the fallback",
        caveats=("cuDNN SDPA is preferred on sm90/sm100/sm103 with cuDNN > 9.15 (torch >= 2.10)",),
        verifiable=True,
    ),
    Backend(
        name="flex",
        label="Flex Attention",
        distribution=None,
        module="torch.nn.attention.flex_attention",
        support=_EVERYWHERE,
        # torch.nn.attention.flex_attention is first in v2.5.0; Axolotl's config validator asks for 2.6
        min_torch="2.5",
        axolotl_min_torch="2.6",
        install="install torch >= 2.6 (https://pytorch.org/get-started/locally/)",
        source="https://github.com/pytorch/pytorch/blob/v2.5.0/torch/nn/attention/flex_attention.py; Axolotl "
        f"refuses it below torch 2.6: {AXOLOTL}/src/axolotl/utils/schemas/validation.py (check_flex_torch_version)",
        runs_through=("torch", "triton"),  # its kernels are Triton's, compiled by torch.compile
        compiled_by_dynamo=True,
        head_dims=FLEX_SHARED_MEMORY,
        axolotl="attn_implementation: flex_attention\ntorch_compile: true",
        axolotl_names=("flex_attention",),
        why="torch's compiled attention with custom masks",
        caveats=("with torch.compile (Axolotl recommends it; no validator requires it)",),
        verifiable=True,
    ),
    Backend(
        name="fa2",
        label="FlashAttention 2",
        distribution=FA2_DISTRIBUTION,
        checked_up_to="2.8.3.post2",
        module="flash_attn",
        resolve=("flash_attn", "flash_attn_2_cuda"),
        verified=True,
        support=(
            Support(
                ">=2.8.0.post2",
                ("8", "9", "10", "12"),
                ("gfx90a", "gfx942", "gfx950"),
                f"{FA}/blob/v2.8.3/csrc/flash_attn/flash_api.cpp (any major >= 8, since v2.7.3); release wheels "
                f"with sm_100/sm_120 code from 2.8.0.post2 (CUDA 12.9): {FA}/blob/v2.8.0.post2/.github/workflows/"
                "publish.yml; ROCm CK gfx90a/gfx942/gfx950",
            ),
            Support(
                ">=2.7.3",
                ("8", "9.0"),
                ("gfx90a", "gfx942"),
                f"{FA}/blob/v2.7.3/csrc/flash_attn/flash_api.cpp accepts majors >= 8, but the release wheels "
                f"(CUDA 12.4, {FA}/blob/v2.7.4.post1/.github/workflows/publish.yml) carry no sm_100/sm_120 code: "
                "only a source build with nvcc >= 12.8 runs there",
            ),
            Support(
                "",
                ("8", "9.0"),
                ("gfx90a", "gfx942"),
                f"{FA}/blob/v2.7.1.post4/csrc/flash_attn/flash_api.cpp#L368-L370 (is_sm90 || is_sm8x: "
                '"FlashAttention only supports Ampere GPUs or newer" on sm_100/sm_120; '
                f"{FA}/issues/1540)",
            ),
        ),
        min_rocm="6.0",  # Axolotl's guide: AMD through ROCm >= 6.0
        varlen=True,
        head_dims=(
            HeadDimLimit(256, f"{FA}/blob/v2.8.3/README.md (head dims up to 256)"),
            # backward above 192 only on A100/H100 (sm80, sm90) in the releases before 2.5.5; seen with
            # 2.5.3 on an RTX 3090 (https://github.com/hiyouga/LLaMA-Factory/issues/2573)
            HeadDimLimit(
                192,
                f"{FA}/blob/v2.5.3/csrc/flash_attn/flash_api.cpp#L786-L787 (removed for good in v2.7.3)",
                versions="<2.5.5",
                except_on=("8.0", "9.0"),
                backward_only=True,
            ),
            HeadDimLimit(
                192,
                f"{FA}/blob/v2.5.5/csrc/flash_attn/flash_api.cpp#L786-L787 (head dims 193-224)",
                versions=">=2.5.5,<2.6.2",
                except_on=("8.0", "9.0"),
                backward_only=True,
                refused_up_to=224,
            ),
        ),
        install="attn-doctor install fa2  # the release wheel for this torch, else a compile sized for this machine",
        source=f"{FA}/blob/v2.8.3/setup.py; {FA}/blob/v2.8.3/README.md",
        axolotl="attn_implementation: flash_attention_2",
        axolotl_names=("flash_attention_2",),
        # On Hopper, after SDPA: on the H100 FA2 2.8.3.post2 (built by `install fa2 --source`) ran
        # fwd+bwd at 0.64-0.77x SDPA at every standard shape, in one bench with FA3, FA4 and
        # Sage (tests/fixtures/h100-bench-five-gpu.json; 0.63-0.77x in h100-bench-five.json).
        # Not measured on Blackwell: ahead of SDPA there, as before.
        ranks=_ranks(hopper=4, blackwell=2, ampere=1, amd=1),
        why="FlashAttention's stable build for this GPU, with varlen for sample packing",
        hub_route="hub-fa2",
        release_wheel=lambda torch, python: fa2_wheel_for(FA2_WHEEL_VERSION, torch, python),
        caveats=(
            "on the H100 it trained at 0.64-0.77x SDPA (fwd+bwd, every standard shape, one bench of all five): "
            "on Hopper SDPA, FA3 and FA4 are faster",
        ),
        lookalikes=(
            Lookalike(
                "flash-attn",
                ">=3.0.0a0",
                "FA3's beta published as flash_attn 3.0.0b1 (Hopper only), not FA2",
                "fa3",
            ),
        ),
        installable=True,
        verifiable=True,
    ),
    Backend(
        name="fa3",
        label="FlashAttention 3",
        distribution=FA3_DISTRIBUTION,
        checked_up_to="3.0.0",
        module="flash_attn_3",
        resolve=("flash_attn_3", "flash_attn_interface"),
        verified=True,
        support=(
            Support(
                "",
                ("8", "9.0"),
                (),
                f"{FA}/blob/v2.8.3/hopper/setup.py#L205-L210 (sm_80 and sm_90a kernels; sm_80 since v2.7.3); "
                f"Blackwell is routed to sm_90a kernels and fails: {FA}/issues/1785",
            ),
        ),
        varlen=True,
        head_dims=(HeadDimLimit(256, f"{FA}/blob/main/hopper/setup.py (HDIM up to 256)"),),
        install="attn-doctor install fa3  # builds upstream's hopper/ at a pinned commit (CUDA >= 12.3)",
        source=f"{FA}/tree/main/hopper",
        axolotl="attn_implementation: flash_attention_3",
        axolotl_names=("flash_attention_3",),
        # Measured on the H100 in one bench with FA2, FA4, Sage and SDPA (tests/fixtures/
        # h100-bench-five-gpu.json, 2026-11-25, bf16 causal, FA3 3.0.0 built by `install fa3
        # --head-dim 64 --head-dim 128`, every figure the GPU's time, checked in the same run:
        # h100-bench-agreement-five-gpu.json): fwd+bwd 1.15-1.29x SDPA at every standard shape,
        # 1k tokens included, and ahead of FA4 at five of six (by 2-10%; FA4 by 0.5% at 8k d128).
        # (An earlier bench put SDPA first at 1k: there it timed the host, h100-bench-five.json.)
        # Ranked second to FA4 all the same: FA4 installs from a wheel and Axolotl picks it by
        # itself, FA3 is a source build Axolotl never picks; `check --bench` puts FA3 first where
        # it measured faster.
        ranks=_ranks(hopper=2),
        why="the fastest trainer measured on the H100, 1.15-1.29x SDPA at every standard shape and "
        "2-10% ahead of FA4 at five of six (fwd+bwd 588 TFLOP/s at 8k, d128)",
        caveats=(
            "Axolotl never picks FA3 by itself: set attn_implementation: flash_attention_3 (with FA4 importable "
            "on sm90+ FA4 overrides it)",
        ),
        installable=True,
        verifiable=True,
        hub_route="hub-fa3",
    ),
    Backend(
        name="fa4",
        label="FlashAttention 4",
        distribution=FA4_DISTRIBUTION,
        checked_up_to="4.0.0b40",
        module="flash_attn.cute",
        resolve=("flash_attn.cute",),
        verified=True,
        support=(
            Support(
                ">=4.0.0b5",
                ("8", "9", "10", "11", "12"),
                (),
                "flash_attn/cute/interface.py of https://pypi.org/project/flash-attn-4/4.0.0b36/ (forward on "
                "majors 8-12, backward 9-12; since beta5, as in 4.0.0b40); Axolotl uses it on 9, 10, 11: "
                f"{AXOLOTL}/src/axolotl/loaders/model.py",
                backward=("9", "10", "11", "12"),
            ),
            Support(
                "",
                ("9", "10", "11"),
                (),
                f"{FA}/blob/fa4-v4.0.0.beta4/flash_attn/cute/interface.py#L258 (majors 9, 10, 11 only)",
            ),
        ),
        varlen=True,
        head_dim_rule=fa4_accepts,
        head_dim_rule_version="4.0.0b36",
        install="attn-doctor install fa4  # pip install 'flash-attn-4==4.0.0b36': plain flash-attn-4 finds nothing",
        source="https://pypi.org/project/flash-attn-4/4.0.0b36/",
        axolotl="attn_implementation: flash_attention_2  # Axolotl switches to FA4 when flash_attn.cute imports",
        ranks=_ranks(hopper=1),
        # tests/fixtures/h100-bench-five-gpu.json: fwd+bwd 1.12-1.22x SDPA at every standard shape,
        # 1k tokens included, 0.5% ahead of FA3 at 8k d128, 2-10% behind it elsewhere.
        why="next to FA3 as the fastest trainer measured on the H100 (1.12-1.22x SDPA at every standard shape; "
        "fwd+bwd 591 TFLOP/s at 8k, d128), and the one Axolotl picks by itself",
        caveats=("no backward on sm80 (forward only)", "head dims per FA4's _validate_head_dims"),
        hopper_backward_from_files=True,
        bad_releases=(
            BadRelease(
                "==0.0.1",
                FLASH_ATTN_4_PLACEHOLDER,
                "flash-attn-4 {version} is the yanked placeholder, not FA4",
                "https://pypi.org/project/flash-attn-4/0.0.1/",
            ),
            # flash_fwd_sm120.py from b5: its base __init__ overwrote arch = 80 with the runtime sm_120,
            # so the TMA epilogue was taken; b21 sets self.arch = Arch.sm_80 (flash_fwd.py, b20 against b21)
            BadRelease(
                ">=4.0.0b5,<4.0.0b21",
                RELEASE_BROKEN_HERE,
                "flash-attn-4 {version}'s SM120 forward fails to compile (`'NoneType' object has no attribute "
                "'_trait'`) or computes wrong values on this GPU; fixed in 4.0.0b21",
                f"{FA}/issues/2453, {FA}/issues/2477, {FA}/pull/2553",
                capabilities=("12.0", "12.1"),
            ),
            BadRelease(
                ">=4.0.0b3,<4.0.0b15",
                RELEASE_BROKEN_HERE,
                "flash-attn-4 {version} asserts `Only SM 10.x and 11.x are supported` on sm_103 with the CUDA 12 "
                "CuTe DSL; fixed in 4.0.0b15 (or install nvidia-cutlass-dsl[cu13])",
                f"{FA}/pull/2572",
                capabilities=("10.3",),
            ),
            BadRelease(
                "<4.0.0b26",
                RELEASE_BROKEN_HERE,
                "flash-attn-4 {version} imports quack.activation.sub_packed_f32x2, which quack-kernels 0.6.5 no "
                "longer has: `import flash_attn.cute` fails; fixed in 4.0.0b26",
                f"{FA}/issues/2782, {FA}/pull/2787",
                beside=(("quack-kernels", ">=0.6.5"),),
            ),
            BadRelease(
                "",
                RELEASE_BROKEN_HERE,
                "flash-attn-4 {version}'s backward never returns on sm_103 with nvidia-cutlass-dsl 4.6.0 or 4.6.1",
                f"{FA}/issues/2797 (4.6.0.dev0 and 4.6.2 complete)",
                capabilities=("10.3",),
                beside=(("nvidia-cutlass-dsl", ">=4.6.0,<4.6.2"),),
                fix="nvidia-cutlass-dsl>=4.6.2",
            ),
        ),
        installable=True,
        verifiable=True,
    ),
    Backend(
        name="sage",
        label="SageAttention 2",
        distribution="sageattention",
        checked_up_to="2.2.0",
        module="sageattention",
        resolve=("sageattention",),
        verified=True,
        support=(
            Support(
                ">=2",
                ("8.0", "8.6", "8.9", "9.0", "12.0"),
                (),
                f"{SAGE}/blob/v2.2.0/setup.py (archs 8.0/8.6/8.9/9.0/12.0)",
            ),
            Support(
                "<2",
                ("8", "9", "10", "12"),
                (),
                f"https://pypi.org/project/sageattention/1.0.6/ (Triton, no arch check); on sm_75 bf16 fails "
                f"({SAGE}/issues/63) and fp16 only with Triton < 3.3 ({SAGE}/issues/197)",
            ),
        ),
        trains=False,
        install="attn-doctor install sage  # builds SageAttention 2.2.0 from source (PyPI has only 1.x)",
        source=f"{SAGE}/tree/v2.2.0; no backward: {SAGE}/issues/90",
        axolotl="attn_implementation: sage",
        axolotl_names=("sage",),
        ranks=_ranks(inference=0),
        why="int8 QK for inference on this GPU",
        caveats=(f"full fine-tuning seen to drive the loss to 0 ({SAGE}/issues/198)",),
        bad_releases=(
            BadRelease(
                "<2",
                SAGEATTENTION_V1,
                "sageattention {version} is SageAttention 1 (Triton only), not 2.x",
                "https://pypi.org/project/sageattention/#history",
            ),
            # Built from the v2.2.0 tag: sm90_compile.py registers the fake (shape-only) op under
            # the real op's Python name, so sageattn() on Hopper returns torch.empty() without
            # running the kernel. Fixed after the tag, still 2.2.0 (PR #307): told by the file.
            BadRelease(
                "==2.2.0",
                SAGEATTENTION_HOPPER_NO_KERNEL,
                "sageattention {version} is built from its v2.2.0 tag: on Hopper sageattn() returns "
                "uninitialised memory without running its kernel",
                f"{SAGE}/blob/v2.2.0/sageattention/sm90_compile.py#L76-L77 (the fake's name), "
                f"{SAGE}/issues/288, fixed by {SAGE}/pull/307",
                FileMark(
                    "sageattention/sm90_compile.py",
                    r'register_fake\("sageattention_sm90::(\w+)"\)\s*def \1\(',
                    ("9.0",),
                ),
            ),
        ),
        installable=True,
        verifiable=True,
        quantized=True,
    ),
    Backend(
        name="xformers",
        label="xFormers",
        distribution=XFORMERS_DISTRIBUTION,
        checked_up_to="0.0.35",
        module="xformers.ops",
        resolve=("xformers",),
        verified=True,
        support=(
            Support(
                ">=0.0.31",
                ("7.5", "8", "9", "10", "12"),
                (),
                f"{XFORMERS}/blob/v0.0.31/CHANGELOG.md (Volta dropped); sm_75 through the cutlass kernels only",
            ),
            Support(
                "<0.0.31",
                ("6.0", "7", "8", "9", "10", "12"),
                (),
                f"{XFORMERS}/blob/v0.0.30/setup.py (6.0+PTX 7.0 7.5 8.0+PTX)",
            ),
        ),
        install="attn-doctor install xformers  # the release built for your torch",
        source=f"{XFORMERS}/blob/main/CHANGELOG.md",
        axolotl="attn_implementation: xformers",
        axolotl_names=("xformers",),
        ranks=_ranks(turing=1),
        why="the memory-efficient kernels that still run on Turing",
        caveats=("each xformers release up to 0.0.34 pins one exact torch",),
        installable=True,
        verifiable=True,
    ),
    Backend(
        name="hub-fa2",
        label="FlashAttention 2 from the Hub (kernels)",
        distribution=KERNELS_DISTRIBUTION,
        checked_up_to="0.19.1",
        module="kernels",
        requires=(TRANSFORMERS_DISTRIBUTION,),
        support=(
            Support(
                "",
                ("8", "9", "10", "12"),
                (),  # ROCm is served by kernels-community/aiter-flash-attn, another kernel
                "https://github.com/huggingface/kernels-community/blob/40d4194f48b6775c4be4776ed08035fabb0e758f/"
                "flash-attn2/build.toml (cuda, xpu, cpu); the build for this torch and CUDA is chosen at load: "
                f"{KERNELS_SOURCE}",
            ),
        ),
        # transformers' own fallback for flash_attention_2 when flash-attn is missing is this kernel
        # (src/transformers/modeling_flash_attention_utils.py at v5.25.0, FLASH_ATTN_KERNEL_FALLBACK)
        install="pip install 'transformers[kernels]'  # the kernels release this transformers loads Hub kernels with",
        source="https://github.com/huggingface/transformers/blob/v5.25.0/src/transformers/integrations/"
        "hub_kernels.py (load_and_register_attn_kernel); Axolotl passes an org/name through: "
        f"{AXOLOTL}/src/axolotl/utils/schemas/config.py (validate_attn_implementation)",
        varlen=True,
        axolotl="attn_implementation: kernels-community/flash-attn2",
        axolotl_names=("kernels-community/flash-attn2", "kernels-community/flash-attn"),
        # FA2's kernels: ranked right after FA2 itself, where FA2 is ranked
        ranks=_ranks(hopper=4.5, blackwell=2.5, ampere=1.5),
        why="FA2's kernels, prebuilt on the Hugging Face Hub for this torch and CUDA: no compiler and no "
        "flash-attn wheel needed (fetched once at the first load, then from the local cache)",
        caveats=("the first load needs the network (huggingface.co), unless the kernel is in the local Hub cache",),
    ),
    Backend(
        name="hub-fa3",
        label="FlashAttention 3 from the Hub (kernels)",
        distribution=KERNELS_DISTRIBUTION,
        module="kernels",
        requires=(TRANSFORMERS_DISTRIBUTION,),
        min_torch="2.9",  # the Hub builds it for torch 2.9 on ([torch] minver in its build.toml, below)
        support=(
            Support(
                "",
                ("8", "9.0"),
                (),
                "https://github.com/huggingface/kernels-community/blob/1331b1465f9172fb8a7df2b0c904e96b3df8a6a7/"
                "flash-attn3/build.toml (cuda-capabilities 8.0 and 9.0a: no code for Blackwell); the build for this "
                f"torch and CUDA is chosen at load: {KERNELS_SOURCE}",
            ),
        ),
        install="pip install 'transformers[kernels]'  # the kernels release this transformers loads Hub kernels with",
        source="https://github.com/huggingface/transformers/blob/v5.25.0/src/transformers/integrations/"
        "hub_kernels.py (load_and_register_attn_kernel)",
        varlen=True,
        axolotl="attn_implementation: kernels-community/flash-attn3",
        axolotl_names=("kernels-community/flash-attn3",),
        # no rank: never recommended over what it serves (its builds are not proven here); judged where a
        # config names it, and named by `install fa3` as the route around the compile
        why="FA3's kernels, prebuilt on the Hugging Face Hub for this torch and CUDA: no compiler and no "
        "flash-attn-3 wheel needed (fetched once at the first load, then from the local cache)",
        caveats=("the first load needs the network (huggingface.co), unless the kernel is in the local Hub cache",),
    ),
    Backend(
        name="s2",
        label="Shifted-sparse attention (S2)",
        distribution=None,
        module="torch",
        support=(Support("", (), (), f"{AXOLOTL}/src/axolotl/utils/schemas/config.py (s2_attention rejected)"),),
        install="not available: removed from Axolotl",
        source=f"{AXOLOTL}/src/axolotl/utils/schemas/config.py: s2_attention rejected since v0.17.0",
        axolotl="s2_attention: true  # rejected by Axolotl >= 0.17",
        caveats=("LLaMA only, needed flash attention, no sample packing; deprecated",),
    ),
)

# Read by `check` beside the backends' own distributions; torch's files are never hashed.
COMPANIONS: tuple[Companion, ...] = (
    Companion("torch", "PyTorch", "torch"),
    Companion("triton", "Triton", "triton"),
    Companion("nvidia-cutlass-dsl", "CuTe DSL (FA4)"),
    Companion("axolotl", "Axolotl"),
    Companion(TRANSFORMERS_DISTRIBUTION, "transformers"),
)


# FA2's ROCm Triton build imports only with it set to TRUE (flash_attn_interface.py, v2.7.1-v2.8.3.post1)
FA2_TRITON_AMD = "FLASH_ATTENTION_TRITON_AMD_ENABLE"
# Environment variables that change what a backend does at import: `check` records them.
VARIABLES = (FA2_TRITON_AMD, *OFFLINE_VARIABLES, *CACHE_VARIABLES)


def registered() -> tuple[Backend, ...]:
    """Every backend. Read at call time, never bound at import, so that a backend added to
    BACKENDS (a test's) is seen everywhere."""
    return BACKENDS


def by_name() -> dict[str, Backend]:
    return {backend.name: backend for backend in registered()}


def backend_names(*, installable: bool = False, verifiable: bool = False) -> list[str]:
    return [b.name for b in BACKENDS if (not installable or b.installable) and (not verifiable or b.verifiable)]


def packaged() -> list[Backend]:
    return [b for b in registered() if b.distribution is not None]


def distributions() -> list[str]:
    """Every distribution `check` reads: the backends' (and their lookalikes'), then the companions'."""
    names = [b.distribution for b in packaged()] + [c.distribution for c in COMPANIONS]
    return list(dict.fromkeys(n for n in names if n))


def verified_distributions() -> list[str]:
    return [b.distribution for b in packaged() if b.verified and b.distribution]


def resolved_modules() -> list[str]:
    modules = [c.module for c in COMPANIONS if c.module] + [m for b in registered() for m in b.resolve]
    return list(dict.fromkeys(modules))


def file_marks() -> list[tuple[str, str, FileMark]]:
    """(distribution, versions, mark) of every bad build told by its files: what `check` reads."""
    return [
        (b.distribution, bad.versions, bad.mark)
        for b in registered()
        if b.distribution
        for bad in b.bad_releases
        if bad.mark is not None
    ]


def backend_of_distribution(distribution: str) -> Backend | None:
    return next((b for b in packaged() if b.distribution == distribution), None)


def label_of(distribution: str) -> str:
    backend = backend_of_distribution(distribution)
    if backend is not None:
        return backend.label
    return next((c.label for c in COMPANIONS if c.distribution == distribution), distribution)


def shown_module(distribution: str) -> str | None:
    """The module whose resolution a distribution's package line shows."""
    backend = backend_of_distribution(distribution)
    if backend is not None:
        return backend.shown_module
    return next((c.module for c in COMPANIONS if c.distribution == distribution), None)


def import_checks() -> dict[str, str]:
    """distribution -> the module whose import proves it loads (`--deep`)."""
    checks = {b.distribution: b.module for b in packaged() if b.distribution}
    return {"torch": "torch", **checks, "triton": "triton"}


def backend_of_implementation(implementation: str | None) -> Backend | None:
    """The backend an Axolotl `attn_implementation` value selects."""
    return next((b for b in registered() if implementation in b.axolotl_names), None)
