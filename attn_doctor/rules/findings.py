"""Findings and the catalog of their stable codes.

Every code the doctor can emit is declared here once, with its severity, what it means and
where the rule comes from. `docs/findings.md` is generated from this table
(`attn-doctor explain --markdown`) and a test keeps the two equal, so they cannot drift.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.IntEnum):
    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Rule:
    code: str
    severity: Severity
    meaning: str
    source: str


class Kind(str, enum.Enum):
    """What a finding is about."""

    GPU = "gpu"  # by its index: "0"
    DISTRIBUTION = "distribution"  # by canonical name: "flash-attn-4"
    MODULE = "module"  # by import name: "flash_attn.cute"
    TOOL = "tool"  # "nvcc", "ninja"
    CONFIG = "config"  # the Axolotl config given with --config


@dataclass(frozen=True)
class Subject:
    kind: Kind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.name}"


def distribution(name: str) -> Subject:
    return Subject(Kind.DISTRIBUTION, name)


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    title: str  # one line, with this machine's specifics
    fix: tuple[str, ...] = ()  # exact commands, in order
    evidence: tuple[str, ...] = ()  # the facts that triggered it (shown with -v)
    subject: Subject | None = None  # what it is about

    def concerns(self, kind: Kind, name: str | None) -> bool:
        return self.subject is not None and self.subject.kind is kind and self.subject.name == name


_K = "KNOWLEDGE.md"
RULES: tuple[Rule, ...] = (
    # GPU and driver
    Rule(
        "no-gpu",
        Severity.WARNING,
        "No NVIDIA or AMD GPU was found; every attention backend but CPU SDPA needs one.",
        "NVML nvmlDeviceGetCount; KFD sysfs topology",
    ),
    Rule(
        "nvml-library-missing",
        Severity.WARNING,
        "libnvidia-ml.so (the NVIDIA driver's management library) could not be loaded: no NVIDIA driver, "
        "or a container started without the GPU.",
        "NVML_ERROR_LIBRARY_NOT_FOUND (nvml.h)",
    ),
    Rule(
        "driver-not-loaded",
        Severity.ERROR,
        "The NVIDIA kernel driver is not loaded.",
        "NVML_ERROR_DRIVER_NOT_LOADED (nvml.h)",
    ),
    Rule(
        "driver-mismatch",
        Severity.ERROR,
        "The NVIDIA user-space library and kernel module have different versions (typically after a driver "
        "upgrade without a reboot); CUDA fails until they match.",
        "NVML_ERROR_LIB_RM_VERSION_MISMATCH (nvml.h)",
    ),
    Rule(
        "nvml-error",
        Severity.ERROR,
        "An NVML call failed; the GPUs could not be read.",
        "nvml.h return codes",
    ),
    Rule(
        "gpus-hidden",
        Severity.WARNING,
        "CUDA_VISIBLE_DEVICES hides every GPU from the processes this environment starts.",
        "CUDA runtime: CUDA_VISIBLE_DEVICES",
    ),
    Rule(
        "mig-enabled",
        Severity.INFO,
        "A GPU is in MIG mode: processes see MIG slices, each with a part of the GPU's memory and SMs.",
        "NVML nvmlDeviceGetMigMode",
    ),
    # Python and torch
    Rule(
        "python-externally-managed",
        Severity.INFO,
        "The target is a system Python marked EXTERNALLY-MANAGED (PEP 668): pip refuses to install into it.",
        "PEP 668",
    ),
    Rule(
        "torch-missing",
        Severity.WARNING,
        "torch is not installed in the target environment; every backend needs it.",
        "each backend's requirements",
    ),
    Rule(
        "torch-unreadable",
        Severity.ERROR,
        "torch is installed but its version.py could not be read.",
        "torch/version.py, written by torch's setup.py",
    ),
    Rule(
        "torch-cpu-only",
        Severity.ERROR,
        "torch is a CPU-only build while a GPU is present: no GPU attention backend can run.",
        "torch/version.py cuda/hip fields",
    ),
    Rule(
        "torch-wrong-gpu-vendor",
        Severity.ERROR,
        "torch is built for the other GPU vendor (CUDA build on AMD, or ROCm build on NVIDIA).",
        "torch/version.py cuda/hip fields",
    ),
    Rule(
        "torch-cuda-too-new",
        Severity.ERROR,
        "torch's CUDA major version is newer than the newest CUDA the driver supports: CUDA calls fail "
        '("driver too old").',
        "CUDA compatibility guide: minor-version compatibility is within one major",
    ),
    Rule(
        "torch-cuda-minor-newer",
        Severity.WARNING,
        "torch's CUDA minor version is newer than the driver's: it runs under minor-version compatibility, "
        "but kernels that need PTX JIT (Triton, FA4's CuTe DSL) may fail.",
        "CUDA compatibility guide, minor-version compatibility limits",
    ),
    # packages
    Rule(
        "package-metadata-broken",
        Severity.ERROR,
        "A distribution's dist-info is broken (no METADATA, no RECORD, unreadable bytes or an invalid "
        "version): pip cannot upgrade or uninstall it cleanly.",
        "PEP 376 / PEP 627 dist-info layout",
    ),
    Rule(
        "package-duplicate",
        Severity.ERROR,
        "Two dist-info folders for the same distribution: which files are whose is undefined.",
        "PEP 376",
    ),
    Rule(
        "package-files-modified",
        Severity.WARNING,
        "Files of a package no longer match the sha256 its RECORD holds, or are missing.",
        "PEP 376 RECORD",
    ),
    Rule(
        "flash-attn-4-placeholder",
        Severity.ERROR,
        "flash-attn-4 0.0.1 is the yanked 'coming soon' placeholder: it installs no flash_attn.cute.",
        f"{_K} §1; PyPI flash-attn-4 0.0.1 (yanked)",
    ),
    Rule(
        "sageattention-v1",
        Severity.WARNING,
        "sageattention 1.x (PyPI's only releases) is SageAttention 1, Triton only; `import sageattention` "
        "succeeds, but it is not SageAttention 2.",
        f"{_K} §5; PyPI sageattention 0.1.0-1.0.6",
    ),
    Rule(
        "package-requirements-unmet",
        Severity.ERROR,
        "An attention package (or torch) requires a distribution that is missing or in a version its "
        "Requires-Dist does not allow (markers evaluated for the target, as `pip check` does): it fails at "
        "import or at run time. Seen: flash-attn-4 installed with --no-deps, `No module named 'cutlass'`.",
        "PEP 508 / core metadata Requires-Dist; https://pip.pypa.io/en/stable/cli/pip_check/",
    ),
    Rule(
        "backend-unsupported-gpu",
        Severity.ERROR,
        "An installed attention backend, in the installed release, cannot run on a GPU of this machine "
        "(e.g. FA2 on a T4, FA3 on an RTX 5090): code that selects it fails there.",
        "each backend's rule in `attn-doctor explain BACKEND`, with its upstream source",
    ),
    Rule(
        "package-lookalike",
        Severity.WARNING,
        "A distribution installs a backend's module under another backend's name (FA3's beta published as "
        "flash_attn 3.0.0b1): code that expects the named backend gets the other.",
        "https://pypi.org/project/flash-attn/#history",
    ),
    # the FA2/FA4 collisions
    Rule(
        "fa4-shadowed",
        Severity.ERROR,
        "flash-attn-4 is installed but `flash_attn.cute` resolves to another copy (FA2's stale cute/ stub): "
        "FA4's code never runs.",
        f"{_K} §4.1 (editable FA4 + FA2, seen)",
    ),
    Rule(
        "fa4-files-overwritten",
        Severity.ERROR,
        "Files of flash-attn-4 on disk no longer have FA4's RECORD hashes: another distribution (FA2) wrote "
        "its own copy over them.",
        f"{_K} §4.2 (both wheels, seen)",
    ),
    Rule(
        "fa4-files-missing",
        Severity.ERROR,
        "Files of flash-attn-4 are gone (typically `pip uninstall flash-attn` took them): `import "
        "flash_attn.cute` gives an empty namespace package.",
        f"{_K} §4.3 (seen)",
    ),
    Rule(
        "fa2-uninstall-breaks-fa4",
        Severity.WARNING,
        "flash-attn's RECORD lists files that flash-attn-4 owns too: `pip uninstall flash-attn` would "
        "delete them and break FA4.",
        f"{_K} §4.3 (seen)",
    ),
    Rule(
        "fa2-extension-missing",
        Severity.ERROR,
        "flash-attn is installed without its compiled extension flash_attn_2_cuda: `import flash_attn` "
        "fails, and so does everything under flash_attn (FA4 included).",
        f"{_K} §2",
    ),
    # --deep import health
    Rule(
        "import-undefined-symbol",
        Severity.ERROR,
        "A compiled extension was built against another torch (C++ ABI): the import fails with `undefined symbol`.",
        "dlopen(3); torch's C++ ABI changes between minor releases",
    ),
    Rule(
        "import-missing-cuda-library",
        Severity.ERROR,
        "A CUDA/ROCm shared library the extension links against cannot be found.",
        "dlopen(3)",
    ),
    Rule(
        "import-unsupported-gpu",
        Severity.ERROR,
        "The backend has no kernels for this GPU's architecture.",
        "the backend's own error text",
    ),
    Rule("import-timeout", Severity.ERROR, "Importing the backend did not finish in time.", "attn-doctor"),
    Rule("import-failed", Severity.ERROR, "Importing the backend failed.", "the import's own error text"),
    # compiled extensions read as ELF files, before anything is imported
    Rule(
        "abi-undefined-symbol",
        Severity.ERROR,
        "A compiled extension imports torch symbols that the installed torch does not export: importing it "
        "fails with `undefined symbol`. It was built for another torch.",
        "the extension's and torch's ELF dynamic symbol tables (predicted; --deep shows the real import)",
    ),
    Rule(
        "abi-cxx11-mismatch",
        Severity.ERROR,
        "A compiled extension was built with the other C++ ABI (_GLIBCXX_USE_CXX11_ABI) than torch: every "
        "std::string in its torch calls is mangled differently, so it cannot load.",
        "the mangled std::string in the extension's imports against torch's c10::detail::torchCheckFail",
    ),
    Rule(
        "abi-missing-library",
        Severity.ERROR,
        "A compiled extension needs a shared library (DT_NEEDED) that the dynamic loader will not find, "
        "typically the CUDA runtime of another CUDA major.",
        "the extension's DT_NEEDED, RUNPATH, LD_LIBRARY_PATH, the loader cache, torch's loaded libraries",
    ),
    Rule("abi-unreadable", Severity.WARNING, "A compiled extension could not be read as an ELF file.", "pyelftools"),
    # the CI gate
    Rule("drift-gpu", Severity.ERROR, "The GPU generations differ from the lock file's.", "attn-doctor lock"),
    Rule("drift-torch", Severity.ERROR, "torch's version or build differs from the lock file's.", "attn-doctor lock"),
    Rule(
        "drift-package",
        Severity.ERROR,
        "An attention package was added, removed, changed version, or reinstalled (its RECORD differs) since the "
        "lock file was written.",
        "attn-doctor lock",
    ),
    # an Axolotl config (--config), judged against this machine
    Rule(
        "config-s2-attention",
        Severity.ERROR,
        "s2_attention is rejected by Axolotl since v0.17.0.",
        "Axolotl deprecated.py (PR #3664)",
    ),
    Rule(
        "config-mixed-attention-keys",
        Severity.ERROR,
        "attn_implementation and a legacy attention flag are both set: Axolotl raises an error.",
        "Axolotl config.py",
    ),
    Rule(
        "config-several-attention-flags",
        Severity.WARNING,
        "Several legacy attention flags are set: the highest-priority one silently wins.",
        "Axolotl enums.py LEGACY_ATTN_FLAG_TO_IMPL",
    ),
    Rule(
        "config-unknown-attention",
        Severity.ERROR,
        "attn_implementation names no backend Axolotl knows.",
        "Axolotl enums.py CANONICAL_ATTN_IMPLS",
    ),
    Rule(
        "config-backend-unavailable",
        Severity.ERROR,
        "The config asks for a backend that is missing, broken, or does not run on this GPU.",
        "the facts of this machine and attn_doctor/rules/backends.py",
    ),
    Rule(
        "config-flex-without-compile",
        Severity.WARNING,
        "Flex attention without torch_compile.",
        "Axolotl docs (recommended, not enforced)",
    ),
    Rule(
        "config-sage-full-finetune",
        Severity.WARNING,
        "SageAttention on a full fine-tune (no adapter): no backward pass; loss seen to drop to 0.",
        "thu-ml/SageAttention #90, #198; Axolotl check_sageattn_fft",
    ),
    Rule(
        "config-fa4-head-dims",
        Severity.WARNING,
        "FA4 cannot take the model's head dims on this GPU: Axolotl falls back to FA2.",
        "FA4 _validate_head_dims (4.0.0b36); Axolotl flash_attn_4.py",
    ),
    # toolchain (matters for source builds: FA2 without a wheel, FA3, SageAttention 2)
    Rule(
        "nvcc-torch-cuda-mismatch",
        Severity.WARNING,
        "nvcc's CUDA major differs from torch's: torch's cpp_extension refuses to build FA2/FA3/SageAttention.",
        "torch.utils.cpp_extension._check_cuda_version",
    ),
    Rule(
        "build-tool-missing",
        Severity.INFO,
        "A tool a source build needs (nvcc, ninja, a C++ compiler) is missing: only installs that compile "
        "are affected.",
        "FA2 setup.py (ninja: ~2 h without it)",
    ),
)

_BY_CODE = {rule.code: rule for rule in RULES}


def rule(code: str) -> Rule:
    return _BY_CODE[code]


def finding(
    code: str,
    title: str,
    fix: tuple[str, ...] | list[str] = (),
    evidence: tuple[str, ...] | list[str] = (),
    subject: Subject | None = None,
) -> Finding:
    """A finding of a catalogued code; its severity always comes from the catalog."""
    return Finding(code, rule(code).severity, title, tuple(fix), tuple(evidence), subject)
