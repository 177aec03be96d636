"""Collect every fact about this machine and the target interpreter. Read-only."""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import socket
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from attn_doctor import __version__
from attn_doctor.facts import gpu_child, head_start
from attn_doctor.facts.binaries import check_binaries, torch_abi
from attn_doctor.facts.fatbin import FatbinError, torch_cuda_code
from attn_doctor.facts.gpu import read_gpus
from attn_doctor.facts.hub_cache import compiled_files, read_hub_kernels
from attn_doctor.facts.imports import import_all
from attn_doctor.facts.locate import find_target
from attn_doctor.facts.model import Driver, Facts, Gpu, HubKernel, Interpreter, Package, Ptxas, Torch, Variable
from attn_doctor.facts.ptxas import read_ptxas
from attn_doctor.facts.repairs import unfinished
from attn_doctor.facts.target import ProbeResult, RunningProbe
from attn_doctor.facts.toolchain import read_toolchain
from attn_doctor.inputs import MIB, InputError, read_text
from attn_doctor.registry.backends import KERNELS_DISTRIBUTION, VARIABLES, file_marks, import_checks, packaged
from attn_doctor.registry.hub import variant_fits
from attn_doctor.registry.versions import in_range


def collect(
    python: str | None = None,
    deep: bool = False,
    nvml: Any | None = None,
    modules: list[str] | None = None,
    read_torch_abi: bool = False,
) -> Facts:
    """Raises TargetError when the target interpreter cannot be inspected. `modules` are imported
    in child processes too (what --require needs), `deep` adds every installed backend."""
    executable, found_by = find_target(python)
    # The waits overlap: the probe's interpreter start-up, NVML's initialisation (read by the head
    # start's child where `check` started one, else here: mostly in C, so a thread suits it), the
    # toolkit's version files, and the readings that need the probe's answer: the extensions' ELF
    # files, torch's fatbins, Triton's ptxas.
    early = head_start.take(executable, deep)  # started by the entry point, before the CLI's imports
    probe = RunningProbe(executable, deep, early.probe if early else None)
    with ThreadPoolExecutor(max_workers=4) as pool:
        gpus = pool.submit(_read_gpus, nvml)
        toolchain = pool.submit(read_toolchain, str(Path(executable).parent))
        seen = probe.result()
        # torch's C++ ABI (what FA2's wheel names encode): known from the extensions' reading where
        # there are any; read off libc10 only when asked (install plans), 30 ms `check` spares
        asked = pool.submit(torch_abi, seen.torch.location) if seen.torch and read_torch_abi else None
        torch_code = pool.submit(torch_cuda_code, seen.torch.location) if seen.torch and seen.torch.cuda else None
        ptxas = pool.submit(triton_ptxas, seen)
        binaries = check_binaries(extensions(seen), seen.torch.location if seen.torch else None)
        driver, found_gpus = gpus.result()
        tools = toolchain.result()
        abi = asked.result() if asked else next((b.torch_abi for b in binaries if b.torch_abi), None)
        torch = seen.torch
        if torch is not None and abi is not None:
            torch = dataclasses.replace(torch, cxx11_abi=abi == "cxx11")
        if torch is not None and torch_code is not None:
            torch = dataclasses.replace(torch, cuda_code=_read_or_nothing(torch_code))
    # a backend asked for (--require) is imported only where it is installed: "not installed" is
    # the whole answer for one that is not, not an import error on top of it
    installed = {p.name for p in seen.packages}
    owners = {m: d for d, m in import_checks().items()}
    wanted = [m for m in modules or [] if owners.get(m) is None or owners[m] in installed]
    if deep:
        wanted += [m for d, m in import_checks().items() if d in installed and m not in wanted]
    imports = import_all(executable, wanted)
    hub = read_hub_kernels(os.environ) if KERNELS_DISTRIBUTION in installed else ()
    return Facts(
        gpus=found_gpus,
        driver=driver,
        python=seen.python,
        torch=torch,
        packages=seen.packages,
        resolutions=seen.resolutions,
        toolchain=tools,
        imports=imports,
        binaries=binaries,
        fa4_sm90_backward=fa4_sm90_backward(seen),
        torch_problem=seen.torch_problem,
        installed=seen.installed,
        environment=tuple(Variable(n, os.environ[n]) for n in VARIABLES if n in os.environ),
        unfinished_repairs=unfinished_repairs(seen.python.prefix),
        marked_files=marked_files(seen.packages),
        ptxas=ptxas.result(),
        hub_kernels=_with_binaries(hub, torch, seen.python),
        target_found_by=found_by,
        hostname=socket.gethostname(),
        collected_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        doctor_version=__version__,
    )


def _read_or_nothing(reading: Future[tuple[str, ...]]) -> tuple[str, ...]:
    """torch's GPU code, or nothing where its library does not read (a damaged file is the binaries'
    finding to tell; the verdict on torch then rests on the rest)."""
    try:
        return reading.result()
    except (OSError, FatbinError):
        return ()


def triton_ptxas(seen: ProbeResult) -> tuple[Ptxas, ...]:
    triton = next((p for p in seen.packages if p.name == "triton"), None)
    if triton is None:
        return ()
    return read_ptxas(triton.location, seen.torch.location if seen.torch else None, os.environ)


def extensions(seen: ProbeResult) -> list[tuple[str, str]]:
    """(path, package) of every compiled extension of the attention packages: those their
    RECORD lists, and those the import system finds (an in-place build has no RECORD row)."""
    found: dict[str, tuple[str, str]] = {}
    for package in seen.packages:
        for relative in package.extension_modules:
            path = os.path.normpath(os.path.join(package.location, relative))
            if os.path.isfile(path):
                found.setdefault(os.path.realpath(path), (path, package.name))
    # a backend's further resolved modules say which package they belong to, wherever they were built
    owners = {m: b.distribution for b in packaged() for m in b.resolve[1:] if b.distribution}
    for resolution in seen.resolutions:
        owner = owners.get(resolution.module)
        if owner and resolution.origin and resolution.origin.endswith(".so"):
            found.setdefault(os.path.realpath(resolution.origin), (resolution.origin, owner))
    return sorted(found.values())


def fa4_sm90_backward(seen: ProbeResult) -> bool | None:
    """Whether the FA4 that `import flash_attn.cute` finds has its Hopper backward kernel
    (decided from the installed files, not from a version list)."""
    cute = next((r for r in seen.resolutions if r.module == "flash_attn.cute"), None)
    if cute is None or not cute.search_locations:
        return None
    return any(os.path.isfile(os.path.join(folder, "flash_bwd_sm90.py")) for folder in cute.search_locations)


# the marked files are a few KiB of Python source; anything larger is not the file the mark describes
MAX_MARKED_BYTES = 1 * MIB


def marked_files(packages: tuple[Package, ...]) -> tuple[str, ...]:
    """The `distribution:path` of each installed file in which the registry's FileMark is found. Read
    only where a release it describes is installed: nothing for most environments."""
    installed = {p.name: p for p in packages}
    found = []
    for distribution, versions, mark in file_marks():
        package = installed.get(distribution)
        if package is None or package.version is None or not in_range(package.version, versions):
            continue
        try:
            text = read_text(Path(package.location) / mark.path, mark.path, MAX_MARKED_BYTES)
        except InputError:
            continue  # not there (or not a plain file): the mark cannot be read, so is not claimed
        if re.search(mark.pattern, text):
            found.append(f"{distribution}:{mark.path}")
    return tuple(found)


def unfinished_repairs(prefix: str) -> tuple[str, ...]:
    """Repairs of this environment whose journal says they were interrupted."""
    return tuple(str(folder) for folder in unfinished(prefix))


def _read_gpus(nvml: Any | None) -> tuple[Driver, tuple[Gpu, ...]]:
    """The GPUs as the head start's child read them (a real run, not a test's recorded NVML), else
    read here."""
    started = head_start.take_gpus() if nvml is None else None
    reading = gpu_child.taken(started) if started is not None else None
    return reading if reading is not None else read_gpus(nvml)


def _with_binaries(kernels: tuple[HubKernel, ...], torch: Torch | None, python: Interpreter) -> tuple[HubKernel, ...]:
    """The cached Hub kernels, each with the compiled files of the builds `kernels` would load for
    this torch read as installed extensions are (in one reading of torch's libraries)."""
    if torch is None or not kernels:
        return kernels
    files = [
        (path, kernel.repo)
        for kernel in kernels
        for path in compiled_files(kernel, lambda variant: variant_fits(variant, torch, python) is True)
    ]
    read = check_binaries(files, torch.location)
    return tuple(dataclasses.replace(k, binaries=tuple(b for b in read if b.package == k.repo)) for k in kernels)
