"""One place that turns a problem into the commands that fix it: install and reinstall lines for the
target's own installer, the rebuild of a compiled extension that does not fit, what to use instead."""

from __future__ import annotations

import shlex
from pathlib import Path

from attn_doctor.facts.model import Facts, Gpu, Package, Torch
from attn_doctor.registry.backends import (
    FA2_DISTRIBUTION,
    backend_of_distribution,
    by_name,
)
from attn_doctor.registry.recipes import build_jobs, build_peak_gib, fa2_build_minutes, fa2_cuda_archs, xformers_for
from attn_doctor.registry.versions import is_version
from attn_doctor.registry.wheels import fa2_wheel_for, fa2_wheel_url
from attn_doctor.rules.ranking import first_choice


def pip_install(facts: Facts, args: str) -> str:
    """The install command for the target, by the installer `install` would use there
    (Interpreter.preferred_installer); pip bootstrapped first where there is neither."""
    python = shlex.quote(facts.python.executable)
    if facts.python.externally_managed:  # pip refuses a PEP 668 Python: into the venv its finding makes
        return f".venv/bin/python -m pip install {args}  # in the venv python-externally-managed makes"
    if facts.python.preferred_installer == "uv" and facts.python.uv:
        return f"{shlex.quote(facts.python.uv)} pip install --python {python} {args}"
    if facts.python.pip_version is None:
        return f"{python} -m ensurepip && {python} -m pip install {args}"
    return f"{python} -m pip install {args}"


def reinstall(facts: Facts, package: Package) -> str:
    """The same version again: METADATA's, else the dist-info folder's (`name-VERSION.dist-info`).
    Never the bare name: for flash-attn-4, whose releases are all pre-releases, that resolves to
    the 0.0.1 placeholder wherever it is not yanked (a local wheelhouse), or to nothing."""
    folder = Path(package.dist_info).name.removesuffix(".dist-info")
    versions = [package.version, folder.split("-")[1] if folder.count("-") == 1 else None]
    version = next((v for v in versions if is_version(v)), None)
    pin = f"{package.name}=={version}" if version else package.name
    return pip_install(facts, f"--force-reinstall --no-deps {shlex.quote(pin)}")


def listed(paths: tuple[str, ...] | list[str], limit: int = 3) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def public_release(version: str) -> str:
    """2.11.0 for 2.11.0+cu130: the release, without the build's local label."""
    return version.split("+", 1)[0]


def rebuild(facts: Facts, package: Package) -> str:
    """The one fix for a compiled extension that does not fit the installed torch: a binary that
    really is built for it. Reinstalling the same release is no fix: FA2's setup.py downloads the
    same prebuilt wheel again unless FLASH_ATTENTION_FORCE_BUILD=TRUE, and an xFormers wheel is
    built for one torch only."""
    torch = facts.torch
    backend = backend_of_distribution(package.name)
    if package.name == FA2_DISTRIBUTION:
        return rebuild_fa2(facts, package, torch)
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
    return f"{reinstall(facts, package)}  # the same release again"


def rebuild_fa2(facts: Facts, fa2: Package, torch: Torch | None) -> str:
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
        facts,
        "--force-reinstall --no-deps --no-build-isolation --no-cache-dir " + shlex.quote(f"flash-attn=={fa2.version}"),
    )
    sm = ";".join(archs)
    settings = f"FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTN_CUDA_ARCHS='{sm}' MAX_JOBS={jobs}"
    return (
        f"{settings} {command}  # no release wheel for {against}: compiles against it for sm {sm}, "
        f"about {minutes} min with {jobs} jobs, peak near {build_peak_gib(jobs, len(archs)):.0f} GiB (nvcc, ninja)"
    )


def too_old_fix(facts: Facts, package: Package | None, library: str) -> list[str]:
    """A binary built for a newer glibc/libstdc++ than this machine gives it: build it here, where
    the compiler links against what this machine has; for libstdc++ in a conda env, a newer one."""
    fix = [rebuild(facts, package)] if package is not None else []
    if library.startswith("libstdc++") and facts.python.environment == "conda":
        prefix = shlex.quote(facts.python.prefix)
        fix.append(f"conda install -p {prefix} -c conda-forge libstdcxx-ng  # or: a libstdc++ new enough, first")
    if library.startswith("libc."):
        fix.append("# or a release built for an older glibc (a manylinux wheel of this OS's glibc or older)")
    return fix


def instead(gpu: Gpu) -> str:
    """What to use on this GPU: the first ranked backend, installed or how to get it."""
    backend = first_choice(gpu)
    return backend.install if backend.distribution else f"use {backend.label}: {backend.axolotl}"


def xformers_fa4_fix(facts: Facts) -> list[str]:
    return [
        "attn-doctor install fa2  # FA2 gives xformers the flash_attn it looks for; FA4 stays (fix-shadow follows)",
        "# or, where you train with FA4 and not with xFormers:",
        f"{shlex.quote(facts.python.executable)} -m pip uninstall -y xformers",
    ]


def inside(path: Path, folder: str) -> bool:
    return Path(folder) in path.parents
