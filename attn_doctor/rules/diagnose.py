"""Facts -> findings. Pure functions: one per concern, each returning its findings."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from attn_doctor.facts.model import Facts, Gpu, Package, Resolution, Torch, VersionNeed
from attn_doctor.rules.backends import (
    backend_of_distribution,
    by_name,
    import_checks,
    packaged,
    verified_distributions,
)
from attn_doctor.rules.findings import Finding, Kind, Subject, distribution, finding
from attn_doctor.rules.ranking import first_choice
from attn_doctor.rules.recipes import build_jobs, build_peak_gib, fa2_build_minutes, fa2_cuda_archs, xformers_for
from attn_doctor.rules.requirements import unmet
from attn_doctor.rules.versions import in_range, is_version
from attn_doctor.rules.wheels import fa2_wheel_for, fa2_wheel_url

FA2 = "flash-attn"
TRITON_AMD = "FLASH_ATTENTION_TRITON_AMD_ENABLE"
FA4 = "flash-attn-4"


def pip_install(facts: Facts, args: str) -> str:
    """The install command for the target, by the installer `install` would use there
    (Interpreter.preferred_installer); pip bootstrapped first where there is neither."""
    python = shlex.quote(facts.python.executable)
    if facts.python.preferred_installer == "uv" and facts.python.uv:
        return f"{shlex.quote(facts.python.uv)} pip install --python {python} {args}"
    if facts.python.pip_version is None:
        return f"{python} -m ensurepip && {python} -m pip install {args}"
    return f"{python} -m pip install {args}"


def _reinstall(facts: Facts, package: Package) -> str:
    """The same version again: METADATA's, else the dist-info folder's (`name-VERSION.dist-info`).
    Never the bare name: for flash-attn-4, whose releases are all pre-releases, that resolves to
    the 0.0.1 placeholder wherever it is not yanked (a local wheelhouse), or to nothing."""
    folder = Path(package.dist_info).name.removesuffix(".dist-info")
    versions = [package.version, folder.split("-")[1] if folder.count("-") == 1 else None]
    version = next((v for v in versions if is_version(v)), None)
    pin = f"{package.name}=={version}" if version else package.name
    return pip_install(facts, f"--force-reinstall --no-deps {shlex.quote(pin)}")


def _listed(paths: tuple[str, ...] | list[str], limit: int = 3) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _cuda_version(text: str | None) -> tuple[int, int] | None:
    try:
        major, minor = (text or "").split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def gpu_findings(facts: Facts) -> list[Finding]:
    driver = facts.driver
    amd = [g for g in facts.gpus if g.vendor == "amd"]
    found: list[Finding] = []
    status = driver.nvidia_status
    evidence = [f"NVML: {driver.nvidia_detail}"] if driver.nvidia_detail else []
    if status == "driver-mismatch":
        found.append(
            finding(
                "driver-mismatch",
                "NVIDIA driver library and kernel module versions differ",
                ["sudo reboot  # loads the kernel module that matches the installed driver library"],
                evidence,
            )
        )
    elif status == "driver-not-loaded":
        found.append(
            finding(
                "driver-not-loaded",
                "the NVIDIA kernel driver is not loaded",
                ["sudo modprobe nvidia", "nvidia-smi  # should now list the GPUs"],
                evidence,
            )
        )
    elif status == "nvml-error":
        found.append(
            finding(
                "nvml-error",
                f"NVML failed: {driver.nvidia_detail}",
                ["nvidia-smi  # shows whether the driver itself answers"],
                evidence,
            )
        )
    elif status == "nvml-library-missing" and not amd:
        found.append(
            finding(
                "nvml-library-missing",
                "no NVIDIA driver found (libnvidia-ml.so cannot be loaded)",
                ["nvidia-smi  # missing too? install the NVIDIA driver; in a container, run it with --gpus all"],
                evidence,
            )
        )
    elif status in ("ok", "no-gpu") and not facts.gpus:
        if driver.hidden_gpus:
            found.append(
                finding(
                    "gpus-hidden",
                    f"CUDA_VISIBLE_DEVICES={driver.cuda_visible_devices!r} hides all {driver.hidden_gpus} GPU(s)",
                    ["unset CUDA_VISIBLE_DEVICES  # or list the GPUs to use: CUDA_VISIBLE_DEVICES=0"],
                )
            )
        else:
            found.append(finding("no-gpu", "no GPU found", evidence=evidence))
    for g in facts.gpus:
        if g.mig:
            found.append(
                finding(
                    "mig-enabled", f"GPU {g.index} ({g.name}) is in MIG mode", subject=Subject(Kind.GPU, str(g.index))
                )
            )
    return found


def python_findings(facts: Facts) -> list[Finding]:
    if not facts.python.externally_managed:
        return []
    python = shlex.quote(facts.python.executable)
    return [
        finding(
            "python-externally-managed",
            f"{facts.python.executable} is externally managed (PEP 668): pip will refuse to install into it",
            [f"{python} -m venv .venv && . .venv/bin/activate"],
        )
    ]


def torch_findings(facts: Facts) -> list[Finding]:
    torch = facts.torch
    if torch is None:
        if facts.torch_problem:
            return [
                finding(
                    "torch-unreadable",
                    f"torch is installed but unreadable: {facts.torch_problem}",
                    [pip_install(facts, "--force-reinstall --no-deps torch")],
                )
            ]
        return [
            finding(
                "torch-missing",
                "torch is not installed in the target environment",
                [pip_install(facts, "torch")],
            )
        ]
    nvidia = [g for g in facts.gpus if g.vendor == "nvidia"]
    amd = [g for g in facts.gpus if g.vendor == "amd"]
    evidence = [f"torch {torch.version} ({torch.build}) at {torch.location}"]
    if (nvidia or amd) and not torch.cuda and not torch.hip:
        return [
            finding(
                "torch-cpu-only",
                f"torch {torch.version} is a CPU-only build, but a GPU is present",
                [pip_install(facts, "--force-reinstall torch  # a CUDA build; see pytorch.org for the index")],
                evidence,
            )
        ]
    if (nvidia and not amd and torch.hip) or (amd and not nvidia and torch.cuda):
        vendor = "NVIDIA" if nvidia else "AMD"
        return [
            finding(
                "torch-wrong-gpu-vendor",
                f"torch {torch.version} ({torch.build}) cannot use the {vendor} GPU",
                [pip_install(facts, "--force-reinstall torch  # the build for this GPU's vendor")],
                evidence,
            )
        ]
    built = _cuda_version(torch.cuda)
    driver = _cuda_version(facts.driver.cuda_driver_version)
    if built and driver and nvidia:
        evidence.append(f"driver {facts.driver.driver_version} supports CUDA up to {facts.driver.cuda_driver_version}")
        if built[0] > driver[0]:
            return [
                finding(
                    "torch-cuda-too-new",
                    f"torch {torch.version} needs CUDA {torch.cuda}; driver {facts.driver.driver_version} "
                    f"supports up to {facts.driver.cuda_driver_version}",
                    [
                        f"upgrade the NVIDIA driver to one supporting CUDA {torch.cuda}, or install a torch built for "
                        f"CUDA {driver[0]}.x"
                    ],
                    evidence,
                )
            ]
        if built > driver:
            return [
                finding(
                    "torch-cuda-minor-newer",
                    f"torch built for CUDA {torch.cuda} runs on a CUDA {facts.driver.cuda_driver_version} driver "
                    "by minor-version compatibility only",
                    [
                        f"# upgrade the NVIDIA driver to one for CUDA {torch.cuda} or newer (nvidia-smi shows "
                        '"CUDA Version"), or install this torch built for the driver\'s CUDA:',
                        pip_install(
                            facts,
                            f"torch=={_public(torch.version)}+cu{driver[0]}{driver[1]} --index-url "
                            f"https://download.pytorch.org/whl/cu{driver[0]}{driver[1]}",
                        )
                        + "  # if PyTorch publishes that build",
                    ],
                    evidence,
                )
            ]
    return []


def _public(version: str) -> str:
    """2.11.0 for 2.11.0+cu130: the release, without the build's local label."""
    return version.split("+", 1)[0]


def package_findings(facts: Facts) -> list[Finding]:
    found: list[Finding] = []
    by_name: dict[str, list[Package]] = {}
    for package in facts.packages:
        by_name.setdefault(package.name, []).append(package)
    for name, copies in by_name.items():
        if len(copies) > 1:
            found.append(
                finding(
                    "package-duplicate",
                    f"{name} has {len(copies)} dist-info folders: "
                    + ", ".join(f"{c.version} in {c.location}" for c in copies),
                    [
                        f"mv {shlex.quote(c.dist_info)} {shlex.quote(c.dist_info)}.stale  # keep only the one you use"
                        for c in copies[1:]
                    ]
                    + [_reinstall(facts, copies[0])],
                    [c.dist_info for c in copies],
                    subject=distribution(name),
                )
            )
    for package in facts.packages:
        problem = package.metadata_problem
        if problem is None and package.version is not None and not is_version(package.version):
            problem = f"invalid version {package.version!r}"
        if problem:
            folder = shlex.quote(package.dist_info)
            found.append(
                finding(
                    "package-metadata-broken",
                    f"{package.name}: {problem}",
                    [
                        f"mv {folder} {folder}.broken  # set the broken record aside",
                        _reinstall(facts, package),
                    ],
                    [package.dist_info],
                    subject=distribution(package.name),
                )
            )
            continue
        if package.name in _generic_verified():
            shared = {p for s in package.shared for p in s.paths}
            changed = [m.path for m in package.modified if m.path not in shared]
            missing = [p for p in package.missing if p not in shared]
            if changed or missing:
                found.append(
                    finding(
                        "package-files-modified",
                        f"{package.name} {package.version}: {len(changed)} file(s) changed, {len(missing)} missing "
                        "since install",
                        [_reinstall(facts, package)],
                        [f"changed: {p}" for p in changed] + [f"missing: {p}" for p in missing],
                        subject=distribution(package.name),
                    )
                )
        found += _release_findings(facts, package)
        found += _requirement_findings(facts, package)
    return found


def _generic_verified() -> list[str]:
    """Packages whose RECORD is checked generically; FA4's changed files get the collision findings."""
    return [d for d in verified_distributions() if d != FA4]


def _release_findings(facts: Facts, package: Package) -> list[Finding]:
    """A release that installs but is not the backend: the registry's bad releases and lookalikes."""
    backend = backend_of_distribution(package.name)
    version = package.version
    if backend is None or version is None:
        return []
    # the real backend where its newest release runs on every GPU here; else what does run here
    # (SageAttention 1 on a T4: SageAttention 2 refuses sm_75)
    refused = [g for g in facts.gpus if not backend.runs_on(g)]
    fix = _instead(refused[0]) if refused else backend.install
    found = [
        finding(bad.code, bad.title.format(version=version), [fix], subject=distribution(package.name))
        for bad in backend.bad_releases_found(version, facts)
    ]
    found += [
        finding(
            "package-lookalike",
            lookalike.title(version),
            [f"{backend.install}", f"# or, for what it is: {by_name()[lookalike.instead].install}"],
            [package.dist_info],
            subject=distribution(package.name),
        )
        for lookalike in backend.lookalikes_found(version)
    ]
    return found


def _requirement_findings(facts: Facts, package: Package) -> list[Finding]:
    """Requires-Dist not met (package-requirements-unmet). The fix installs exactly what is missing
    with torch held where it is; a requirement on another torch is answered by the release that
    matches the installed torch instead."""
    if package.name != "torch" and backend_of_distribution(package.name) is None:
        return []
    missing = unmet(package, facts)
    if not missing:
        return []
    if facts.torch is None and facts.torch_problem is None:  # torch-missing says it, with its own fix
        missing = [u for u in missing if u.name != "torch"]
        if not missing:
            return []
    on_torch = [u for u in missing if u.name == "torch"]
    rest = [u for u in missing if u.name != "torch"]
    backend = backend_of_distribution(package.name)
    fix = []
    if rest:
        torch = facts.package("torch")
        held = f" torch=={torch.version}" if torch and torch.version and package.name != "torch" else ""
        wanted = " ".join(shlex.quote(u.wanted) for u in rest)
        fix.append(f"{pip_install(facts, wanted + held)}  # only what is missing; torch stays")
    if on_torch and backend is not None:
        fix.append(f"{backend.install}")
    return [
        finding(
            "package-requirements-unmet",
            f"{package.name} {package.version} requires {'; '.join(u.describe() for u in missing)}",
            fix,
            [f"Requires-Dist: {u.line}" for u in missing],
            subject=distribution(package.name),
        )
    ]


def gpu_support_findings(facts: Facts) -> list[Finding]:
    """An installed backend whose installed release cannot run on a GPU here: an error in every
    check, whether or not a config or --require names it."""
    found = []
    for backend in packaged():
        package = facts.package(backend.distribution or "")
        if package is None or package.metadata_problem:
            continue
        refused = [g for g in facts.gpus if not backend.runs_on(g, package.version)]
        if not refused:
            continue
        newest_runs = all(backend.runs_on(g) for g in refused)
        better = backend.install if newest_runs else _instead(refused[0])
        rule = backend.support_for(package.version)
        for gpu in refused:
            found.append(
                finding(
                    "backend-unsupported-gpu",
                    f"{backend.label} {package.version} does not run on GPU {gpu.index} ({gpu.name}, "
                    f"{gpu.sm or gpu.gfx_target})",
                    [better],
                    [f"rule for {package.name} {rule.versions or 'every release'}: {rule.source}"],
                    subject=distribution(package.name),
                )
            )
    return found


def _instead(gpu: Gpu) -> str:
    """What to use on this GPU: the first ranked backend, installed or how to get it."""
    backend = first_choice(gpu)
    return backend.install if backend.distribution else f"use {backend.label}: {backend.axolotl}"


def collision_findings(facts: Facts) -> list[Finding]:
    """The FA2/FA4 collisions of KNOWLEDGE.md §4, each from what is on disk."""
    fa2, fa4 = facts.package(FA2), facts.package(FA4)
    found: list[Finding] = []
    extension = facts.resolution("flash_attn_2_cuda")
    # ROCm's Triton build of FA2 has no extension by design, so only CUDA builds are judged.
    cuda_fa2 = fa2 is not None and not fa2.metadata_problem and not (facts.torch and facts.torch.hip)
    if fa2 is not None and cuda_fa2 and (extension is None or extension.kind == "missing"):
        found.append(
            finding(
                "fa2-extension-missing",
                f"flash-attn {fa2.version} has no compiled flash_attn_2_cuda: `import flash_attn` will fail",
                # FA2's setup.py imports torch to build: torch first where it is missing
                [pip_install(facts, "torch"), _rebuild(facts, fa2)] if facts.torch is None else [_rebuild(facts, fa2)],
                [
                    "no flash_attn_2_cuda extension module on the target's sys.path",
                    f"RECORD of {fa2.dist_info} lists: {', '.join(fa2.extension_modules) or 'no extension module'}",
                ],
                subject=distribution(FA2),
            )
        )
    found += _fa2_rocm_triton(facts, fa2, extension)
    if fa4 is None or fa4.metadata_problem:
        return found
    reinstall = _reinstall(facts, fa4)
    # attn-doctor's own repair first (planned, backed up, verified, undoable), then the same by hand
    repair = f"attn-doctor fix-shadow --python {shlex.quote(facts.python.executable)}"
    cute = facts.resolution("flash_attn.cute")
    expected = _fa4_origin(fa4, cute.other_candidates if cute else ())
    if cute is not None and cute.origin and expected and Path(cute.origin) != Path(expected):
        stub = Path(cute.origin).parent
        owner = "FA2's stale cute/ stub" if fa2 and _inside(stub, fa2.location) else "another copy"
        backup = shlex.quote(str(stub) + ".fa2-stub")
        found.append(
            finding(
                "fa4-shadowed",
                f"flash_attn.cute resolves to {owner} at {stub}, not to flash-attn-4 {fa4.version}",
                [repair, "# or by hand (moved aside, not deleted):", f"mv {shlex.quote(str(stub))} {backup}"],
                [
                    f"flash_attn.cute -> {cute.origin} (found by {cute.finder})",
                    f"flash-attn-4 expects {expected}",
                ],
                subject=distribution(FA4),
            )
        )
    found += _fa4_hidden(fa4, facts)
    if fa4.modified:
        owners = sorted({m.now_matches or "an unknown source" for m in fa4.modified})
        found.append(
            finding(
                "fa4-files-overwritten",
                f"{len(fa4.modified)} of flash-attn-4's files are now {' / '.join(owners)}'s copies "
                f"({_listed([m.path for m in fa4.modified])})",
                [repair, "# or by hand:", reinstall],
                [f"{m.path}: sha256 is {m.now_matches or 'unknown'}'s, not flash-attn-4's" for m in fa4.modified],
                subject=distribution(FA4),
            )
        )
    if fa4.missing:
        found.append(
            finding(
                "fa4-files-missing",
                f"{len(fa4.missing)} of flash-attn-4's files are missing ({_listed(list(fa4.missing))})",
                [repair, "# or by hand:", reinstall],
                [f"missing: {p}" for p in fa4.missing],
                subject=distribution(FA4),
            )
        )
    for shared in fa4.shared:
        if shared.other == FA2:
            found.append(
                finding(
                    "fa2-uninstall-breaks-fa4",
                    f"`pip uninstall flash-attn` would delete {len(shared.paths)} of flash-attn-4's files "
                    f"({_listed(list(shared.paths))})",
                    [repair, "# or, by hand, after any `pip uninstall flash-attn`:", reinstall],
                    [f"in both RECORDs: {p}" for p in shared.paths],
                    subject=distribution(FA4),
                )
            )
    return found


def _fa2_rocm_triton(facts: Facts, fa2: Package | None, extension: Resolution | None) -> list[Finding]:
    """FA2's ROCm build through Triton has no compiled extension: it imports only with
    FLASH_ATTENTION_TRITON_AMD_ENABLE=TRUE set, else it looks for flash_attn_2_cuda and fails."""
    if fa2 is None or fa2.metadata_problem or facts.torch is None or not facts.torch.hip:
        return []
    if extension is not None and extension.kind != "missing":
        return []  # the CK build, compiled
    value = facts.variable(TRITON_AMD)
    if value == "TRUE" or not in_range(fa2.version or "", ">=2.7.1"):
        return []
    return [
        finding(
            "fa2-rocm-triton-disabled",
            f"flash-attn {fa2.version} is a ROCm Triton build (no flash_attn_2_cuda) and {TRITON_AMD} is "
            f"{'unset' if value is None else repr(value)}: `import flash_attn` will fail",
            [f"export {TRITON_AMD}=TRUE  # in the training job's environment too; only the exact TRUE counts"],
            [
                "https://github.com/Dao-AILab/flash-attention/blob/v2.8.3/flash_attn/flash_attn_interface.py#L11-L15",
                f"RECORD of {fa2.dist_info} lists: {', '.join(fa2.extension_modules) or 'no extension module'}",
            ],
            subject=distribution(FA2),
        )
    ]


def _fa4_hidden(fa4: Package, facts: Facts) -> list[Finding]:
    """Another `flash_attn` earlier on sys.path (PYTHONPATH, a .pth folder, the user site, a
    `pip --target` folder) that has no cute/: `flash_attn.cute` is searched in it alone, and the
    installed FA4 is never found."""
    cute, parent = facts.resolution("flash_attn.cute"), facts.resolution("flash_attn")
    if fa4.editable or cute is None or cute.kind != "missing" or parent is None or parent.kind != "package":
        return []
    if not parent.origin or _inside(Path(parent.origin), fa4.location):
        return []
    folder = Path(parent.origin).parent
    aside = shlex.quote(f"{folder}.hides-fa4")
    return [
        finding(
            "fa4-hidden",
            f"flash_attn resolves to {folder}, earlier on sys.path and without cute/: flash-attn-4 {fa4.version} "
            f"in {fa4.location} is never imported",
            [
                f"mv {shlex.quote(str(folder))} {aside}  # the other flash_attn, set aside (not deleted)",
                f"# or take {folder.parent} off sys.path (PYTHONPATH, a .pth file, the user site)",
            ],
            [f"flash_attn -> {parent.origin} (found by {parent.finder})", f"flash_attn.cute: {cute.detail}"],
            subject=distribution(FA4),
        )
    ]


XFORMERS_FLASH_SOURCE = (
    "https://github.com/facebookresearch/xformers/blob/v0.0.35/xformers/ops/fmha/flash.py#L57-L59 "
    "(find_spec('flash_attn'), then import flash_attn.flash_attn_interface; first at v0.0.30, after the bundled "
    "_C_flashattention, which 0.0.34 no longer tries first)"
)


def xformers_findings(facts: Facts) -> list[Finding]:
    """xFormers next to FA4 without FA2: FA4's files make `flash_attn` a namespace package, which
    xformers.ops takes for FA2 and imports flash_attn.flash_attn_interface from: `import
    xformers.ops` fails (seen with xformers 0.0.35 and flash-attn-4 4.0.0b36)."""
    xformers, fa4 = facts.package("xformers"), facts.package(FA4)
    parent = facts.resolution("flash_attn")
    if xformers is None or fa4 is None or parent is None or parent.kind != "namespace":
        return []
    bundled = any("_C_flashattention" in path for path in xformers.extension_modules)
    if not in_range(xformers.version or "", ">=0.0.34") and (
        bundled or not in_range(xformers.version or "", ">=0.0.30")
    ):
        return []
    return [
        finding(
            "xformers-fa4-namespace",
            f"`import xformers.ops` fails: xformers {xformers.version} takes flash-attn-4's flash_attn/ namespace "
            "for FA2 and imports flash_attn.flash_attn_interface, which only FA2 has",
            _xformers_fa4_fix(facts),
            [f"flash_attn -> namespace {', '.join(parent.search_locations)}", XFORMERS_FLASH_SOURCE],
            subject=distribution("xformers"),
        )
    ]


def _xformers_fa4_fix(facts: Facts) -> list[str]:
    return [
        "attn-doctor install fa2  # FA2 gives xformers the flash_attn it looks for; FA4 stays (fix-shadow follows)",
        "# or, where you train with FA4 and not with xFormers:",
        f"{shlex.quote(facts.python.executable)} -m pip uninstall -y xformers",
    ]


def _inside(path: Path, folder: str) -> bool:
    return Path(folder) in path.parents


def _fa4_origin(fa4: Package, candidates: tuple[str, ...]) -> str | None:
    """Where FA4's `flash_attn.cute` should load from: its editable source tree (what the editable
    finder answers), else the wheel's file in site-packages."""
    if fa4.editable:
        if candidates:
            return candidates[0]
        if fa4.source_url and fa4.source_url.startswith("file://"):
            return str(Path(fa4.source_url[len("file://") :]) / "__init__.py")
        return None
    return str(Path(fa4.location) / "flash_attn" / "cute" / "__init__.py")


def import_findings(facts: Facts) -> list[Finding]:
    owner = {m: d for d, m in import_checks().items()}
    found = []
    torch = f"torch {facts.torch.version}" if facts.torch else "the installed torch"
    for result in facts.imports:
        if result.outcome == "ok":
            continue
        package = facts.package(owner.get(result.module, ""))
        fix: list[str] = []
        title = f"`import {result.module}` failed: {result.detail}"
        if result.outcome == "missing-symbol-version":
            title = f"`import {result.module}` fails: {result.detail}"
            if package is not None:
                fix = _too_old_fix(facts, package, "libstdc++" if "GLIBCXX" in result.detail else "libc.")
        elif result.outcome == "undefined-symbol":
            title = (
                f"`import {result.module}` fails with an undefined symbol: it was built for another torch than {torch}"
            )
            if package is not None:
                fix = [_rebuild(facts, package)]
        elif result.outcome == "timeout":
            title = f"`import {result.module}` did not finish in {result.seconds:.0f} s"
        elif result.module == "xformers.ops" and "flash_attn.flash_attn_interface" in result.detail:
            fix = _xformers_fa4_fix(facts)  # the namespace collision, not a broken xformers
        elif package is not None:
            fix = [_reinstall(facts, package)]
        found.append(
            finding(
                f"import-{result.outcome}", title, fix, [result.detail], subject=Subject(Kind.MODULE, result.module)
            )
        )
    return found


def binary_findings(facts: Facts) -> list[Finding]:
    """The ELF reading of each compiled extension: the `undefined symbol` before any import."""
    found = []
    torch = facts.torch
    torch_name = f"torch {torch.version}" if torch else "the installed torch"
    for binary in facts.binaries:
        name = Path(binary.path).name
        package = facts.package(binary.package)
        deep = _deep_result(facts, binary.package)
        evidence = [binary.path, *deep]
        if binary.error:
            found.append(
                finding(
                    "abi-unreadable", f"{name}: {binary.error}", evidence=evidence, subject=distribution(binary.package)
                )
            )
            continue
        for library, needs in _by_library(binary.missing_versions).items():
            found.append(
                finding(
                    "abi-version-missing",
                    f"{name} needs {', '.join(n.version for n in needs)} from {library}, which {needs[0].provider} "
                    f"(what the loader gives it) does not define"
                    + (f": it has up to {needs[0].newest}" if needs[0].newest else ""),
                    _too_old_fix(facts, package, library),
                    [*evidence, *(f"needs {n.version} from {n.library}" for n in needs)],
                    subject=distribution(binary.package),
                )
            )
        if binary.missing_libraries:
            why = _cuda_runtime_hint(binary.missing_libraries, torch.cuda if torch else None)
            found.append(
                finding(
                    "abi-missing-library",
                    f"{name} needs {', '.join(binary.missing_libraries)}, which the loader will not find{why}",
                    [_rebuild(facts, package)] if package else [],
                    [*evidence, f"DT_NEEDED: {', '.join(binary.needed)}"],
                    subject=distribution(binary.package),
                )
            )
        if binary.missing_symbols:
            shown = _listed(list(binary.readable_symbols or binary.missing_symbols), limit=2)
            mismatch = binary.abi and binary.torch_abi and binary.abi != binary.torch_abi
            code = "abi-cxx11-mismatch" if mismatch else "abi-undefined-symbol"
            title = (
                f"{name} was built with the {binary.abi} C++ ABI, {torch_name} with the {binary.torch_abi} one"
                if mismatch
                else f"{name} imports {len(binary.missing_symbols)} torch symbol(s) that {torch_name} does not "
                f"export ({shown}): it was built for another torch"
            )
            symbols = [f"missing: {r}" for r in (binary.readable_symbols or binary.missing_symbols)[:10]]
            found.append(
                finding(
                    code,
                    title,
                    [_rebuild(facts, package)] if package else [],
                    [*evidence, *symbols],
                    subject=distribution(binary.package),
                )
            )
    return found


def _by_library(needs: tuple[VersionNeed, ...]) -> dict[str, list[VersionNeed]]:
    grouped: dict[str, list[VersionNeed]] = {}
    for need in needs:
        grouped.setdefault(need.library, []).append(need)
    return grouped


def _too_old_fix(facts: Facts, package: Package | None, library: str) -> list[str]:
    """A binary built for a newer glibc/libstdc++ than this machine gives it: build it here, where
    the compiler links against what this machine has; for libstdc++ in a conda env, a newer one."""
    fix = [_rebuild(facts, package)] if package is not None else []
    if library.startswith("libstdc++") and facts.python.environment == "conda":
        prefix = shlex.quote(facts.python.prefix)
        fix.append(f"conda install -p {prefix} -c conda-forge libstdcxx-ng  # or: a libstdc++ new enough, first")
    if library.startswith("libc."):
        fix.append("# or a release built for an older glibc (a manylinux wheel of this OS's glibc or older)")
    return fix


def _deep_result(facts: Facts, package: str) -> list[str]:
    """What `--deep`'s real import said about the same package, to set beside the prediction."""
    module = import_checks().get(package)
    return [
        f"--deep: import {r.module} -> {r.outcome} {r.detail}".rstrip() for r in facts.imports if r.module == module
    ]


def _cuda_runtime_hint(libraries: tuple[str, ...], torch_cuda: str | None) -> str:
    for library in libraries:
        if library.startswith("libcudart.so.") and torch_cuda:
            built = library.split(".so.")[1].split(".")[0]
            if built != torch_cuda.split(".")[0]:
                return f" (it was built for CUDA {built}; torch is a CUDA {torch_cuda} build)"
    return ""


def _rebuild(facts: Facts, package: Package) -> str:
    """The one fix for a compiled extension that does not fit the installed torch: a binary that
    really is built for it. Reinstalling the same release is no fix: FA2's setup.py downloads the
    same prebuilt wheel again unless FLASH_ATTENTION_FORCE_BUILD=TRUE, and an xFormers wheel is
    built for one torch only."""
    torch = facts.torch
    backend = backend_of_distribution(package.name)
    if package.name == FA2:
        return _rebuild_fa2(facts, package, torch)
    if package.name == "xformers" and torch is not None:
        matching = xformers_for(torch.version)
        if matching is None:
            return f"# no xFormers release is built for torch {torch.version}: use {by_name()['sdpa'].axolotl}"
        return (
            f"attn-doctor install xformers  # xformers {matching.version}, the release built for torch {torch.version}"
        )
    if backend is not None and backend.installable:
        return (
            f"{backend.install.split('  #')[0]}  # built again against torch {torch.version if torch else ''}".rstrip()
        )
    return f"{_reinstall(facts, package)}  # the same release again"


def _rebuild_fa2(facts: Facts, fa2: Package, torch: Torch | None) -> str:
    """FA2's release wheel built for this torch where the release has one, else a compile forced
    past setup.py's download of the (wrong) prebuilt wheel, sized for this machine."""
    wheel = torch and fa2_wheel_for(fa2.version or "", torch, facts.python)
    against = f"torch {torch.version}" if torch else "the torch installed first"
    if torch and wheel:
        url = fa2_wheel_url(fa2.version or "", wheel)
        command = pip_install(facts, f"--force-reinstall --no-deps {url}")
        return f"{command}  # the release's own wheel for {against}"
    tools = facts.toolchain
    archs = fa2_cuda_archs(facts.gpus)  # this machine's GPUs only, as the install plan builds
    jobs = build_jobs(tools.cpus, tools.ram_gib, len(archs))
    minutes = fa2_build_minutes(jobs, len(archs))
    command = pip_install(
        facts, f"--force-reinstall --no-deps --no-build-isolation --no-cache-dir flash-attn=={fa2.version}"
    )
    sm = ";".join(archs)
    settings = f"FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTN_CUDA_ARCHS='{sm}' MAX_JOBS={jobs}"
    return (
        f"{settings} {command}  # no release wheel for {against}: compiles against it for sm {sm}, "
        f"about {minutes} min with {jobs} jobs, peak near {build_peak_gib(jobs, len(archs)):.0f} GiB (nvcc, ninja)"
    )


def toolchain_findings(facts: Facts) -> list[Finding]:
    torch, tools = facts.torch, facts.toolchain
    if torch is None or not torch.cuda:
        return []  # builds are judged for CUDA torch only; nothing here compiles for a CPU torch
    found = []
    if tools.nvcc and tools.nvcc.split(".")[0] != torch.cuda.split(".")[0]:
        found.append(
            finding(
                "nvcc-torch-cuda-mismatch",
                f"nvcc {tools.nvcc} ({tools.nvcc_path}) and torch's CUDA {torch.cuda} differ in major version",
                [f"export CUDA_HOME=/usr/local/cuda-{torch.cuda}  # a toolkit matching torch, if installed"],
                subject=Subject(Kind.TOOL, "nvcc"),
            )
        )
    missing = [
        name for name, path in (("nvcc", tools.nvcc_path), ("ninja", tools.ninja), ("c++", tools.cxx)) if not path
    ]
    if missing:
        fix = [pip_install(facts, "ninja")] if "ninja" in missing else []
        found.append(finding("build-tool-missing", f"missing for source builds: {', '.join(missing)}", fix))
    return found


def repair_findings(facts: Facts) -> list[Finding]:
    """A repair or install killed half-way leaves the environment between before and planned."""
    return [
        finding(
            "repair-unfinished",
            f"a repair of this environment was interrupted and is half-done: {Path(folder).name}",
            [f"attn-doctor undo --python {shlex.quote(facts.python.executable)}  # puts back what it had changed"],
            [f"journal: {folder}/journal.json"],
        )
        for folder in facts.unfinished_repairs
    ]


CONCERNS: tuple[Callable[[Facts], list[Finding]], ...] = (
    gpu_findings,
    python_findings,
    repair_findings,
    torch_findings,
    package_findings,
    collision_findings,
    gpu_support_findings,
    xformers_findings,
    import_findings,
    binary_findings,
    toolchain_findings,
)


def diagnose(facts: Facts) -> list[Finding]:
    """Every finding, the most severe first (the order within one severity is the concerns' order)."""
    found = [f for concern in CONCERNS for f in concern(facts)]
    return sorted(found, key=lambda f: -f.severity)
