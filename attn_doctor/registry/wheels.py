"""Which prebuilt FA2 wheels exist: each release's build matrix as data, with its source.

FA2's sdist (the only thing on PyPI) guesses a wheel on the GitHub release before compiling:
`flash_attn-{ver}+cu{C}torch{X.Y}cxx11abi{TRUE|FALSE}-cp{XY}-cp{XY}-linux_{machine}.whl`
(setup.py `get_wheel_url`), and downloads it whenever the name matches the torch, CUDA, C++ ABI
and Python it sees, unless FLASH_ATTENTION_FORCE_BUILD=TRUE
(https://github.com/Dao-AILab/flash-attention/blob/v2.8.3/setup.py#L61-L62). `{C}` is torch's
CUDA as the release names it: major+minor (cu118, cu123) up to 2.6.3, the major (cu11, cu12)
from 2.7.0. The matrices are each tag's `.github/workflows/publish.yml`; a torch release exists
only for some Pythons, so no wheel is promised for a Python that torch release never had.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from attn_doctor.facts.model import Interpreter, Torch
from attn_doctor.registry.versions import release

_FA = "https://github.com/Dao-AILab/flash-attention/blob"


@dataclass(frozen=True)
class WheelMatrix:
    """What one release's publish.yml built."""

    cuda: dict[int, str]  # torch's CUDA major -> the name's cu tag
    torch: tuple[str, ...]  # major.minor
    pythons: tuple[str, ...]  # cpXY
    source: str
    machines: tuple[str, ...] = ("x86_64",)


# The newest Python each torch minor was released for (PyTorch's release notes): a wheel for a
# later Python cannot have been built.
_TORCH_NEWEST_PYTHON = {"2.0": 11, "2.1": 11, "2.2": 12, "2.3": 12, "2.4": 12}

RELEASES: dict[str, WheelMatrix] = {
    "2.6.3": WheelMatrix(
        {11: "118", 12: "123"},
        ("2.0", "2.1", "2.2", "2.3", "2.4"),
        ("cp38", "cp39", "cp310", "cp311", "cp312"),
        f"{_FA}/v2.6.3/.github/workflows/publish.yml (CUDA 11.8.0, 12.3.2)",
    ),
    "2.7.0.post2": WheelMatrix(
        {11: "11", 12: "12"},
        ("2.1", "2.2", "2.3", "2.4", "2.5"),
        ("cp38", "cp39", "cp310", "cp311", "cp312"),
        f"{_FA}/v2.7.0.post2/.github/workflows/publish.yml (CUDA 11.8.0, 12.4.1)",
    ),
    "2.7.4.post1": WheelMatrix(
        {12: "12"},
        ("2.2", "2.3", "2.4", "2.5", "2.6"),
        ("cp39", "cp310", "cp311", "cp312", "cp313"),
        f"{_FA}/v2.7.4.post1/.github/workflows/publish.yml (CUDA 12.4.1)",
    ),
    "2.8.0.post2": WheelMatrix(
        {12: "12"},
        ("2.4", "2.5", "2.6", "2.7"),
        ("cp39", "cp310", "cp311", "cp312", "cp313"),
        f"{_FA}/v2.8.0.post2/.github/workflows/publish.yml (CUDA 12.9.0)",
    ),
    "2.8.3": WheelMatrix(
        {12: "12"},
        ("2.4", "2.5", "2.6", "2.7", "2.8"),
        ("cp39", "cp310", "cp311", "cp312", "cp313"),
        f"{_FA}/v2.8.3/.github/workflows/publish.yml (CUDA 12.9.1)",
    ),
}
# v2.8.3.post1 shares v2.8.3's publish.yml (blob 8d2ea71e). The assets of v2.8.3.post2 are not
# confirmed, so no wheel is promised for it.
RELEASES["2.8.3.post1"] = RELEASES["2.8.3"]


def fa2_wheel_name(
    fa2_version: str, torch_version: str, torch_cuda: str | None, cxx11_abi: bool, python_version: str, machine: str
) -> str | None:
    """The name of the prebuilt wheel FA2's setup.py would download, when the release has it."""
    matrix = RELEASES.get(fa2_version)
    if matrix is None or torch_cuda is None:
        return None
    try:
        torch_release = Version(torch_version).release
        cuda_major = int(torch_cuda.split(".")[0])
        python_minor = int(python_version.split(".")[1])
    except (InvalidVersion, ValueError, IndexError):
        return None
    torch_minor = ".".join(str(n) for n in torch_release[:2])
    python = cpython_tag(python_version)
    if (
        cuda_major not in matrix.cuda
        or torch_minor not in matrix.torch
        or python not in matrix.pythons
        or machine not in matrix.machines
        or python_minor > _TORCH_NEWEST_PYTHON.get(torch_minor, 99)
    ):
        return None
    abi = "TRUE" if cxx11_abi else "FALSE"
    cuda = matrix.cuda[cuda_major]
    return f"flash_attn-{fa2_version}+cu{cuda}torch{torch_minor}cxx11abi{abi}-{python}-{python}-linux_{machine}.whl"


def fa2_wheel_for(fa2_version: str, torch: Torch, python: Interpreter) -> str | None:
    """The wheel for this machine's torch and Python, from the facts alone: torch's C++ ABI as read
    off its libc10, else the default of its release (cxx11 since 2.7); the machine from the
    interpreter's platform (linux-x86_64)."""
    cxx11 = torch.cxx11_abi if torch.cxx11_abi is not None else release(torch.version) >= (2, 7)
    return fa2_wheel_name(fa2_version, torch.version, torch.cuda, cxx11, python.version, machine_of(python))


def cpython_tag(python_version: str) -> str:
    """A CPython wheel's interpreter tag: cp312 for 3.12.x."""
    return "cp" + "".join(python_version.split(".")[:2])


def machine_of(python: Interpreter) -> str:
    """The machine a wheel's platform tag ends with, from the interpreter's platform (linux-x86_64)."""
    return python.platform.rsplit("-", 1)[-1]


FA2_RELEASES = "https://github.com/Dao-AILab/flash-attention/releases/download"


def fa2_wheel_url(fa2_version: str, wheel: str, root: str = FA2_RELEASES) -> str:
    """Where the release keeps it: what `pip install URL` takes instead of guessing."""
    return f"{root}/v{fa2_version}/{wheel.replace('+', '%2B')}"


# PyTorch builds FA3 from its flash-attention submodule and publishes one wheel per CUDA build on
# its own index: the CUDA 12.6 build to cu126, cu128 and cu129, the 13.0 build to cu130
# (https://github.com/pytorch/pytorch/blob/4c8b2b20/.github/workflows/_binary-upload-flash-attention-wheel.yml),
# named flash_attn_3-3.0.0-cp39-abi3-manylinux_2_28_x86_64.whl in every folder: only the folder says
# the CUDA build. Built against torch's stable ABI, from torch 2.9 on (hopper/setup.py,
# TORCH_TARGET_VERSION). `install fa3` fetches it from there and proves it (registry/sources.py).
FA3_PYTORCH_INDEX_BUILDS = ("cu126", "cu128", "cu129", "cu130")
PYTORCH_INDEX = "https://download.pytorch.org/whl"
PYPI_INDEX = "https://pypi.org/simple"


def cuda_build(cuda: str) -> str:
    """A CUDA release as PyTorch names its builds and index folders: 12.8 -> cu128."""
    return "cu" + "".join(cuda.split(".")[:2])


def fa3_pytorch_index(torch: Torch, root: str = PYTORCH_INDEX) -> str | None:
    """The PyTorch index folder that holds an FA3 wheel for this torch's CUDA build, if any."""
    if not torch.cuda or release(torch.version) < (2, 9):
        return None
    build = cuda_build(torch.cuda)
    return f"{root}/{build}" if build in FA3_PYTORCH_INDEX_BUILDS else None
