"""install: the exact steps that put one attention backend into the target environment.

Planned from the same facts as `check` (so `--facts`/`--gpu`/`--torch` plan for another
machine), with the recipes' data (`registry/recipes.py`). Every pip step names the installed torch
as a requirement of its own (`torch==2.11.0+cu130`): the resolver may then keep it or fail, never
swap it. Every step that changes the environment watches site-packages and the scripts folder,
so `undo` puts them back as they were.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from attn_doctor.actions.installer import Installer, choose_installer, may_write
from attn_doctor.actions.plan import Command, MoveAside, Plan, Refusal, Step
from attn_doctor.actions.runner import carry_out_checked
from attn_doctor.actions.source import Source, SourceError, declared_version, git_head, read_source, unpack_argv
from attn_doctor.facts.collect import collect
from attn_doctor.facts.model import Facts, Gpu, Torch
from attn_doctor.facts.target import TargetError
from attn_doctor.registry import recipes
from attn_doctor.registry.backends import FA2_DISTRIBUTION, FA4_DISTRIBUTION, Backend, by_name
from attn_doctor.registry.findings import Group
from attn_doctor.registry.versions import release
from attn_doctor.registry.wheels import cpython_tag, fa2_wheel_for, fa2_wheel_url, machine_of
from attn_doctor.rules.assess import assess
from attn_doctor.rules.diagnose import diagnose
from attn_doctor.rules.ranking import first_choice, ranking, weakest
from attn_doctor.workload import Workload


@dataclass(frozen=True)
class InstallRequest:
    backend: str  # one of INSTALLABLE
    installer: str | None = None  # "pip" | "uv"; None: as the environment suggests
    find_links: str | None = None  # a local wheelhouse
    offline: bool = False  # the index is not used at all
    force: bool = False  # plan even where the checks say it cannot run here
    allow_system: bool = False  # a PEP 668 system Python
    sources: tuple[str, ...] = ()  # local trees or archives to build from, instead of fetching (fa2, fa3, sage)
    head_dims: tuple[tuple[int, int], ...] = ()  # (q/k, v) each: FA3 builds only the kernels these need


# What --source can build: the backends compiled from a source tree
FROM_SOURCE = ("fa2", "fa3", "sage")


@dataclass(frozen=True)
class Install:
    """The plan and what a successful run must leave behind."""

    plan: Plan
    backend: Backend
    distribution: str
    version: str | None  # the version the run must leave; None: whatever the source tree declares


@dataclass(frozen=True)
class _Context:
    facts: Facts
    torch: Torch
    installer: Installer
    watch: tuple[str, ...]
    request: InstallRequest

    @property
    def torch_pin(self) -> str:
        """The installed torch by its distribution's version: torch's version.py may say
        2.11.0+cu130 where the dist-info says 2.11.0, and only the latter is what pip matches
        against the installed torch (seen on the H100: `torch==2.11.0+cu130` found nothing)."""
        package = self.facts.package("torch")
        return f"torch=={package.version if package and package.version else self.torch.version}"


def plan_install(facts: Facts, request: InstallRequest, here: bool = True) -> Install:
    """Raises Refusal with the reason and what to do instead. `here`: the facts are this
    machine's (not a saved report's), so its folders can be checked for writing."""
    backend = by_name()[request.backend]
    python = facts.python
    site = next((p for p in reversed(python.site_packages) if os.path.isdir(p)), python.prefix)
    may_write(python, site if here else None, request.allow_system)
    if facts.torch is None:
        raise Refusal(
            f"torch is not installed in {python.executable}: install the torch you train with first "
            f"(attn-doctor never chooses torch for you), then `attn-doctor install {backend.name}`"
        )
    if request.sources and backend.name not in FROM_SOURCE:
        raise Refusal(
            f"--source builds {', '.join(FROM_SOURCE)} from their source; {backend.label} installs from "
            "wheels (use --find-links DIR for a local wheelhouse)"
        )
    problems = _cannot_run(facts, backend, facts.torch)
    if problems and not request.force:
        raise Refusal(f"{backend.label} cannot run here: {'; '.join(problems)}. {_instead(facts, backend)}")
    installer = choose_installer(python, request.installer, request.find_links, request.offline, request.allow_system)
    watch = tuple(dict.fromkeys([*python.site_packages, str(Path(python.executable).parent)]))
    context = _Context(facts, facts.torch, installer, watch, request)
    steps, notes, distribution, version = _RECIPES[backend.name](context)
    forced = tuple(f"--force: planned although {p}" for p in problems)
    notes += _behind_sdpa(facts, backend)
    # pip resolves the backend's own requirements too: say so before, list them after (cli)
    notes = [
        *notes,
        "pip also installs or upgrades what these require (torch held where it is): "
        "each one is named after the run, and undo takes them back with the rest",
    ]
    plan = Plan(
        f"install-{backend.name}",
        python.executable,
        python.prefix,
        tuple(steps),
        (f"install {backend.label} into {python.executable}, torch {facts.torch.version} kept",),
        forced + tuple(notes),
    )
    return Install(plan, backend, distribution, version)


def _behind_sdpa(facts: Facts, backend: Backend) -> list[str]:
    """Installing a backend that the ranking puts after SDPA (built into torch) for training on
    this GPU buys no speed: the plan says so."""
    gpu = weakest(facts.gpus)
    if gpu is None:
        return []
    ranked = [b.name for b in ranking(gpu, Workload())]
    if backend.name not in ranked or "sdpa" not in ranked or ranked.index(backend.name) < ranked.index("sdpa"):
        return []
    here = f"{gpu.architecture} {gpu.sm or gpu.gfx_target}"
    return [
        f"for training on this GPU ({here}) the doctor ranks {backend.label} after PyTorch SDPA, "
        f"which torch already has (`attn-doctor explain {backend.name}` says why)"
    ]


def verify_install(install: Install, before: Facts, after: Facts, torch_record: str | None) -> list[str]:
    """What is not as the plan promised after a run; empty when it is. `torch_record`: what
    `torch_record_digest` said before the run."""
    problems = []
    package = after.package(install.distribution)
    if package is None:
        problems.append(f"{install.distribution} is not installed")
    elif install.version is not None and package.version != install.version:
        problems.append(f"{install.distribution} is {package.version}, not {install.version}")
    old, new = before.torch, after.torch
    if old is not None and (new is None or (new.version, new.location) != (old.version, old.location)):
        problems.append(f"torch changed: {old.version} -> {new.version if new else 'gone'} (it must not be replaced)")
    elif torch_record != torch_record_digest(after):  # the same version reinstalled: maybe another build
        problems.append("torch was reinstalled (its RECORD changed): it must not be touched")
    # the installed backend's own verdict: its import, requirements, files and release; a FA2/FA4
    # collision is fix-shadow's to repair next, not a reason to undo
    findings = [f for f in diagnose(after) if not f.rule.is_in(Group.COLLISION)]
    verdict = assess(install.backend, after, Workload(), findings)
    if verdict.installed:  # else its one problem is the missing package, said above
        problems += verdict.problems
    hopper = any((g.compute_capability or "").startswith("9.") for g in after.gpus)
    if install.backend.name == "fa4" and hopper and after.fa4_sm90_backward is False:
        problems.append(
            "this FA4 has no Hopper backward kernel (flash_bwd_sm90.py): it cannot train here; "
            "install FA4 from its source tree instead (pip install -e flash_attn/cute, then attn-doctor fix-shadow)"
        )
    return problems


def carry_out_install(
    job: Install,
    python: str | None,
    before: Facts,
    say: Callable[[str], None],
    output: Callable[[str], None],
    on_gpu: Callable[[Facts], list[str]],
) -> Facts:
    """Run the plan, then verify it (`verify_install`, and `on_gpu`: a run of the kernel against
    the reference where there is a GPU); undo it all when anything is not as promised. Returns
    the facts collected afterwards. Raises the runner's Undone or RunnerError."""
    torch_record = torch_record_digest(before)
    collected: list[Facts] = []

    def check() -> list[str]:
        try:
            collected.append(collect(python, modules=[job.backend.module]))
        except TargetError as error:
            return [str(error)]
        return verify_install(job, before, collected[0], torch_record) or on_gpu(collected[0])

    carry_out_checked(job.plan, check, say, output)
    return collected[0]


def torch_record_digest(facts: Facts) -> str | None:
    """sha256 of torch's RECORD: a reinstall rewrites it, even of the same version. Read here,
    not by check's probe, which leaves torch's files alone for speed."""
    torch = facts.package("torch")
    try:
        return hashlib.sha256((Path(torch.dist_info) / "RECORD").read_bytes()).hexdigest() if torch else None
    except OSError:
        return None


def _cannot_run(facts: Facts, backend: Backend, torch: Torch) -> list[str]:
    """Why the backend would not run on this machine (each of these --force overrides): its
    assessment's, and what only an install asks (a GPU at all, a GPU build of torch)."""
    problems = list(assess(backend, facts, Workload(), ()).unfit)
    if not facts.gpus:
        problems.append("no GPU was found (plan for another machine with --gpu, or pass --force)")
    if not torch.cuda and not torch.hip:
        problems.append(f"torch {torch.version} is a CPU-only build")
    elif torch.hip and backend.support_for(None).amd == ():
        problems.append(f"it has no ROCm build (torch {torch.version} is built for ROCm {torch.hip})")
    return problems


def _gpu_label(gpu: Gpu) -> str:
    return f"{gpu.name} ({gpu.sm or gpu.gfx_target})"


def _instead(facts: Facts, backend: Backend) -> str:
    """The first backend ranked for these GPUs other than this one."""
    other = first_choice(weakest(facts.gpus), excluding=backend.name)
    if other.distribution is not None:
        return f"Instead: {other.install}"
    return "Use PyTorch SDPA (part of torch, nothing to install): attn_implementation: sdpa"


def _pip_step(context: _Context, why: str, *requirements: str, flags: tuple[str, ...] = (), **env: str) -> Command:
    argv = context.installer.install(*requirements, context.torch_pin, flags=flags)
    return Command(argv, context.watch, why, tuple(sorted(env.items())))


_Recipe = tuple[list[Step], list[str], str, str | None]


def _fa4(context: _Context) -> _Recipe:
    extra = "[cu13]" if release(context.torch.cuda)[:1] >= (13,) else ""
    requirement = f"flash-attn-4{extra}=={recipes.FA4_VERSION}"
    notes = [
        f"flash-attn-4 {recipes.FA4_VERSION} is a pre-release, pinned exactly (plain `pip install flash-attn-4` "
        "finds no release); the cu13 extra brings the CUDA 13 CuTe DSL libraries"
        if extra
        else f"flash-attn-4 {recipes.FA4_VERSION} is a pre-release, pinned exactly",
        "the first call per shape JIT-compiles (~2 s); importing flash_attn.cute takes ~10 s (CuTe DSL)",
    ]
    if context.facts.package(FA2_DISTRIBUTION) is not None:
        notes.append(
            "FA2 is installed and shares flash_attn/cute/ with FA4: after the install the doctor repairs "
            "that collision with fix-shadow's plan, shown and undoable on its own"
        )
    why = "FA4 and its CuTe DSL dependencies" + (" for CUDA 13" if extra else "")
    return [_pip_step(context, why, requirement)], notes, FA4_DISTRIBUTION, recipes.FA4_VERSION


def _xformers(context: _Context) -> _Recipe:
    chosen = recipes.xformers_for(context.torch.version)
    if chosen is None:
        known = ", ".join(f"{x.version} (torch{x.torch})" for x in recipes.XFORMERS[:4])
        raise Refusal(
            f"no xFormers release is built for torch {context.torch.version}: each wheel requires its own torch "
            f"({known}); installing one would replace torch. Use SDPA, or move torch to a supported release"
        )
    notes = [f"xformers {chosen.version} requires torch{chosen.torch} ({chosen.source})"]
    flags: tuple[str, ...] = ()
    if release(context.torch.cuda)[:1] >= (13,) and not (context.request.offline or context.request.find_links):
        flags = ("--index-url", recipes.XFORMERS_CU13_INDEX)
        notes.append("PyPI's xformers wheels are CUDA 12.8 builds: the CUDA 13 build comes from PyTorch's index")
    return (
        [
            _pip_step(
                context,
                f"the xFormers release built for torch {context.torch.version}",
                f"xformers=={chosen.version}",
                flags=flags,
            )
        ],
        notes,
        "xformers",
        chosen.version,
    )


def _fa2(context: _Context) -> _Recipe:
    facts, torch = context.facts, context.torch
    if torch.hip:
        return _fa2_rocm(context)
    wheel = fa2_wheel_for(recipes.FA2_WHEEL_VERSION, torch, facts.python)
    if wheel is not None and not context.request.sources:
        url = fa2_wheel_url(recipes.FA2_WHEEL_VERSION, wheel)
        # a local wheelhouse is searched by name; the release asset is fetched by its URL
        local = context.request.find_links or context.request.offline
        requirement = f"flash-attn=={recipes.FA2_WHEEL_VERSION}" if local else f"flash-attn @ {url}"
        notes = [f"a prebuilt FA2 wheel exists for this torch/CUDA/Python/ABI: {wheel} (no compiling)"]
        return (
            [_pip_step(context, "FA2's prebuilt wheel from its GitHub release", requirement, "einops")],
            notes,
            "flash-attn",
            recipes.FA2_WHEEL_VERSION,
        )
    built = _built_here(context, FA2_DISTRIBUTION, recipes.FA2_VERSION)
    if built is not None and not context.request.sources:
        notes = [
            f"{built} in --find-links: FA2 {recipes.FA2_VERSION} built before, installed without compiling; "
            "the verification undoes it if it was built against another torch"
        ]
        step = _pip_step(context, "FA2 as built before, from the wheelhouse", f"flash-attn=={recipes.FA2_VERSION}")
        return [step], notes, FA2_DISTRIBUTION, recipes.FA2_VERSION
    archs = recipes.fa2_cuda_archs(facts.gpus)
    steps, notes, env = _build_setup(context, recipes.FA2_MIN_NVCC)
    jobs = int(env["MAX_JOBS"])
    minutes = recipes.fa2_build_minutes(jobs, len(archs))
    notes = [
        f"no prebuilt FA2 wheel for torch {torch.version} ({torch.build}), Python {facts.python.version}: "
        f"it compiles, roughly {minutes} min with {jobs} jobs for sm {';'.join(archs)} "
        "(scaled from 19 min measured for sm 90 with 16 jobs on an H100)",
        *notes,
    ]
    env.update(FLASH_ATTN_CUDA_ARCHS=";".join(archs), FLASH_ATTENTION_FORCE_BUILD="TRUE")
    requirement = f"flash-attn=={recipes.FA2_VERSION}"
    if context.request.sources:
        placed, requirement, where = _fa2_source(context)
        steps += placed
        notes.append(where)
    steps.append(
        _pip_step(
            context,
            f"compile FA2 {recipes.FA2_VERSION} for this machine's GPUs only",
            requirement,
            flags=("--no-build-isolation", "--no-cache-dir"),
            **env,
        )
    )
    return steps, notes, FA2_DISTRIBUTION, recipes.FA2_VERSION


def _built_here(context: _Context, distribution: str, version: str) -> str | None:
    """A wheel of exactly this release for the target's Python and machine in --find-links: one
    built from source once (on this cluster, for this torch) and kept, so that other nodes need
    not compile it again. Its name cannot say which torch it was built against."""
    if not context.request.find_links:
        return None
    python, machine = cpython_tag(context.facts.python.version), machine_of(context.facts.python)
    for wheel in sorted(Path(context.request.find_links).glob("*.whl")):
        try:
            name, found, _, tags = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename:
            continue
        ours = any(t.interpreter == python and t.platform.endswith(machine) for t in tags)
        if name == canonicalize_name(distribution) and str(found) == version and ours:
            return wheel.name
    return None


def _fa2_rocm(context: _Context) -> _Recipe:
    gfx = sorted({g.gfx_target for g in context.facts.gpus if g.gfx_target in recipes.ROCM_GFX}) or list(
        recipes.ROCM_GFX
    )
    jobs = recipes.build_jobs(context.facts.toolchain.cpus, context.facts.toolchain.ram_gib, len(gfx))
    notes = [
        "no ROCm wheel exists: FA2's CK backend compiles for " + ",".join(gfx),
        "for the Triton backend instead, set FLASH_ATTENTION_TRITON_AMD_ENABLE=TRUE at build and at run time",
    ]
    steps: list[Step] = [_pip_step(context, "FA2's build requirements", *recipes.BUILD_REQUIREMENTS)]
    steps.append(
        _pip_step(
            context,
            f"compile FA2 {recipes.FA2_VERSION} (ROCm CK)",
            f"flash-attn=={recipes.FA2_VERSION}",
            flags=("--no-build-isolation", "--no-cache-dir"),
            GPU_ARCHS=";".join(gfx),
            MAX_JOBS=str(jobs),
        )
    )
    return steps, notes, FA2_DISTRIBUTION, recipes.FA2_VERSION


def _fa3(context: _Context) -> _Recipe:
    steps, notes, env = _build_setup(context, recipes.FA3_MIN_NVCC)
    nvcc = context.facts.toolchain.nvcc
    if nvcc and (12, 3) <= release(nvcc) < (13,) and nvcc != recipes.FA3_NVCC_NO_DOWNLOAD:
        if context.request.offline:
            env["FLASH_ATTENTION_OFFLINE_BUILD"] = "TRUE"
        notes.append(
            f"nvcc {nvcc} is not {recipes.FA3_NVCC_NO_DOWNLOAD}: upstream's hopper/setup.py downloads nvcc 12.6 and "
            "ptxas 12.8 from NVIDIA unless FLASH_ATTENTION_OFFLINE_BUILD is set; CUDA 12.8 is recommended"
        )
    if release(context.facts.python.version) < (3, 10):
        raise Refusal(f"FA3 {recipes.FA3_VERSION} needs Python >= 3.10, this is {context.facts.python.version}")
    switches, narrowed = _fa3_switches(context)
    env.update({f"FLASH_ATTENTION_DISABLE_{name}": "TRUE" for name in sorted(switches)})
    # hopper/setup.py's bdist_wheel first tries to download a prebuilt FA3 wheel (none is
    # published) and only an HTTP error falls back to compiling: with no network the URLError
    # fails the install. FORCE_BUILD skips the download (CachedWheelsCommand.run, @0251105a).
    env["FLASH_ATTENTION_FORCE_BUILD"] = "TRUE"
    sm90, sm80 = recipes.fa3_kernel_files(frozenset(switches))
    full90, full80 = recipes.fa3_kernel_files(frozenset())
    jobs = int(env["MAX_JOBS"])
    minutes = recipes.fa3_build_minutes(sm90 + sm80, jobs)
    notes += narrowed
    notes.append(
        f"FA3 compiles {sm90 + sm80} kernel files ({sm90} sm90a, {sm80} sm80; everything is {full90 + full80}): "
        f"roughly {minutes} min with {jobs} jobs"
        + ("" if context.request.head_dims else "; --head-dim N (or --model) builds only that head dim's kernels")
    )
    steps += _tree_steps(context, recipes.FA3_TREE)
    steps.append(_build_tree(context, recipes.FA3_TREE, "compile FA3 from hopper/ (Hopper kernels)", env))
    notes.append("FA3 is not on PyPI: built from upstream's hopper/ at the pinned commit")
    return steps, notes, "flash-attn-3", recipes.FA3_VERSION


def _fa3_switches(context: _Context) -> tuple[set[str], list[str]]:
    """The FLASH_ATTENTION_DISABLE_* switches of hopper/setup.py for this machine's GPUs and the
    workload's head dim (recipes.FA3_NARROW_OFF says why each), and what the plan says of them."""
    off: set[str] = set()
    notes = []
    if not any((g.compute_capability or "").startswith("8.") for g in context.facts.gpus):
        off.add("SM80")  # setup.py also builds Ampere kernels unless told not to
        notes.append("FA3 for sm90a only (FLASH_ATTENTION_DISABLE_SM80: no Ampere GPU here)")
    if not context.request.head_dims:
        return off, notes
    kept: set[int] = set()
    diffs: set[str] = set()
    for q, v in context.request.head_dims:
        if max(q, v) > recipes.FA3_MAX_HEAD_DIM:
            raise Refusal(f"FA3 runs head dims up to {recipes.FA3_MAX_HEAD_DIM}; this one is {q},{v}")
        kept |= {recipes.fa3_head_dim_bucket(q), recipes.fa3_head_dim_bucket(max(q, v))}
        diff = recipes.FA3_HDIMDIFF.get((recipes.fa3_head_dim_bucket(q), v)) if q != v else None
        diffs |= {diff} if diff else set()
    off |= {f"HDIM{d}" for d in recipes.FA3_HEAD_DIMS if d not in kept}
    off |= set(recipes.FA3_HDIMDIFF.values()) - diffs
    off |= set(recipes.FA3_NARROW_OFF)
    split = sorted(f"{q},{v}" for q, v in context.request.head_dims if q != v)
    dims = "/".join(str(d) for d in sorted(kept)) + (f" (q,v {' '.join(split)})" if diffs else "")
    notes.append(
        f"narrow FA3 build for head dim {dims}: bf16 and fp16, forward and backward, causal, varlen and GQA; "
        "left out: other head dims, fp8, sliding-window (local) attention, softcap, and decoding's split/paged/"
        "appended KV and pack-GQA (a model needing them gets FA3's error, not a wrong result; install without "
        "--head-dim for everything)"
    )
    return off, notes


def _sage(context: _Context) -> _Recipe:
    steps, notes, env = _build_setup(context, "12.0")
    nvcc = release(context.facts.toolchain.nvcc)
    for gpu in context.facts.gpus:
        needed = recipes.SAGE_MIN_NVCC.get(gpu.compute_capability or "")
        if needed and nvcc < release(needed) and not context.request.force:
            raise Refusal(f"SageAttention 2.2.0 for {_gpu_label(gpu)} needs nvcc >= {needed}, this is {nvcc}")
    archs = sorted({g.compute_capability for g in context.facts.gpus if g.compute_capability in recipes.SAGE_MIN_NVCC})
    if archs:
        env["TORCH_CUDA_ARCH_LIST"] = ";".join(archs)  # else setup.py builds for every GPU it sees
    extensions, per_extension = recipes.sage_parallelism(int(env["MAX_JOBS"]), set(archs))
    env.update(EXT_PARALLEL=str(extensions), MAX_JOBS=str(per_extension))
    notes += [
        "SageAttention 2 has no backward pass at all (custom ops without autograd; thu-ml #90): "
        "inference and frozen-attention use only; full fine-tuning was seen to drive the loss to 0 (thu-ml #198)",
        f"PyPI has only SageAttention 1.x: 2.2.0 is built from commit {recipes.SAGE_TREE.commit[:7]}, not its "
        "v2.2.0 tag, whose sageattn() on Hopper returns uninitialised memory without running the kernel "
        "(https://github.com/thu-ml/SageAttention/issues/288, fixed by PR #307)",
        f"{extensions} extensions built at once, {per_extension} jobs each "
        f"(about {recipes.SAGE_BUILD_MINUTES_SM90} min on a 16-core H100)",
    ]
    steps += _tree_steps(context, recipes.SAGE_TREE)
    steps.append(_build_tree(context, recipes.SAGE_TREE, "compile SageAttention 2.2.0", env))
    return steps, notes, "sageattention", "2.2.0"


def _build_setup(context: _Context, min_nvcc: str) -> tuple[list[Step], list[str], dict[str, str]]:
    """What every CUDA compile needs: a matching nvcc, ninja and the build requirements first,
    MAX_JOBS from cores and memory. Returns the steps so far, notes and the build's environment."""
    tools, torch = context.facts.toolchain, context.torch
    problems = []
    if tools.nvcc is None:
        problems.append("no nvcc (install the CUDA toolkit matching torch's CUDA, or set CUDA_HOME)")
    elif release(tools.nvcc) < release(min_nvcc):
        problems.append(f"nvcc {tools.nvcc} is older than {min_nvcc}")
    elif release(tools.nvcc)[:1] != release(torch.cuda)[:1]:
        problems.append(f"nvcc {tools.nvcc} and torch's CUDA {torch.cuda} differ in major version")
    if tools.cxx is None:
        problems.append("no C++ compiler (g++)")
    if problems and not context.request.force:
        raise Refusal("cannot compile here: " + "; ".join(problems))
    archs = len({g.compute_capability or g.gfx_target for g in context.facts.gpus}) or 4  # builds are narrowed to them
    jobs = recipes.build_jobs(tools.cpus, tools.ram_gib, archs)
    env = {"MAX_JOBS": str(jobs), "NVCC_THREADS": str(recipes.NVCC_THREADS)}
    if tools.cuda_home:
        env["CUDA_HOME"] = tools.cuda_home
    peak = recipes.build_peak_gib(jobs, archs)
    notes = [
        f"MAX_JOBS={jobs}: {tools.cpus} cores, {tools.ram_gib:.0f} GiB RAM, {recipes.nvcc_threads(archs)} nvcc "
        f"thread(s) a job at ~{recipes.GIB_PER_NVCC_THREAD:.0f} GiB each: expect a peak near {peak:.0f} GiB "
        "(upstream's own default still runs machines out of memory)"
    ]
    steps: list[Step] = [
        _pip_step(context, "build requirements first: without ninja the build is serial", *recipes.BUILD_REQUIREMENTS)
    ]
    return steps, notes, env


def _source_folder(context: _Context, tree: recipes.SourceTree) -> str:
    name = tree.url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    return str(Path(context.facts.python.prefix) / ".attn-doctor" / "src" / f"{name}-{tree.commit[:12]}")


def _clone(context: _Context, tree: recipes.SourceTree) -> list[Step]:
    if context.request.offline:
        raise Refusal(f"--offline: this backend is built from {tree.url} at {tree.tag}, which needs the network")
    git = context.facts.toolchain.git
    if git is None:
        raise Refusal(f"git is not installed: it is needed to fetch {tree.url} at {tree.tag}")
    folder = _source_folder(context, tree)
    steps: list[Step] = []
    if os.path.lexists(folder):
        steps.append(MoveAside(folder, "an earlier checkout, kept with this install's backups"))
    steps.append(
        Command(
            (git, "clone", "--filter=blob:none", "--no-checkout", tree.url, folder),
            (folder,),
            f"fetch {tree.url.removesuffix('.git').rsplit('/', 2)[-2]}'s repository",
        )
    )
    steps.append(
        Command(
            (git, "-C", folder, "checkout", "--detach", tree.commit),
            (folder,),
            f"the pinned commit {tree.commit[:12]} ({tree.tag}), never a branch",
        )
    )
    return steps


def _tree_steps(context: _Context, tree: recipes.SourceTree) -> list[Step]:
    """The tree at its pinned commit in the build folder: cloned, or from the --source given."""
    return _from_sources(context, tree) if context.request.sources else _clone(context, tree)


def _read(path: str) -> Source:
    try:
        return read_source(path)
    except SourceError as error:
        raise Refusal(str(error)) from error


def _from_sources(context: _Context, tree: recipes.SourceTree) -> list[Step]:
    """Each --source identified by the commit it records (the tree's, or one of its submodules'
    recorded at the tree's commit), its version checked; refused when any is not what the
    recipe pins. Then copied or unpacked into the build folder, only the parts the build reads."""
    name = tree.url.removesuffix(".git").rsplit("/", 2)
    label = f"{name[-2]}/{name[-1]}"
    submodules = {s.commit: s for s in tree.submodules}
    main: Source | None = None
    given: dict[str, Source] = {}
    for path in context.request.sources:
        source = _read(path)
        if source.commit is None:
            raise Refusal(
                f"--source {path} records no commit (not a git checkout, not a `git archive`): {label} is pinned "
                f"to {tree.commit[:12]} ({tree.tag}); pass a checkout of it or `git archive {tree.commit[:12]}`"
            )
        if source.commit == tree.commit:
            main = source
        elif source.commit in submodules:
            given[submodules[source.commit].path] = source
        else:
            wanted = ", ".join(
                [f"{label} {tree.commit[:12]} ({tree.tag})"] + [f"{s.path} {s.commit[:12]}" for s in tree.submodules]
            )
            raise Refusal(f"--source {path} is commit {source.commit[:12]}, not a pinned one: {wanted}")
    if main is None:
        raise Refusal(f"no --source is {label} at the pinned {tree.commit[:12]} ({tree.tag})")
    rooted = main.rooted(tree.version_file)
    version = declared_version(rooted, tree.version_file) if rooted else None
    if rooted is None or version != tree.version:
        raise Refusal(f"--source {main.path} declares version {version} in {tree.version_file}, not {tree.version}")
    folder = _source_folder(context, tree)
    paths = list(tree.paths)
    extra: list[Step] = []
    for sub in tree.submodules:
        inside = f"{sub.path}/{sub.needs}"
        if sub.path in given:
            placed = given[sub.path].rooted(sub.needs)
            if placed is None:
                raise Refusal(f"--source {given[sub.path].path} has no {sub.needs}: not {sub.url} at {sub.commit[:12]}")
            extra.append(
                Command(
                    unpack_argv(placed, str(Path(folder, sub.path)), sub.paths),
                    (folder,),
                    f"{sub.path} from {placed.kind} {Path(placed.path).name} (commit {sub.commit[:12]})",
                )
            )
        elif rooted.kind == "checkout" and rooted.has(inside):
            commit = git_head(Path(rooted.path, sub.path))
            if commit != sub.commit:
                raise Refusal(
                    f"{sub.path} in {rooted.path} is at {commit[:12] if commit else 'no known commit'}, not "
                    f"{sub.commit[:12]} (recorded at {tree.commit[:12]}): git submodule update --init {sub.path}"
                )
            paths += [f"{sub.path}/{p}" for p in sub.paths] if tree.paths else []
        else:
            raise Refusal(
                f"{label} needs {sub.path} ({sub.url.removesuffix('.git')} at {sub.commit[:12]}), which "
                f"{rooted.path} lacks (`git archive` leaves submodules out): pass it as another --source, a checkout "
                f"or `git archive {sub.commit[:12]} {' '.join(sub.paths)}` of it"
            )
    steps: list[Step] = []
    if os.path.lexists(folder):
        steps.append(MoveAside(folder, "an earlier source tree, kept with this install's backups"))
    what = ", ".join(paths) if paths else "all of it"
    steps.append(
        Command(
            unpack_argv(rooted, folder, tuple(paths)),
            (folder,),
            f"{label} from {rooted.kind} {Path(rooted.path).name}: commit {tree.commit[:12]} ({tree.tag}) and "
            f"version {version} checked; {what}",
        )
    )
    return steps + extra


def _fa2_source(context: _Context) -> tuple[list[Step], str, str]:
    """FA2 from one --source: the PyPI sdist, or an unpacked sdist or checkout of it, checked by
    the version it declares (PyPI's release is what the recipe pins). Returns the steps that put
    it in place, what pip builds, and a note."""
    if len(context.request.sources) != 1:
        raise Refusal("FA2 builds from one --source: its sdist (flash_attn-2.8.3.post2.tar.gz) or a folder of it")
    path = context.request.sources[0]
    source = _read(path)
    rooted = source.rooted(recipes.FA2_VERSION_FILE) or source.rooted("PKG-INFO")
    version = declared_version(rooted, recipes.FA2_VERSION_FILE) if rooted else None
    if rooted is None or version != recipes.FA2_VERSION:
        raise Refusal(f"--source {path} is flash-attn {version}, not {recipes.FA2_VERSION}")
    note = f"FA2 from {source.path}: version {version} checked"
    if source.archive:
        return [], source.path, note  # pip builds an sdist file as it is
    folder = str(Path(context.facts.python.prefix) / ".attn-doctor" / "src" / f"flash-attn-{version}")
    steps: list[Step] = []
    if os.path.lexists(folder):
        steps.append(MoveAside(folder, "an earlier source tree, kept with this install's backups"))
    steps.append(Command(unpack_argv(rooted, folder, ()), (folder,), f"flash-attn {version} from {source.path}"))
    return steps, folder, note


def _build_tree(context: _Context, tree: recipes.SourceTree, why: str, env: dict[str, str]) -> Command:
    path = str(Path(_source_folder(context, tree), tree.subdirectory))  # "" adds nothing
    return _pip_step(context, why, path, flags=("--no-build-isolation", "--no-cache-dir"), **env)


_RECIPES = {"fa2": _fa2, "fa3": _fa3, "fa4": _fa4, "sage": _sage, "xformers": _xformers}
