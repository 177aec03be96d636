"""The facts about one machine: plain frozen data, written to and read from JSON.

Everything the judge sees comes through these classes, so a report saved on an H100 can be
judged on a laptop (`check --facts FILE`). `SCHEMA` names the layout; bump it when a field
changes meaning, not when one is added.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

SCHEMA = "attn-doctor/report-1"


@dataclass(frozen=True)
class Gpu:
    """One GPU as the target process would see it (after CUDA_VISIBLE_DEVICES)."""

    index: int  # the index CUDA/HIP gives it inside the process
    vendor: str  # "nvidia" | "amd"
    name: str
    architecture: str  # family: "Hopper", "Ampere", "CDNA3", "unknown"
    compute_capability: str | None = None  # NVIDIA: "9.0"
    gfx_target: str | None = None  # AMD: "gfx942"
    memory_mib: int | None = None
    uuid: str | None = None
    physical_index: int | None = None  # NVML / KFD index, before CUDA_VISIBLE_DEVICES
    mig: bool = False

    @property
    def sm(self) -> str | None:
        """`sm_90` for compute capability 9.0: the name nvcc and wheel tags use."""
        if self.compute_capability is None:
            return None
        major, _, minor = self.compute_capability.partition(".")
        return f"sm_{major}{minor}"

    @property
    def target(self) -> str | None:
        """The code target a build is made for: `sm_90` on NVIDIA, `gfx942` on AMD."""
        return self.sm or self.gfx_target


@dataclass(frozen=True)
class Driver:
    """What the GPU drivers say, or why they could not be read."""

    # "ok", "no-gpu", "nvml-library-missing", "driver-not-loaded", "driver-mismatch", "nvml-error"
    nvidia_status: str
    nvidia_detail: str = ""
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # the newest CUDA the driver runs, "13.0"
    rocm_version: str | None = None
    cuda_visible_devices: str | None = None
    hidden_gpus: int = 0  # present but hidden by CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES


@dataclass(frozen=True)
class Markers:
    """The target's PEP 508 environment markers: what Requires-Dist lines are evaluated with."""

    implementation_name: str
    implementation_version: str
    os_name: str
    platform_machine: str
    platform_python_implementation: str
    platform_release: str
    platform_system: str
    platform_version: str
    python_full_version: str
    python_version: str
    sys_platform: str


@dataclass(frozen=True)
class Interpreter:
    """The target Python: the one whose packages the doctor judges."""

    executable: str
    version: str
    implementation: str
    platform: str  # sysconfig platform, "linux-x86_64"
    environment: str  # "venv" | "conda" | "system"
    prefix: str
    site_packages: tuple[str, ...] = ()
    pip_version: str | None = None
    uv: str | None = None  # path of the uv executable, if any
    externally_managed: bool = False  # PEP 668 marker on a non-venv interpreter
    uv_managed: bool = False  # a venv made by uv (its pyvenv.cfg says so): install uses uv there
    glibc: str | None = None
    markers: Markers | None = None

    @property
    def preferred_installer(self) -> str:
        """uv for a venv that uv made or one without pip, else pip: the one choice that fix
        commands and install plans share."""
        return "uv" if self.uv and (self.uv_managed or not self.pip_version) else "pip"


@dataclass(frozen=True)
class Torch:
    """torch as its `version.py` describes it: read as text, never imported."""

    version: str
    cuda: str | None  # "13.0" for a CUDA build
    hip: str | None  # set for a ROCm build
    location: str
    git_version: str | None = None
    cxx11_abi: bool | None = None  # the C++ ABI its libraries export (read from libc10's symbols)
    # the GPU code its kernels carry (libtorch_cuda.so's fatbins): "sm_90", "compute_120"; those most
    # of its kernels have, as torch.cuda.get_arch_list() lists them. Empty: not read (a ROCm or CPU
    # build, or a report from before it was read)
    cuda_code: tuple[str, ...] = ()

    @property
    def build(self) -> str:
        if self.cuda:
            return f"CUDA {self.cuda}"
        if self.hip:
            return f"ROCm/HIP {self.hip}"
        return "CPU only"


@dataclass(frozen=True)
class ModifiedFile:
    path: str  # as written in RECORD, relative to the package's location
    now_matches: str | None  # the distribution whose RECORD hash the file on disk has


@dataclass(frozen=True)
class SharedFiles:
    """Files that this distribution's RECORD and another's both list."""

    other: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Package:
    """One installed distribution, from its dist-info (metadata, RECORD, direct_url.json)."""

    name: str  # canonical name ("flash-attn-4"); the dist-info folder's when METADATA is unreadable
    version: str | None  # raw, as in METADATA; judged with `packaging`
    dist_info: str
    location: str  # the folder RECORD paths are relative to
    installer: str | None = None
    editable: bool = False
    source_url: str | None = None  # direct_url.json "url" (editable source tree, VCS, local wheel)
    metadata_problem: str | None = None  # why METADATA/RECORD could not be read, if so
    requires: tuple[str, ...] = ()
    files_total: int = 0
    files_hashed: int = 0  # compared by sha256
    files_size_only: int = 0  # large files compared by size only (full hashing with --deep)
    modified: tuple[ModifiedFile, ...] = ()
    missing: tuple[str, ...] = ()
    shared: tuple[SharedFiles, ...] = ()
    extension_modules: tuple[str, ...] = ()  # compiled modules (.so/.pyd) listed in RECORD
    record_sha256: str | None = None  # of RECORD itself: a reinstall changes it (lock files)


@dataclass(frozen=True)
class Variable:
    """An environment variable that changes what a backend does at import (the doctor's own
    environment, which the target's processes started from the same shell inherit)."""

    name: str
    value: str


@dataclass(frozen=True)
class Installed:
    """Any distribution in the target, by its dist-info folder's name: what requirements meet."""

    name: str  # canonical
    version: str | None


@dataclass(frozen=True)
class Resolution:
    """Where `import NAME` would load from, found with the import system's finders only."""

    module: str
    kind: str  # "module" | "package" | "namespace" | "missing" | "error"
    origin: str | None = None
    search_locations: tuple[str, ...] = ()
    finder: str | None = None  # class of the finder that answered first
    detail: str = ""
    # what each other finder would have given: how a losing editable mapping shows up
    other_candidates: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportResult:
    """`--deep`: importing one module in a child process of the target interpreter."""

    module: str
    # "ok" | "undefined-symbol" | "missing-cuda-library" | "unsupported-gpu" | "timeout" | "failed"
    outcome: str
    seconds: float
    detail: str = ""  # the last meaningful line of the error


@dataclass(frozen=True)
class VersionNeed:
    """A symbol version an extension needs that its library, as the loader would pick it, lacks."""

    library: str  # "libstdc++.so.6"
    version: str  # "GLIBCXX_3.4.30"
    provider: str  # the file the loader would use
    newest: str | None = None  # the newest of that family the file defines: "GLIBCXX_3.4.28"


@dataclass(frozen=True)
class Binary:
    """A compiled extension read as an ELF file: would it load next to this torch?"""

    path: str
    package: str
    needed: tuple[str, ...] = ()  # DT_NEEDED
    torch_symbols: int = 0  # torch symbols (c10::, at::, torch::) it imports
    missing_libraries: tuple[str, ...] = ()  # needed, and not found where the loader looks
    missing_symbols: tuple[str, ...] = ()  # torch symbols no torch library exports (mangled)
    readable_symbols: tuple[str, ...] = ()  # the same, demangled
    abi: str | None = None  # "cxx11" | "pre-cxx11": the C++ ABI it was built with
    torch_abi: str | None = None  # the C++ ABI torch's libraries export
    missing_versions: tuple[VersionNeed, ...] = ()  # glibc / libstdc++ too old for it
    cuda_code: tuple[str, ...] = ()  # the GPU code in its fatbins: "sm_80", "sm_90a", "compute_90"
    error: str = ""  # why the file could not be read


@dataclass(frozen=True)
class Toolchain:
    """What a source build (FA2, FA3, SageAttention 2) would need."""

    nvcc: str | None = None  # "13.0"
    nvcc_path: str | None = None
    ptxas: str | None = None  # the toolkit's own ptxas (beside the real nvcc, else in CUDA_HOME/bin)
    cuda_home: str | None = None
    ninja: str | None = None
    cxx: str | None = None
    git: str | None = None
    cpus: int = 0
    ram_gib: float = 0.0


@dataclass(frozen=True)
class Ptxas:
    """A ptxas that Triton compiles its kernels with (flex attention, SageAttention 1), by the CUDA
    release its own version string names; never run."""

    path: str
    role: str  # "ptxas": Triton's default; "ptxas-blackwell": what Triton uses for sm_100 and newer
    release: str | None  # "12.8"; None: no version string found
    variable: str | None = None  # the variable that points Triton at it (TRITON_PTXAS_PATH), else bundled


@dataclass(frozen=True)
class HubKernel:
    """A kernel repository of the Hugging Face Hub found in the local cache (what transformers'
    `attn_implementation: org/name` loads through `kernels`), with the build variants cached."""

    repo: str  # "kernels-community/flash-attn3"
    variants: tuple[str, ...]  # build/ folder names: "torch-stable-abi29-cu130-x86_64-linux"
    cache: str  # the snapshots' folder
    # the compiled files of the cached builds `kernels` would load for this torch, read as ELF files
    # (the libraries they need, torch's symbols, their GPU code), as an installed extension is
    binaries: tuple[Binary, ...] = ()


@dataclass(frozen=True)
class Facts:
    """Everything `check` read off one machine."""

    gpus: tuple[Gpu, ...]
    driver: Driver
    python: Interpreter
    torch: Torch | None
    packages: tuple[Package, ...]
    resolutions: tuple[Resolution, ...]
    toolchain: Toolchain
    imports: tuple[ImportResult, ...] = ()
    binaries: tuple[Binary, ...] = ()
    # FA4 ships flash_bwd_sm90.py: it can train on Hopper (the upstream doc said the pip package
    # had no SM90 backward; 4.0.0b36 has it). None: no FA4 files to look at.
    fa4_sm90_backward: bool | None = None
    torch_problem: str | None = None  # torch is installed but its version.py is unreadable
    installed: tuple[Installed, ...] = ()  # every distribution; empty in reports before it was read
    environment: tuple[Variable, ...] = ()  # the set ones of rules.backends.VARIABLES
    unfinished_repairs: tuple[str, ...] = ()  # repair folders whose journal says it was interrupted
    # "distribution:path" of installed files in which the registry's FileMark was found (a broken
    # build of a release that a good build shares the version of)
    marked_files: tuple[str, ...] = ()
    ptxas: tuple[Ptxas, ...] = ()  # Triton's, where Triton is installed
    hub_kernels: tuple[HubKernel, ...] = ()  # the local Hub cache's kernels, where `kernels` is installed
    # how the target was chosen: "--python", "$VIRTUAL_ENV", "$CONDA_PREFIX", a .venv's folder, or
    # "this Python" (the doctor's own, where nothing else named one); "" in older reports
    target_found_by: str = ""
    hostname: str = ""
    collected_at: str = ""
    doctor_version: str = ""

    def variable(self, name: str) -> str | None:
        return next((v.value for v in self.environment if v.name == name), None)

    def package(self, name: str) -> Package | None:
        for package in self.packages:
            if package.name == name:
                return package
        return None

    def hub_kernel(self, repo: str) -> HubKernel | None:
        return next((k for k in self.hub_kernels if k.repo == repo), None)

    def resolution(self, module: str) -> Resolution | None:
        for resolution in self.resolutions:
            if resolution.module == module:
                return resolution
        return None


class FactsError(ValueError):
    """A saved report that cannot be read as facts."""


def to_data(value: Any) -> Any:
    """Plain JSON-ready data for a facts object (dataclasses become dicts, tuples lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [to_data(item) for item in value]
    if isinstance(value, dict):
        return {str(k): to_data(v) for k, v in value.items()}
    return value


T = typing.TypeVar("T")


def from_data(cls: type[T], data: Any) -> T:
    """Rebuild a facts dataclass from `to_data`'s output; unknown keys are ignored so that
    a report from a newer doctor with extra fields still reads."""
    return typing.cast(T, _convert(cls, data, cls.__name__))


# Fields the rules take apart with int() ("9.0" -> 9): a saved report with "abc" there is bad input,
# said here once, rather than an internal error wherever a rule reads it.
_VERSION_FORMAT = re.compile(r"\d+(\.\d+)+")
_FORMATTED = {
    (Gpu, "compute_capability"),
    (Driver, "cuda_driver_version"),
    (Toolchain, "nvcc"),
}


def _check_format(cls: Any, name: str, value: Any, where: str) -> None:
    if (cls, name) in _FORMATTED and isinstance(value, str) and not _VERSION_FORMAT.fullmatch(value):
        raise FactsError(f"{where}: {value!r} is not a version number like 9.0")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A class's field types, evaluated once: a report holds hundreds of objects of a few classes."""
    return typing.get_type_hints(cls)


def _convert(hint: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if data is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _convert(inner[0], data, where)
    if origin is tuple:
        if not isinstance(data, list):
            raise FactsError(f"{where}: expected a list, got {type(data).__name__}")
        item = typing.get_args(hint)[0]
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(data))
    if dataclasses.is_dataclass(hint):
        if not isinstance(data, dict):
            raise FactsError(f"{where}: expected an object, got {type(data).__name__}")
        hints = _hints(typing.cast(type, hint))
        kwargs = {}
        for f in dataclasses.fields(hint):
            if f.name in data:
                kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
                _check_format(hint, f.name, kwargs[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise FactsError(f"{where}: missing field {f.name!r}")
        return typing.cast(Any, hint)(**kwargs)
    if hint is float and isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    if hint in (str, int, bool) and type(data) is hint:
        return data
    raise FactsError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {data!r}")
