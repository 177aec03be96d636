"""Findings and the catalog of their rules.

Every rule the doctor can raise is a constant here, declared once with its stable code, its
severity, what it means, where it comes from, how its fix was proven and the groups other layers
ask about (a collision that fix-shadow repairs, what --no-gpu-ok forgives). Checks, actions and
renderers pass these constants, never the code as a string. `docs/findings.md` is generated from
`RULES` (`attn-doctor explain --markdown`) and a test keeps the two equal.
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


class Group(enum.Enum):
    """What other layers ask of a rule, said once on the rule itself."""

    COLLISION = "an FA2/FA4 collision: fix-shadow repairs it, install hands it over to fix-shadow"
    NO_GPU = "a machine without a GPU: --no-gpu-ok forgives it"
    # what the finding concerns cannot run on a GPU here, so neither can a backend that runs through
    # it (Backend.runs_through: SDPA and flex through torch, flex through Triton too)
    CANNOT_RUN_HERE = "it cannot run on a GPU here: every backend that runs through it is unusable"
    # a known fault of a backend that still runs: the recommendation says it beside that backend
    CAVEAT = "a known fault of a backend that runs through it: said beside the recommendation"


@dataclass(frozen=True)
class Rule:
    code: str
    severity: Severity
    meaning: str
    source: str
    # how its fix was proven: "ran: TEST" (the fix, run on real files, clears it), "inputs: TEST" (it
    # cannot run here: its inputs are checked), "unproven: why" or "no fix: why"
    proof: str = ""
    groups: frozenset[Group] = frozenset()

    def is_in(self, group: Group) -> bool:
        return group in self.groups


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


def distribution(name: str) -> Subject:
    return Subject(Kind.DISTRIBUTION, name)


@dataclass(frozen=True)
class Finding:
    rule: Rule
    title: str  # one line, with this machine's specifics
    fix: tuple[str, ...] = ()  # exact commands, in order
    evidence: tuple[str, ...] = ()  # the facts that triggered it (shown with -v)
    subject: Subject | None = None  # what it is about

    @property
    def code(self) -> str:
        return self.rule.code

    @property
    def severity(self) -> Severity:
        return self.rule.severity

    def concerns(self, kind: Kind, name: str | None) -> bool:
        return self.subject is not None and self.subject.kind is kind and self.subject.name == name


_FA = "https://github.com/Dao-AILab/flash-attention/blob/v2.8.3"
_AX = "https://github.com/axolotl-ai-cloud/axolotl/blob/v0.18.0/src/axolotl"

# GPU and driver
NO_GPU = Rule(
    "no-gpu",
    Severity.WARNING,
    "No NVIDIA or AMD GPU was found; every attention backend but CPU SDPA needs one.",
    "NVML nvmlDeviceGetCount; KFD sysfs topology",
    proof="no fix: nothing to run (a machine without a GPU)",
    groups=frozenset({Group.NO_GPU}),
)
NVML_LIBRARY_MISSING = Rule(
    "nvml-library-missing",
    Severity.WARNING,
    "libnvidia-ml.so (the NVIDIA driver's management library) could not be loaded: no NVIDIA driver, "
    "or a container started without the GPU.",
    "NVML_ERROR_LIBRARY_NOT_FOUND (nvml.h)",
    proof="unproven: installing a driver or starting a container with --gpus needs the hardware",
    groups=frozenset({Group.NO_GPU}),
)
DRIVER_NOT_LOADED = Rule(
    "driver-not-loaded",
    Severity.ERROR,
    "The NVIDIA kernel driver is not loaded.",
    "NVML_ERROR_DRIVER_NOT_LOADED (nvml.h)",
    proof="unproven: `modprobe nvidia` needs the hardware and root",
)
DRIVER_MISMATCH = Rule(
    "driver-mismatch",
    Severity.ERROR,
    "The NVIDIA user-space library and kernel module have different versions (typically after a driver "
    "upgrade without a reboot); CUDA fails until they match.",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH (nvml.h)",
    proof="unproven: a reboot into the matching kernel module needs the hardware",
)
NVML_ERROR = Rule(
    "nvml-error",
    Severity.ERROR,
    "An NVML call failed; the GPUs could not be read.",
    "nvml.h return codes",
    proof="unproven: `nvidia-smi` only shows whether the driver answers",
)
GPUS_HIDDEN = Rule(
    "gpus-hidden",
    Severity.WARNING,
    "CUDA_VISIBLE_DEVICES hides every GPU from the processes this environment starts.",
    "CUDA runtime: CUDA_VISIBLE_DEVICES",
    proof="ran: tests/test_fixes.py::test_cuda_visible_devices_that_hide_every_gpu",
    groups=frozenset({Group.NO_GPU}),
)
MIG_ENABLED = Rule(
    "mig-enabled",
    Severity.INFO,
    "A GPU is in MIG mode: processes see MIG slices, each with a part of the GPU's memory and SMs.",
    "NVML nvmlDeviceGetMigMode",
    proof="no fix: MIG is the owner's choice",
)

# Python and torch
PYTHON_EXTERNALLY_MANAGED = Rule(
    "python-externally-managed",
    Severity.INFO,
    "The target is a system Python marked EXTERNALLY-MANAGED (PEP 668): pip refuses to install into it.",
    "https://peps.python.org/pep-0668/",
    proof="ran: tests/test_fixes.py::test_a_pep_668_python_gets_a_venv",
)
REPAIR_UNFINISHED = Rule(
    "repair-unfinished",
    Severity.ERROR,
    "An attn-doctor repair or install of this environment was killed half-way (its journal says so): the "
    "environment is between what it was and what was planned.",
    "attn-doctor's journal (<env>/.attn-doctor/repairs/<id>/journal.json)",
    proof="ran: tests/test_fixes.py::test_an_interrupted_repair_is_reported_and_undone",
)
TORCH_MISSING = Rule(
    "torch-missing",
    Severity.WARNING,
    "torch is not installed in the target environment; every backend needs it.",
    "each backend's requirements",
    proof=("unproven: `pip install torch` from the index fetches gigabytes (tests install the CPU torch file instead)"),
)
TORCH_UNREADABLE = Rule(
    "torch-unreadable",
    Severity.ERROR,
    "torch is installed but its version.py could not be read.",
    "torch/version.py, written by torch's setup.py",
    proof="unproven: a reinstall of torch from the index",
)
TORCH_CPU_ONLY = Rule(
    "torch-cpu-only",
    Severity.ERROR,
    "torch is a CPU-only build while a GPU is present: no GPU attention backend can run.",
    "torch/version.py cuda/hip fields",
    proof="unproven: a CUDA torch needs the GPU machine",
)
TORCH_WRONG_GPU_VENDOR = Rule(
    "torch-wrong-gpu-vendor",
    Severity.ERROR,
    "torch is built for the other GPU vendor (CUDA build on AMD, or ROCm build on NVIDIA).",
    "torch/version.py cuda/hip fields",
    proof="unproven: the other vendor's torch needs its GPU",
)
TORCH_CUDA_TOO_NEW = Rule(
    "torch-cuda-too-new",
    Severity.ERROR,
    "torch's CUDA major version is newer than the newest CUDA the driver supports: CUDA calls fail "
    '("driver too old").',
    "https://docs.nvidia.com/deploy/cuda-compatibility/ (minor-version compatibility is within one major)",
    proof="unproven: a driver upgrade needs the hardware",
)
TORCH_CUDA_MINOR_NEWER = Rule(
    "torch-cuda-minor-newer",
    Severity.WARNING,
    "torch's CUDA minor version is newer than the driver's: it runs under minor-version compatibility, "
    "but kernels that need PTX JIT (Triton, FA4's CuTe DSL) may fail.",
    "https://docs.nvidia.com/deploy/cuda-compatibility/#minor-version-compatibility (PTX JIT limits)",
    proof="inputs: tests/test_fixes.py::test_a_torch_for_a_newer_cuda_minor_names_the_build_for_the_driver",
)

# packages
PACKAGE_METADATA_BROKEN = Rule(
    "package-metadata-broken",
    Severity.ERROR,
    "A distribution's dist-info is broken (no METADATA, no RECORD, unreadable bytes or an invalid "
    "version): pip cannot upgrade or uninstall it cleanly.",
    "https://packaging.python.org/en/latest/specifications/recording-installed-packages/",
    proof="ran: tests/test_fixes.py::test_a_stale_second_dist_info_and_a_broken_one_are_set_aside",
)
PACKAGE_DUPLICATE = Rule(
    "package-duplicate",
    Severity.ERROR,
    "Two dist-info folders for the same distribution: which files are whose is undefined.",
    "https://packaging.python.org/en/latest/specifications/recording-installed-packages/",
    proof="ran: tests/test_fixes.py::test_a_stale_second_dist_info_and_a_broken_one_are_set_aside",
)
PACKAGE_FILES_MODIFIED = Rule(
    "package-files-modified",
    Severity.WARNING,
    "Files of a package no longer match the sha256 its RECORD holds, or are missing.",
    "https://packaging.python.org/en/latest/specifications/recording-installed-packages/#the-record-file",
    proof="ran: tests/test_fixes.py::test_files_changed_by_hand_are_reinstalled",
)
FLASH_ATTN_4_PLACEHOLDER = Rule(
    "flash-attn-4-placeholder",
    Severity.ERROR,
    "flash-attn-4 0.0.1 is the yanked 'coming soon' placeholder: it installs no flash_attn.cute.",
    "https://pypi.org/project/flash-attn-4/0.0.1/ (yanked)",
    proof=(
        "inputs: tests/test_install_plans.py::test_fa4_on_the_h100_is_one_pinned_pip_step_with_the_cu13_extra "
        "(its fix is `attn-doctor install fa4`, run on the H100: tests/fixtures/h100-install-fa4.txt)"
    ),
)
SAGEATTENTION_V1 = Rule(
    "sageattention-v1",
    Severity.WARNING,
    "sageattention 1.x (PyPI's only releases) is SageAttention 1, Triton only; `import sageattention` "
    "succeeds, but it is not SageAttention 2.",
    "https://pypi.org/project/sageattention/#history (0.1.0-1.0.6 only); 2.x: "
    "https://github.com/thu-ml/SageAttention/tree/v2.2.0",
    proof="inputs: tests/test_fixes.py::test_sageattention_1_on_a_t4_is_steered_to_what_runs_there",
)
SAGEATTENTION_HOPPER_NO_KERNEL = Rule(
    "sageattention-hopper-no-kernel",
    Severity.ERROR,
    "SageAttention 2.2.0 built from its v2.2.0 tag: its sm90_compile.py registers the fake (shape-only) op "
    "under the real op's Python name, so on Hopper sageattn() returns torch.empty() without running the "
    "kernel: garbage, no error (seen on an H100: relative error 6-14 against the float32 reference). "
    "Told by that file; the commit that fixes it is still version 2.2.0.",
    "https://github.com/thu-ml/SageAttention/blob/v2.2.0/sageattention/sm90_compile.py#L76-L77; "
    "https://github.com/thu-ml/SageAttention/issues/288; fixed by https://github.com/thu-ml/SageAttention/pull/307",
    proof="inputs: tests/test_packages.py::test_sageattention_built_from_its_v2_2_0_tag_on_hopper "
    "(the fix, `attn-doctor install sage` from ff71e1e, ran on the H100: tests/fixtures/h100-sage2-ff71e1e.txt)",
)
PACKAGE_REQUIREMENTS_UNMET = Rule(
    "package-requirements-unmet",
    Severity.ERROR,
    "An attention package (or torch) requires a distribution that is missing or in a version its "
    "Requires-Dist does not allow (markers evaluated for the target, as `pip check` does): it fails at "
    "import or at run time. Seen: flash-attn-4 installed with --no-deps, `No module named 'cutlass'`.",
    "PEP 508 / core metadata Requires-Dist; https://pip.pypa.io/en/stable/cli/pip_check/",
    proof="ran: tests/test_registry.py::test_the_requirements_fix_clears_it",
)
BACKEND_UNSUPPORTED_GPU = Rule(
    "backend-unsupported-gpu",
    Severity.ERROR,
    "An installed attention backend, in the installed release, cannot run on a GPU of this machine "
    "(e.g. FA2 on a T4, FA3 on an RTX 5090): code that selects it fails there.",
    "each backend's rule in `attn-doctor explain BACKEND`, with its upstream source",
    proof="inputs: tests/test_registry.py::test_installed_but_cannot_run_here",
)
PACKAGE_LOOKALIKE = Rule(
    "package-lookalike",
    Severity.WARNING,
    "A distribution installs a backend's module under another backend's name (FA3's beta published as "
    "flash_attn 3.0.0b1): code that expects the named backend gets the other.",
    "https://pypi.org/project/flash-attn/#history",
    proof="inputs: tests/test_registry.py::test_fa3_beta_published_as_flash_attn_is_not_fa2",
)

# the FA2/FA4 collisions
FA4_SHADOWED = Rule(
    "fa4-shadowed",
    Severity.ERROR,
    "flash-attn-4 is installed but `flash_attn.cute` resolves to another copy (FA2's stale cute/ stub): "
    "FA4's code never runs.",
    f"{_FA}/flash_attn/cute (FA2's copy); setuptools' editable finder is asked after the path finders: "
    "https://github.com/pypa/setuptools/blob/v80.9.0/setuptools/command/editable_wheel.py",
    proof="ran: tests/test_fix_shadow.py::test_repair_then_undo",
    groups=frozenset({Group.COLLISION}),
)
FA4_HIDDEN = Rule(
    "fa4-hidden",
    Severity.ERROR,
    "Another flash_attn package earlier on sys.path (PYTHONPATH, a .pth folder, the user site, a "
    "`pip --target` folder) has no cute/: `flash_attn.cute` is looked for in it alone, so the installed "
    "flash-attn-4 is never imported.",
    "https://docs.python.org/3/reference/import.html#regular-packages (a regular package's __path__ is its own folder)",
    proof="ran: tests/test_fixes.py::test_fa4_hidden_by_an_older_flash_attn_earlier_on_sys_path",
)
FA2_ROCM_TRITON_DISABLED = Rule(
    "fa2-rocm-triton-disabled",
    Severity.ERROR,
    "FA2 built for ROCm through Triton (no compiled flash_attn_2_cuda) imports only with "
    "FLASH_ATTENTION_TRITON_AMD_ENABLE=TRUE (FA2 2.7.1 to 2.8.3.post1); without it `import flash_attn` fails.",
    f"{_FA}/flash_attn/flash_attn_interface.py#L11-L15",
    proof="ran: tests/test_fixes.py::test_fa2_rocm_triton_build_needs_its_variable",
)
XFORMERS_FA4_NAMESPACE = Rule(
    "xformers-fa4-namespace",
    Severity.ERROR,
    "xFormers (0.0.34 on, or 0.0.30 on without its bundled flash kernels) next to flash-attn-4 and no FA2: "
    "FA4's flash_attn/ namespace makes xformers.ops import flash_attn.flash_attn_interface, which only FA2 "
    "has, so `import xformers.ops` fails.",
    "https://github.com/facebookresearch/xformers/blob/v0.0.35/xformers/ops/fmha/flash.py#L57-L59",
    proof="ran: tests/test_fixes.py::test_xformers_next_to_fa4",
)
FA4_FILES_OVERWRITTEN = Rule(
    "fa4-files-overwritten",
    Severity.ERROR,
    "Files of flash-attn-4 on disk no longer have FA4's RECORD hashes: another distribution (FA2) wrote "
    "its own copy over them.",
    f"{_FA}/flash_attn/cute and https://pypi.org/project/flash-attn-4/4.0.0b36/ both write flash_attn/cute/ (seen)",
    proof="ran: tests/test_fix_shadow.py::test_repair_then_undo",
    groups=frozenset({Group.COLLISION}),
)
FA4_FILES_MISSING = Rule(
    "fa4-files-missing",
    Severity.ERROR,
    "Files of flash-attn-4 are gone (typically `pip uninstall flash-attn` took them): `import "
    "flash_attn.cute` gives an empty namespace package.",
    "https://pip.pypa.io/en/stable/cli/pip_uninstall/ (every RECORD path is removed; seen)",
    proof="ran: tests/test_fix_shadow.py::test_repair_then_undo",
    groups=frozenset({Group.COLLISION}),
)
FA2_UNINSTALL_BREAKS_FA4 = Rule(
    "fa2-uninstall-breaks-fa4",
    Severity.WARNING,
    "flash-attn's RECORD lists files that flash-attn-4 owns too: `pip uninstall flash-attn` would "
    "delete them and break FA4.",
    "https://pip.pypa.io/en/stable/cli/pip_uninstall/ (every RECORD path is removed; seen)",
    proof="ran: tests/test_fix_shadow.py::test_fa2_keeps_working_and_its_uninstall_spares_fa4",
    groups=frozenset({Group.COLLISION}),
)
FA2_EXTENSION_MISSING = Rule(
    "fa2-extension-missing",
    Severity.ERROR,
    "flash-attn is installed without its compiled extension flash_attn_2_cuda: `import flash_attn` "
    "fails, and so does everything under flash_attn (FA4 included).",
    f"{_FA}/flash_attn/flash_attn_interface.py (imports flash_attn_2_cuda)",
    proof=(
        "inputs: tests/test_collisions.py::test_fa2_without_extension (a CUDA compile: "
        "FLASH_ATTENTION_FORCE_BUILD=TRUE asserted)"
    ),
)

# --deep import health
IMPORT_UNDEFINED_SYMBOL = Rule(
    "import-undefined-symbol",
    Severity.ERROR,
    "A compiled extension was built against another torch (C++ ABI): the import fails with `undefined symbol`.",
    "dlopen(3); torch's C++ ABI changes between minor releases",
    proof=(
        "inputs: tests/test_deep_imports.py::test_undefined_symbol (FA2: a forced compile; xFormers and "
        "SageAttention 2: tests/test_fixes.py)"
    ),
)
IMPORT_MISSING_CUDA_LIBRARY = Rule(
    "import-missing-cuda-library",
    Severity.ERROR,
    "A CUDA/ROCm shared library the extension links against cannot be found.",
    "dlopen(3)",
    proof="inputs: tests/test_deep_imports.py::test_missing_cuda_library",
)
IMPORT_UNSUPPORTED_GPU = Rule(
    "import-unsupported-gpu",
    Severity.ERROR,
    "The backend has no kernels for this GPU's architecture.",
    "the backend's own error text",
    proof="unproven: needs a GPU the backend has no kernels for",
)
IMPORT_MISSING_SYMBOL_VERSION = Rule(
    "import-missing-symbol-version",
    Severity.ERROR,
    "Importing the backend failed with `version ... not found`: a glibc or libstdc++ older than the one it "
    "was built against.",
    "the dynamic loader's error text (ld.so)",
    proof="inputs: tests/test_binaries.py::test_a_libstdcxx_or_glibc_too_old",
)
IMPORT_TIMEOUT = Rule(
    "import-timeout",
    Severity.ERROR,
    "Importing the backend did not finish in time.",
    "attn-doctor",
    proof="no fix: the import may only be slow (--deep's timeout)",
)
IMPORT_FAILED = Rule(
    "import-failed",
    Severity.ERROR,
    "Importing the backend failed.",
    "the import's own error text",
    proof="unproven: the cause is in the import's own message",
)

# compiled extensions read as ELF files, before anything is imported
ABI_UNDEFINED_SYMBOL = Rule(
    "abi-undefined-symbol",
    Severity.ERROR,
    "A compiled extension imports torch symbols that the installed torch does not export: importing it "
    "fails with `undefined symbol`. It was built for another torch.",
    "the extension's and torch's ELF dynamic symbol tables (predicted; --deep shows the real import)",
    proof="inputs: tests/test_binaries.py::test_torch_changed_a_signature (a forced compile asserted)",
)
ABI_CXX11_MISMATCH = Rule(
    "abi-cxx11-mismatch",
    Severity.ERROR,
    "A compiled extension was built with the other C++ ABI (_GLIBCXX_USE_CXX11_ABI) than torch: every "
    "std::string in its torch calls is mangled differently, so it cannot load.",
    "the mangled std::string in the extension's imports against torch's c10::detail::torchCheckFail",
    proof="inputs: tests/test_binaries.py::test_cxx11_abi_mismatch",
)
ABI_VERSION_MISSING = Rule(
    "abi-version-missing",
    Severity.ERROR,
    "A compiled extension needs symbol versions (GLIBC_2.34, GLIBCXX_3.4.30) that the glibc or libstdc++ "
    "the loader would give it does not define: it was built on a newer system, and importing it fails with "
    "`version ... not found`.",
    "the extension's .gnu.version_r against its libraries' .gnu.version_d "
    "(https://refspecs.linuxfoundation.org/LSB_5.0.0/LSB-Core-generic/LSB-Core-generic/symversion.html)",
    proof="inputs: tests/test_binaries.py::test_a_libstdcxx_or_glibc_too_old (a forced compile asserted)",
)
ABI_MISSING_LIBRARY = Rule(
    "abi-missing-library",
    Severity.ERROR,
    "A compiled extension needs a shared library (DT_NEEDED) that the dynamic loader will not find, "
    "typically the CUDA runtime of another CUDA major.",
    "the extension's DT_NEEDED, RUNPATH, LD_LIBRARY_PATH, the loader cache, torch's loaded libraries",
    proof="inputs: tests/test_binaries.py::test_missing_cuda_runtime",
)
ABI_UNREADABLE = Rule(
    "abi-unreadable",
    Severity.WARNING,
    "A compiled extension could not be read as an ELF file.",
    "pyelftools",
    proof="no fix: the file could not be read",
)

# the CI gate
DRIFT_GPU = Rule(
    "drift-gpu",
    Severity.ERROR,
    "The GPU generations differ from the lock file's.",
    "attn-doctor lock",
    proof="no fix: the lock says what was; lock again when the change was meant",
)
DRIFT_TORCH = Rule(
    "drift-torch",
    Severity.ERROR,
    "torch's version or build differs from the lock file's.",
    "attn-doctor lock",
    proof="no fix: the lock says what was; lock again when the change was meant",
)
DRIFT_PACKAGE = Rule(
    "drift-package",
    Severity.ERROR,
    "An attention package was added, removed, changed version, or reinstalled (its RECORD differs) since the "
    "lock file was written.",
    "attn-doctor lock",
    proof="no fix: the lock says what was; lock again when the change was meant",
)

# an Axolotl config (--config), judged against this machine
CONFIG_S2_ATTENTION = Rule(
    "config-s2-attention",
    Severity.ERROR,
    "s2_attention is rejected by Axolotl since v0.17.0.",
    f"{_AX}/utils/schemas/deprecated.py (https://github.com/axolotl-ai-cloud/axolotl/pull/3664)",
    proof="ran: tests/test_fixes.py::test_config_fixes_are_lines_that_clear_the_finding",
)
CONFIG_MIXED_ATTENTION_KEYS = Rule(
    "config-mixed-attention-keys",
    Severity.ERROR,
    "attn_implementation and a legacy attention flag are both set: Axolotl raises an error.",
    f"{_AX}/utils/schemas/config.py (validate_attn_implementation)",
    proof="ran: tests/test_fixes.py::test_config_fixes_are_lines_that_clear_the_finding",
)
CONFIG_SEVERAL_ATTENTION_FLAGS = Rule(
    "config-several-attention-flags",
    Severity.WARNING,
    "Several legacy attention flags are set: the highest-priority one silently wins.",
    f"{_AX}/utils/schemas/enums.py (LEGACY_ATTN_FLAG_TO_IMPL)",
    proof="ran: tests/test_fixes.py::test_config_fixes_are_lines_that_clear_the_finding",
)
CONFIG_LEGACY_ATTENTION_FLAG = Rule(
    "config-legacy-attention-flag",
    Severity.INFO,
    "A legacy attention flag (flash_attention: true, sdp_attention: true...) selects the backend: Axolotl "
    "deprecated them for the one attn_implementation field, which names it instead.",
    f"{_AX}/utils/schemas/enums.py (LEGACY_ATTN_FLAG_TO_IMPL); https://github.com/axolotl-ai-cloud/axolotl/pull/3602",
    proof="ran: tests/test_fixes.py::test_config_fixes_are_lines_that_clear_the_finding",
)
CONFIG_UNKNOWN_ATTENTION = Rule(
    "config-unknown-attention",
    Severity.ERROR,
    "attn_implementation names no backend Axolotl knows.",
    f"{_AX}/utils/schemas/enums.py (CANONICAL_ATTN_IMPLS)",
    proof="unproven: the right value is the user's choice among those listed",
)
CONFIG_BACKEND_UNAVAILABLE = Rule(
    "config-backend-unavailable",
    Severity.ERROR,
    "The config asks for a backend that is missing, broken, or does not run on this GPU.",
    "the facts of this machine and attn_doctor/registry/backends.py",
    proof="inputs: tests/test_registry.py::test_installed_but_cannot_run_here (the backend's own fix)",
)
CONFIG_FLEX_WITHOUT_COMPILE = Rule(
    "config-flex-without-compile",
    Severity.WARNING,
    "Flex attention without torch_compile.",
    f"{_AX}/utils/schemas/config.py (check_flex_torch_version; torch_compile recommended, not enforced)",
    proof="ran: tests/test_fixes.py::test_config_fixes_are_lines_that_clear_the_finding",
)
CONFIG_SAGE_FULL_FINETUNE = Rule(
    "config-sage-full-finetune",
    Severity.WARNING,
    "SageAttention on a full fine-tune (no adapter): no backward pass; loss seen to drop to 0.",
    "https://github.com/thu-ml/SageAttention/issues/90, https://github.com/thu-ml/SageAttention/issues/198; "
    "https://github.com/axolotl-ai-cloud/axolotl/blob/v0.18.0/src/axolotl/utils/schemas/config.py "
    "(check_sageattn_fft)",
    proof="ran: tests/test_fixes.py::test_config_fixes_are_lines_that_clear_the_finding",
)
CONFIG_FA4_HEAD_DIMS = Rule(
    "config-fa4-head-dims",
    Severity.WARNING,
    "FA4 cannot take the model's head dims on this GPU: Axolotl falls back to FA2.",
    "flash_attn/cute/interface.py _validate_head_dims of https://pypi.org/project/flash-attn-4/4.0.0b36/; "
    "https://github.com/axolotl-ai-cloud/axolotl/blob/v0.18.0/src/axolotl/monkeypatch/attention/flash_attn_4.py",
    proof="no fix: the model's head dims are what they are (Axolotl falls back to FA2)",
)

# the fleet: a node that could not be checked at all (`attn-doctor fleet`)
FLEET_NODE_UNREACHABLE = Rule(
    "fleet-node-unreachable",
    Severity.ERROR,
    "The node died, or left the cluster, while its check ran (Ray reported the task lost): nothing is "
    "known of it, and a job scheduled there now would fail the same way.",
    "ray.exceptions.NodeDiedError, WorkerCrashedError, TaskUnschedulableError",
    proof="no fix: a node the cluster lost",
)
FLEET_NODE_TIMEOUT = Rule(
    "fleet-node-timeout",
    Severity.ERROR,
    "The node's check did not answer within --timeout and was cancelled: a hung driver (NVML), a "
    "stalled file system under the environment, or a node too busy to start a worker.",
    "ray.wait(timeout=...), ray.cancel(force=True)",
    proof="no fix: run `attn-doctor check` on the node itself to see where it stops",
)
FLEET_NODE_CHECK_FAILED = Rule(
    "fleet-node-check-failed",
    Severity.ERROR,
    "The check could not run on the node: attn-doctor is not installed in the Python that Ray's workers "
    "run there, the target interpreter is missing, or the check crashed.",
    "`attn-doctor check --format json` exit code 3, or an error raised by the Ray task",
    proof="no fix: the message says what is missing on the node",
)
FLEET_NODE_DEAD = Rule(
    "fleet-node-dead",
    Severity.WARNING,
    "Ray lists the node as dead: no check ran there (a node scaled down, or one that crashed earlier).",
    "ray.nodes(): Alive is false",
    proof="no fix: a node no longer in the cluster",
)

# toolchain (matters for source builds: FA2 without a wheel, FA3, SageAttention 2)
NVCC_TORCH_CUDA_MISMATCH = Rule(
    "nvcc-torch-cuda-mismatch",
    Severity.WARNING,
    "nvcc's CUDA major differs from torch's: torch's cpp_extension refuses to build FA2/FA3/SageAttention.",
    "https://github.com/pytorch/pytorch/blob/v2.11.0/torch/utils/cpp_extension.py (_check_cuda_version)",
    proof="unproven: another CUDA toolkit is not on this machine",
)
BUILD_TOOL_MISSING = Rule(
    "build-tool-missing",
    Severity.INFO,
    "A tool a source build needs (nvcc, ninja, a C++ compiler) is missing: only installs that compile are affected.",
    f"{_FA}/README.md (without ninja the build takes about 2 hours)",
    proof="unproven: `pip install ninja` from the index (nvcc and a compiler are system packages)",
)
NVCC_VERSION_UNKNOWN = Rule(
    "nvcc-version-unknown",
    Severity.INFO,
    "The nvcc found tells no release: a wrapper script on PATH, or a toolkit without version files whose nvcc "
    "has no version string. Source builds (FA2, FA3, SageAttention) cannot be planned with it until CUDA_HOME "
    "names its toolkit.",
    "torch.utils.cpp_extension (CUDA_HOME first, then the nvcc on PATH): "
    "https://github.com/pytorch/pytorch/blob/v2.11.0/torch/utils/cpp_extension.py (_find_cuda_home)",
    proof="inputs: tests/test_hostile_input.py::test_check_and_install_say_the_same_of_an_nvcc_wrapper",
)

# what the installed binaries can run on this GPU (their fatbins, Triton's ptxas)
_COMPATIBILITY = "https://docs.nvidia.com/cuda/cuda-c-programming-guide/#binary-compatibility"
TORCH_NO_GPU_CODE = Rule(
    "torch-no-gpu-code",
    Severity.ERROR,
    "torch's own kernels carry no code a GPU here runs: no cubin of its architecture and no PTX the driver "
    "could compile for it (a torch built for CUDA 12.4 on an RTX 50xx; a CUDA 12.8+ build on a Pascal GPU). "
    "Every CUDA operation fails with `no kernel image is available for execution on the device`, SDPA and "
    "flex attention included.",
    f"libtorch_cuda.so's fatbins (what torch.cuda.get_arch_list() lists); {_COMPATIBILITY}; the builds each "
    "torch release publishes: https://github.com/pytorch/pytorch/blob/main/RELEASE.md#release-compatibility-matrix",
    proof="inputs: tests/test_gpu_code.py::test_a_torch_without_this_gpus_code_names_the_build_that_has_it",
    groups=frozenset({Group.CANNOT_RUN_HERE}),
)
EXTENSION_NO_GPU_CODE = Rule(
    "extension-no-gpu-code",
    Severity.ERROR,
    "A compiled extension carries no code a GPU here runs: it was built for other architectures (on another "
    "machine, or with TORCH_CUDA_ARCH_LIST narrowed to one), so its kernels fail with `no kernel image is "
    "available`, though it imports.",
    f"the extension's fatbins (.nv_fatbin), read without running it; {_COMPATIBILITY}",
    proof="inputs: tests/test_gpu_code.py::test_an_extension_built_for_another_gpu_is_found_before_it_runs",
)
TRITON_PTXAS_TOO_OLD = Rule(
    "triton-ptxas-too-old",
    Severity.ERROR,
    "The ptxas Triton compiles with for a GPU here comes from a CUDA release older than that GPU's "
    "architecture: every Triton kernel (flex attention, torch.compile, SageAttention 1) fails with "
    "`ptxas fatal: Value 'sm_121a' is not defined for option 'gpu-name'`.",
    "the ptxas version string against the first CUDA release with the architecture; "
    "https://github.com/triton-lang/triton/issues/8539 (the fix users found: TRITON_PTXAS_PATH)",
    proof="inputs: tests/test_gpu_code.py::test_a_triton_ptxas_older_than_the_gpu_points_at_a_newer_one",
    groups=frozenset({Group.CANNOT_RUN_HERE}),
)
RELEASE_BROKEN_HERE = Rule(
    "release-broken-here",
    Severity.ERROR,
    "The installed release of an attention backend is known broken on a GPU here, or next to a release of "
    "one of its dependencies installed here (each case in `attn-doctor explain BACKEND`, with its source).",
    "the registry's bad releases of each backend, each with its upstream issue or fix",
    proof="inputs: tests/test_registry.py::test_a_release_broken_on_this_gpu_or_beside_this_dependency",
)
SDPA_KNOWN_BAD = Rule(
    "sdpa-known-bad",
    Severity.WARNING,
    "This torch, with the cuDNN installed beside it, makes SDPA pick a kernel known to go wrong on a GPU here "
    "(cuDNN attention: NaN gradients, corrupted outputs); the remedy takes SDPA's next kernel instead.",
    "the releases and reports in `attn-doctor explain sdpa`",
    proof="inputs: tests/test_registry.py::test_sdpa_on_a_release_known_bad_here_says_so_beside_its_recommendation",
    groups=frozenset({Group.CAVEAT}),
)
RELEASE_NEWER_THAN_RULES = Rule(
    "release-newer-than-rules",
    Severity.INFO,
    "An installed release is newer than every release these rules were checked against (the date is in "
    "`attn-doctor --version`): judged by the rules of the newest known one, unproven for its own changes.",
    "each backend's newest checked release in `attn-doctor explain BACKEND`",
    proof="inputs: tests/test_registry.py::test_a_release_newer_than_the_rules_is_a_note_with_its_proof",
)

# the doctor itself
CHECK_CRASHED = Rule(
    "check-crashed",
    Severity.ERROR,
    "One of check's concerns raised an error, so what it judges is unknown here; every other concern still "
    "ran and the rest of the report stands. A bug in attn-doctor: please report it with the line shown.",
    "attn-doctor (each concern runs on its own, as flutter doctor runs each validator)",
    proof="no fix: a bug in attn-doctor; the finding names the concern and the error",
)

KERNELS_REFUSED_BY_TRANSFORMERS = Rule(
    "kernels-refused-by-transformers",
    Severity.ERROR,
    "The installed `kernels` is outside the releases the installed transformers loads Hub kernels with: "
    "an attn_implementation of the form org/name (and transformers' own fallback for flash_attention_2 "
    'without flash-attn) fails with "`kernels` is either not installed or uses an incompatible version".',
    "https://github.com/huggingface/transformers/blob/v5.25.0/src/transformers/utils/import_utils.py "
    "(is_kernels_available, KERNELS_MIN_VERSION and KERNELS_MAX_VERSION); the `kernels` requirement in "
    "transformers' metadata",
    proof="ran: tests/test_hub_kernels.py::test_a_kernels_release_transformers_refuses_is_found_and_fixed",
)
CONFIG_HUB_KERNEL_NO_BUILD = Rule(
    "config-hub-kernel-no-build",
    Severity.WARNING,
    "The Hub kernel the config names is in the local cache, but none of its cached builds fits this torch "
    "and CUDA: it is fetched again at load, which needs the network (offline, loading fails).",
    "https://github.com/huggingface/kernels/blob/v0.16.0/kernels/src/kernels/variants.py (_check_variants)",
    proof="unproven: fetching the fitting build needs huggingface.co, which the tests cannot reach",
)
CONFIG_HUB_KERNEL_OFFLINE = Rule(
    "config-hub-kernel-offline",
    Severity.ERROR,
    "The config names a Hub kernel that is not in the local cache (or not for this torch) while "
    "HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set: loading the model fails.",
    "https://github.com/huggingface/kernels/blob/v0.16.0/docs/source/env.md; huggingface_hub's HF_HUB_OFFLINE",
    proof="unproven: `kernels download` needs huggingface.co, which the tests cannot reach",
)
CONFIG_HUB_KERNEL_NOT_CACHED = Rule(
    "config-hub-kernel-not-cached",
    Severity.INFO,
    "The config names a Hub kernel that is not in the local cache: the build for this torch and CUDA is "
    "fetched from huggingface.co at the first load (which builds it publishes is known only there).",
    "https://github.com/huggingface/kernels/blob/v0.16.0/docs/source/env.md (KERNELS_CACHE, HF_HUB_CACHE)",
    proof="no fix: nothing is wrong; `kernels download` fetches it ahead of time",
)


RULES: tuple[Rule, ...] = (
    NO_GPU,
    NVML_LIBRARY_MISSING,
    DRIVER_NOT_LOADED,
    DRIVER_MISMATCH,
    NVML_ERROR,
    GPUS_HIDDEN,
    MIG_ENABLED,
    PYTHON_EXTERNALLY_MANAGED,
    REPAIR_UNFINISHED,
    TORCH_MISSING,
    TORCH_UNREADABLE,
    TORCH_CPU_ONLY,
    TORCH_WRONG_GPU_VENDOR,
    TORCH_CUDA_TOO_NEW,
    TORCH_CUDA_MINOR_NEWER,
    PACKAGE_METADATA_BROKEN,
    PACKAGE_DUPLICATE,
    PACKAGE_FILES_MODIFIED,
    FLASH_ATTN_4_PLACEHOLDER,
    SAGEATTENTION_V1,
    SAGEATTENTION_HOPPER_NO_KERNEL,
    PACKAGE_REQUIREMENTS_UNMET,
    BACKEND_UNSUPPORTED_GPU,
    PACKAGE_LOOKALIKE,
    FA4_SHADOWED,
    FA4_HIDDEN,
    FA2_ROCM_TRITON_DISABLED,
    XFORMERS_FA4_NAMESPACE,
    FA4_FILES_OVERWRITTEN,
    FA4_FILES_MISSING,
    FA2_UNINSTALL_BREAKS_FA4,
    FA2_EXTENSION_MISSING,
    IMPORT_UNDEFINED_SYMBOL,
    IMPORT_MISSING_CUDA_LIBRARY,
    IMPORT_UNSUPPORTED_GPU,
    IMPORT_MISSING_SYMBOL_VERSION,
    IMPORT_TIMEOUT,
    IMPORT_FAILED,
    ABI_UNDEFINED_SYMBOL,
    ABI_CXX11_MISMATCH,
    ABI_VERSION_MISSING,
    ABI_MISSING_LIBRARY,
    ABI_UNREADABLE,
    DRIFT_GPU,
    DRIFT_TORCH,
    DRIFT_PACKAGE,
    CONFIG_S2_ATTENTION,
    CONFIG_MIXED_ATTENTION_KEYS,
    CONFIG_SEVERAL_ATTENTION_FLAGS,
    CONFIG_UNKNOWN_ATTENTION,
    CONFIG_LEGACY_ATTENTION_FLAG,
    CONFIG_BACKEND_UNAVAILABLE,
    CONFIG_FLEX_WITHOUT_COMPILE,
    CONFIG_SAGE_FULL_FINETUNE,
    CONFIG_FA4_HEAD_DIMS,
    KERNELS_REFUSED_BY_TRANSFORMERS,
    CONFIG_HUB_KERNEL_NO_BUILD,
    CONFIG_HUB_KERNEL_OFFLINE,
    CONFIG_HUB_KERNEL_NOT_CACHED,
    FLEET_NODE_UNREACHABLE,
    FLEET_NODE_TIMEOUT,
    FLEET_NODE_CHECK_FAILED,
    FLEET_NODE_DEAD,
    NVCC_TORCH_CUDA_MISMATCH,
    BUILD_TOOL_MISSING,
    NVCC_VERSION_UNKNOWN,
    TORCH_NO_GPU_CODE,
    EXTENSION_NO_GPU_CODE,
    TRITON_PTXAS_TOO_OLD,
    RELEASE_BROKEN_HERE,
    SDPA_KNOWN_BAD,
    RELEASE_NEWER_THAN_RULES,
    CHECK_CRASHED,
)

# --deep's import outcomes (facts/imports.py) and the rule each one raises
IMPORT_OUTCOMES: dict[str, Rule] = {
    "undefined-symbol": IMPORT_UNDEFINED_SYMBOL,
    "missing-cuda-library": IMPORT_MISSING_CUDA_LIBRARY,
    "unsupported-gpu": IMPORT_UNSUPPORTED_GPU,
    "missing-symbol-version": IMPORT_MISSING_SYMBOL_VERSION,
    "timeout": IMPORT_TIMEOUT,
    "failed": IMPORT_FAILED,
}

_BY_CODE = {rule.code: rule for rule in RULES}


def rule(code: str) -> Rule | None:
    """The rule of a code a user typed (--ignore, explain); None for no such code."""
    return _BY_CODE.get(code)


def finding(
    rule: Rule,
    title: str,
    fix: tuple[str, ...] | list[str] = (),
    evidence: tuple[str, ...] | list[str] = (),
    subject: Subject | None = None,
) -> Finding:
    """A finding of a catalogued rule; its code and severity are the rule's."""
    return Finding(rule, title, tuple(fix), tuple(evidence), subject)
