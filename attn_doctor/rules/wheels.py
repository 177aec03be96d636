"""Which prebuilt FA2 wheels exist: the release matrix as data, with its source.

FA2's sdist (the only thing on PyPI) guesses a wheel on the GitHub release before compiling:
`flash_attn-{ver}+cu{M}torch{X.Y}cxx11abi{TRUE|FALSE}-cp{XY}-cp{XY}-linux_{machine}.whl`
(setup.py, `get_wheel_url`). Source: upstream/flash-attention.md §1-2, read at the tags.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import InvalidVersion, Version


@dataclass(frozen=True)
class WheelMatrix:
    """What one release's publish.yml built."""

    cuda_majors: tuple[int, ...]
    torch: tuple[str, ...]  # major.minor
    pythons: tuple[str, ...]  # cpXY
    machines: tuple[str, ...]
    excluded: tuple[tuple[str, str], ...] = ()  # (torch, python) pairs left out


_V283 = WheelMatrix(
    cuda_majors=(12,),
    torch=("2.4", "2.5", "2.6", "2.7", "2.8"),
    pythons=("cp39", "cp310", "cp311", "cp312", "cp313"),
    machines=("x86_64",),
    excluded=(("2.4", "cp313"),),
)
# v2.8.3 and v2.8.3.post1 share publish.yml (blob 8d2ea71e). The assets of v2.8.3.post2 are not
# confirmed, so no wheel is promised for it.
RELEASES = {"2.8.3": _V283, "2.8.3.post1": _V283}


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
    except (InvalidVersion, ValueError):
        return None
    torch_minor = ".".join(str(n) for n in torch_release[:2])
    python = "cp" + "".join(python_version.split(".")[:2])
    if (
        cuda_major not in matrix.cuda_majors
        or torch_minor not in matrix.torch
        or python not in matrix.pythons
        or machine not in matrix.machines
        or (torch_minor, python) in matrix.excluded
    ):
        return None
    abi = "TRUE" if cxx11_abi else "FALSE"
    return (
        f"flash_attn-{fa2_version}+cu{cuda_major}torch{torch_minor}cxx11abi{abi}-{python}-{python}-linux_{machine}.whl"
    )
