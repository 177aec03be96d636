"""What installing each backend takes, as data: the pinned releases and source commits, the
build settings, and which xFormers release belongs to which torch. `actions/install.py` turns
these and the machine's facts into a plan.

Every pin carries its source. Source builds clone a pinned commit, never a branch, so a plan
made today builds the same code next month.
"""

from __future__ import annotations

from dataclasses import dataclass

from attn_doctor.facts.model import Gpu
from attn_doctor.registry.versions import release

_FA = "https://github.com/Dao-AILab/flash-attention"


@dataclass(frozen=True)
class Submodule:
    """A git submodule the build reads: `git archive` leaves it out, so `--source` brings it as a
    source of its own (a checkout or an archive of that repository at the recorded commit)."""

    path: str  # inside the tree
    url: str
    commit: str  # the gitlink recorded at the tree's pinned commit
    needs: str  # a file the build cannot do without
    paths: tuple[str, ...] = ()  # what the build reads of it (copied); empty: all


@dataclass(frozen=True)
class SourceTree:
    """A repository at one commit, and the folder of it that pip builds."""

    url: str
    tag: str
    commit: str
    subdirectory: str = ""
    source: str = ""
    version: str = ""  # what the tree itself declares, checked in a --source
    version_file: str = ""  # where it declares it
    paths: tuple[str, ...] = ()  # what the build reads of a --source (copied); empty: all
    submodules: tuple[Submodule, ...] = ()


FA2_VERSION = "2.8.3.post2"  # newest on PyPI (sdist only; https://pypi.org/project/flash-attn/#history)
FA2_WHEEL_VERSION = "2.8.3.post1"  # the newest release whose GitHub assets are confirmed (registry/wheels.py)
# newest flash-attn-4 on PyPI; all its releases are pre-releases (https://pypi.org/project/flash-attn-4/#history)
FA4_VERSION = "4.0.0b36"

FA3_TREE = SourceTree(
    url="https://github.com/Dao-AILab/flash-attention.git",
    tag="fa4-v4.0.0.beta27",
    commit="0251105a2fb19d2957484b7f023cd8c115286ced",
    subdirectory="hopper",
    # FA3 has no tags of its own; this is the newest tagged commit with #2223 (FA3 3.0.0 stable) and
    # the CUDA 13 build fix (#1949). The v2.8.3 tags carry 3.0.0b1, whose setup.py downloads nvcc
    # 12.6 even on CUDA 13.
    source=f"{_FA}/blob/0251105a2fb19d2957484b7f023cd8c115286ced/hopper/setup.py: distribution flash_attn_3 "
    "3.0.0, Python >= 3.10",
    version="3.0.0",
    version_file="hopper/__init__.py",  # setup.py reads __version__ from it
    # hopper/setup.py @0251105a reads ../README.md (long_description) and compiles hopper/ with
    # csrc/cutlass/include on the include path; nothing else of the repository
    paths=("hopper", "README.md"),
    submodules=(
        Submodule(
            "csrc/cutlass",
            "https://github.com/NVIDIA/cutlass.git",
            # `git ls-tree 0251105a csrc/cutlass` (CUTLASS 4.3.4, v4.3.0-48-g7127592)
            "7127592069c2fe01b041e174ba4345ef9b279671",
            needs="include/cutlass/cutlass.h",
            paths=("include",),
        ),
    ),
)
SAGE_TREE = SourceTree(
    url="https://github.com/thu-ml/SageAttention.git",
    # Not the v2.2.0 tag (eb615cf): there sageattention/sm90_compile.py registers its fake (shape-only)
    # op under the real op's Python name, so sageattn() on Hopper returns torch.empty() and never runs
    # the kernel (thu-ml/SageAttention#288, #320; seen on the H100: tests/fixtures/h100-sage2-layouts.txt).
    # Fixed by d970424, merged in PR #307 = ff71e1e (2025-12-22), still version 2.2.0; from v2.2.0 it
    # changes that name, core.py's head counts per layout (bda24b9) and setup.py's sm100/sm121 archs.
    tag="v2.2.0 + PR #307",
    commit="ff71e1e7ce086fff8669e7eb116ee77e265dbac1",
    source="https://github.com/thu-ml/SageAttention/pull/307; https://pypi.org/project/sageattention/#history "
    "has only 1.x",
    version="2.2.0",
    version_file="setup.py",  # setup(version='2.2.0') @ff71e1e
)

# Compiling: MAX_JOBS sized so that the build cannot run the machine out of memory. What costs
# memory is each running nvcc thread, one per GPU arch (gencode) a file is built for, with up to
# NVCC_THREADS at once: about 5 GB each, measured for FA2 at 4 jobs x 4 threads (81 GB,
# https://github.com/Dao-AILab/flash-attention/pull/2079) and 5.3 GB per nvcc process
# (https://github.com/pytorch/pytorch/issues/130443). Upstream's own rule, free RAM / 9 GB per job
# (https://github.com/Dao-AILab/flash-attention/blob/v2.8.3/setup.py#L507-L521), lets a 16-core,
# 31 GiB machine run 3 jobs x 4 threads (~60 GB). The doctor gives the build 90% of RAM.
GIB_PER_NVCC_THREAD = 5.0
RAM_SHARE = 0.9
NVCC_THREADS = 4  # FA2's default; FA3's is 2

# FA2's compile time, measured: on the H100 (16 cores, nvcc 13.0, torch 2.11) `install fa2 --source`
# of the 2.8.3.post2 sdist for sm 90 with 16 jobs compiled in 18 min 47 s (uv's "Prepared 1 package
# in 18m 47s"; 19.3 min for the whole install, 71.0 GiB at the peak:
# tests/fixtures/h100-fa2-sage-fa3-fa4.txt). The FA2 README's "3-5 minutes on a 64-core machine"
# (@v2.8.3, for 80;90;100;120) is 4x too short there. The estimate scales it by jobs and archs.
FA2_BUILD_CORE_MINUTES_PER_ARCH = 18.8 * 16
FA2_DEFAULT_ARCHS = ("80", "90", "100", "120")  # FLASH_ATTN_CUDA_ARCHS default at 2.8.3 (setup.py)
FA2_MIN_NVCC = "11.7"  # setup.py raises below it (the README says 12.0)
FA3_MIN_NVCC = "12.3"  # hopper/setup.py raises below it
FA2_VERSION_FILE = "flash_attn/__init__.py"  # __version__ in a checkout; an sdist also has PKG-INFO

# FA3's narrow build. hopper/setup.py @0251105a
# (https://github.com/Dao-AILab/flash-attention/blob/0251105a2fb19d2957484b7f023cd8c115286ced/hopper/setup.py)
# compiles one file per head dim x dtype x split x paged KV x softcap x pack-GQA (230 for sm90a,
# 60 more for sm80), and drops each family when its FLASH_ATTENTION_DISABLE_<X> is "TRUE" (the
# exact string). The kernels round a head dim up to the next one built (flash_api_stable.cpp
# round_up_headdim), so a workload's head dim needs the bucket it rounds up to.
FA3_HEAD_DIMS = (64, 96, 128, 192, 256)
FA3_MAX_HEAD_DIM = FA3_HEAD_DIMS[-1]
# Switched off in a narrow build, for training: fp8 (forward only, e4m3), and what serves only
# inference decoding (split KV, paged KV, append KV, pack-GQA for short queries). Local
# (sliding-window) attention and softcap are off too: a model that uses them gets FA3's own
# error ("does not support local attention"), never a wrong result.
FA3_NARROW_OFF = ("FP8", "SPLIT", "PAGEDKV", "APPENDKV", "PACKGQA", "LOCAL", "SOFTCAP")
# The split head dims: 192 for q/k with 128 for v (DeepSeek's MLA), 64 with 256 or 512 for v.
FA3_HDIMDIFF = {(192, 128): "HDIMDIFF192", (64, 256): "HDIMDIFF64", (64, 512): "HDIMDIFF64"}
# Minutes of one FA3 instantiation file for one job. Measured on the H100 (16 cores, nvcc 13.0,
# tests/fixtures/h100-install-fa3.txt): the head-dim-128 build, 4 sm90a files at once, took 2 min
# 46 s and 21.6 GiB at its peak (about 5 GiB per file).
FA3_MINUTES_PER_FILE = 3.0
# SageAttention 2.2.0 @ff71e1e for sm90, its 4 extensions side by side (4 x 8 jobs): 4 min 53 s
# and 32 GiB at its peak on a 16-core H100 (tests/fixtures/h100-sage2-ff71e1e.txt); one at a time
# it took 7 min 52 s (h100-install-sage.txt).
SAGE_BUILD_MINUTES_SM90 = 5
# SageAttention's extensions (setup.py @ff71e1e): how many files each compiles, and the compute
# capabilities it is built for (None: always). setup.py builds EXT_PARALLEL of them at once, each
# with a ninja of MAX_JOBS jobs: one at a time leaves most cores idle (the 8 files of _qattn_sm89
# are the only ones that run together), all at once with MAX_JOBS each can run more nvcc's than
# the memory holds.
SAGE_EXTENSIONS: tuple[tuple[str, int, frozenset[str] | None], ...] = (
    ("_qattn_sm80", 2, frozenset({"8.0", "8.6", "8.9", "9.0", "10.0", "12.0", "12.1"})),
    ("_qattn_sm89", 8, frozenset({"8.9", "9.0", "10.0", "12.0", "12.1"})),
    ("_qattn_sm90", 2, frozenset({"9.0"})),
    ("_fused", 2, None),
)
FA3_VERSION = "3.0.0"
# hopper/setup.py @0251105a downloads nvcc 12.6 + ptxas 12.8 from NVIDIA when 12.3 <= nvcc < 13.0
# and nvcc != 12.8, unless FLASH_ATTENTION_OFFLINE_BUILD is set.
FA3_NVCC_NO_DOWNLOAD = "12.8"
# FA2's CK backend: allowed_archs in https://github.com/Dao-AILab/flash-attention/blob/v2.8.3/setup.py
ROCM_GFX = ("gfx90a", "gfx942", "gfx950")

# SageAttention 2.2.0: the nvcc each architecture needs (https://github.com/thu-ml/SageAttention/blob/v2.2.0/setup.py)
SAGE_MIN_NVCC = {"8.0": "12.0", "8.6": "12.0", "8.9": "12.4", "9.0": "12.3", "12.0": "12.8"}

# FA2/FA3 build requirements for --no-build-isolation: setup.py imports them (FA2 @v2.8.3;
# psutil only when MAX_JOBS is unset, which the doctor always sets).
BUILD_REQUIREMENTS = ("ninja", "packaging", "setuptools", "wheel")


@dataclass(frozen=True)
class XformersRelease:
    version: str
    torch: str  # the torch its wheels require: "==2.9.1" pins one release, ">=2.10" a range
    source: str


# Each xFormers wheel up to 0.0.34 requires one exact torch, so the wrong one replaces torch
# (Requires-Dist of each wheel's METADATA on PyPI). Newest first.
XFORMERS = (
    XformersRelease("0.0.35", ">=2.10", "https://pypi.org/project/xformers/0.0.35/ (Requires-Dist: torch>=2.10)"),
    XformersRelease("0.0.34", "==2.10.0", "https://pypi.org/project/xformers/0.0.34/ (Requires-Dist: torch==2.10.0)"),
    XformersRelease(
        "0.0.33.post2", "==2.9.1", "https://pypi.org/project/xformers/0.0.33.post2/ (Requires-Dist: torch==2.9.1)"
    ),
    XformersRelease(
        "0.0.33.post1", "==2.9.0", "https://pypi.org/project/xformers/0.0.33.post1/ (Requires-Dist: torch==2.9.0)"
    ),
    XformersRelease(
        "0.0.32.post2", "==2.8.0", "https://pypi.org/project/xformers/0.0.32.post2/ (Requires-Dist: torch==2.8.0)"
    ),
    XformersRelease(
        "0.0.31.post1", "==2.7.1", "https://pypi.org/project/xformers/0.0.31.post1/ (Requires-Dist: torch==2.7.1)"
    ),
    XformersRelease("0.0.30", "==2.7.0", "https://pypi.org/project/xformers/0.0.30/ (Requires-Dist: torch==2.7.0)"),
    XformersRelease(
        "0.0.29.post3", "==2.6.0", "https://pypi.org/project/xformers/0.0.29.post3/ (Requires-Dist: torch==2.6.0)"
    ),
    XformersRelease(
        "0.0.28.post3", "==2.5.1", "https://pypi.org/project/xformers/0.0.28.post3/ (Requires-Dist: torch==2.5.1)"
    ),
    XformersRelease(
        "0.0.28.post2", "==2.5.0", "https://pypi.org/project/xformers/0.0.28.post2/ (Requires-Dist: torch==2.5.0)"
    ),
    XformersRelease(
        "0.0.28.post1", "==2.4.1", "https://pypi.org/project/xformers/0.0.28.post1/ (Requires-Dist: torch==2.4.1)"
    ),
)


def xformers_for(torch_version: str) -> XformersRelease | None:
    """The newest xFormers release whose wheels accept this torch; None when none does."""
    mine = release(torch_version)
    for candidate in XFORMERS:
        operator, wanted = candidate.torch[:2], release(candidate.torch[2:])
        if (operator == "==" and mine == wanted) or (operator == ">=" and mine >= wanted):
            return candidate
    return None


def nvcc_threads(archs: int) -> int:
    """The threads one nvcc runs: one per arch it builds for, up to NVCC_THREADS."""
    return max(1, min(NVCC_THREADS, archs))


def build_jobs(cpus: int, ram_gib: float, archs: int = 4) -> int:
    """MAX_JOBS for a CUDA build for `archs` GPU archs: as many nvcc threads as cores, and as
    many as 90% of the memory holds at GIB_PER_NVCC_THREAD each; at least one."""
    threads = nvcc_threads(archs)
    by_memory = int(ram_gib * RAM_SHARE // (threads * GIB_PER_NVCC_THREAD))
    return max(1, min(max(1, (cpus or 1) // threads), by_memory))


def build_peak_gib(jobs: int, archs: int = 4) -> float:
    """The memory such a build is expected to take at its peak."""
    return jobs * nvcc_threads(archs) * GIB_PER_NVCC_THREAD


def sage_parallelism(jobs: int, capabilities: set[str]) -> tuple[int, int]:
    """(EXT_PARALLEL, MAX_JOBS) for SageAttention's setup.py: every extension these GPUs need at
    once, each with the most jobs that keep all the nvcc's running together within `jobs`."""
    files = [n for _, n, built in SAGE_EXTENSIONS if built is None or built & capabilities]
    for each in range(max(files), 0, -1):
        if sum(min(n, each) for n in files) <= jobs:
            return len(files), each
    return max(1, jobs), 1  # fewer jobs than extensions: that many extensions, one job each


def fa3_head_dim_bucket(head_dim: int) -> int:
    """The kernel a head dim runs on: the next head dim FA3 builds."""
    return next(d for d in FA3_HEAD_DIMS if head_dim <= d)


def fa3_kernel_files(disabled: frozenset[str]) -> tuple[int, int]:
    """How many instantiation files hopper/setup.py @0251105a compiles with these
    FLASH_ATTENTION_DISABLE_* switches on: (sm90a files, sm80 files). Counted as its lists are
    built (sources_fwd_sm90, sources_bwd_sm90, sources_fwd_sm80, sources_bwd_sm80)."""

    def on(name: str) -> bool:
        return name not in disabled

    dims = [d for d in FA3_HEAD_DIMS if on(f"HDIM{d}")]
    half = 1 + on("FP16")  # bf16, fp16
    split, paged, softcap, packgqa = 1 + on("SPLIT"), 1 + on("PAGEDKV"), 1 + on("SOFTCAP"), on("PACKGQA")
    # pack-GQA variants exist only without split and paged KV: one per softcap choice
    per_dtype = split * paged * softcap + (softcap if packgqa else 0)
    forward = len(dims) * (half + on("FP8")) * per_dtype
    forward += on("HDIMDIFF64") * 2 * half * per_dtype + on("HDIMDIFF192") * (half + on("FP8")) * per_dtype
    backward = 0 if not on("BACKWARD") else len(dims) * half
    sm80 = 0
    if on("SM80"):
        sm80 = len(dims) * half * split * paged + (0 if not on("BACKWARD") else len(dims) * half * softcap)
    return forward + backward, sm80


def fa3_build_minutes(files: int, jobs: int) -> int:
    """Files compile in parallel, one per job; a build of fewer files than jobs takes as long as
    its slowest file."""
    return max(1, round(FA3_MINUTES_PER_FILE * -(-files // max(1, jobs))))


def fa2_build_minutes(jobs: int, archs: int) -> int:
    return max(1, round(FA2_BUILD_CORE_MINUTES_PER_ARCH * archs / jobs))


def fa2_cuda_archs(gpus: tuple[Gpu, ...]) -> list[str]:
    """FLASH_ATTN_CUDA_ARCHS narrowed to these GPUs (FA2 builds 80;90;100;120 by default): what
    the install plan and the rebuild fix compile for."""
    wanted = set()
    for gpu in gpus:
        major, _, minor = (gpu.compute_capability or "").partition(".")
        candidates = [a for a in FA2_DEFAULT_ARCHS if a == f"{major}{minor}"] or [
            a for a in FA2_DEFAULT_ARCHS if a.startswith(major) and len(a) == len(major) + 1
        ]
        wanted.update(candidates[:1])
    return sorted(wanted, key=int) or list(FA2_DEFAULT_ARCHS)
