"""Prebuilt wheels fetched from the sources that publish them, proven before they are chosen: a
PEP 503 index laid out as PyTorch's (`<root>/cu130/flash-attn-3/`) served on 127.0.0.1 as a
cluster's mirror of it, holding FA3 wheels built here with NVIDIA's nvcc against the machine's
torch: one carrying sm_90a code, one for Ampere only, one whose page gives another sha256. The
download is the doctor's own, over real HTTP; nothing of it is replaced."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from attn_doctor.actions.install import plan_install
from attn_doctor.actions.plan import Command, Refusal
from attn_doctor.actions.recipes.context import InstallRequest
from attn_doctor.facts.collect import collect
from attn_doctor.facts.repairs import repairs_root
from attn_doctor.registry.recipes import FA2_WHEEL_VERSION, FA3_VERSION
from attn_doctor.registry.wheels import fa2_wheel_for
from tests.conftest import REPO, RecordedNvml, cuda_toolkit, pypi_wheel, run, snapshot
from tests.test_binaries import EXTENSION, Machine, machine  # noqa: F401 (machine: FA2 next to a built torch)
from tests.test_gpu_code import KERNEL, build, build_extension, gencode, make_wheel

TAG = "cp39-abi3-manylinux_2_28_x86_64"  # as PyTorch's index names its FA3 wheels


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Path]:
    """A folder served over HTTP on 127.0.0.1; the fixture's value is the folder, its URL in `.url`."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (folder / "url").write_text(f"http://127.0.0.1:{server.server_address[1]}")
    yield folder
    server.shutdown()


def publish(mirror: Path, wheels: list[tuple[Path, str | None]]) -> None:
    """The project page of PyTorch's cu130 index, listing these wheels (each with the sha256 its
    link gives: the file's own, or another)."""
    page = mirror / "whl" / "cu130" / "flash-attn-3"
    shutil.rmtree(page, ignore_errors=True)
    page.mkdir(parents=True)
    links = []
    for wheel, digest in wheels:
        shutil.copy(wheel, page / wheel.name)
        given = digest or hashlib.sha256(wheel.read_bytes()).hexdigest()
        links.append(f'<a href="{wheel.name}#sha256={given}">{wheel.name}</a>')
    (page / "index.html").write_text("<html><body>\n" + "\n".join(links) + "\n</body></html>\n")


def torch_installed(made: Machine) -> None:
    """The machine's torch (built here) given the dist-info pip and the requirement checks read: pip
    then holds it where it is, and a wheel's Requires-Dist on torch is judged against it."""
    info = made.venv.site / "torch-2.99.0+cu130.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.99.0+cu130\n")
    (info / "RECORD").write_text("")


def fa3_wheel(made: Machine, folder: Path, platform: str, *targets: str, version: str = FA3_VERSION) -> Path:
    build_extension(made, *targets)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"flash_attn_3/_C.abi3.so": made.extension.read_bytes(), "flash_attn_3/__init__.py": b""}
    return make_wheel(folder, "flash_attn_3", version, files, f"cp39-abi3-{platform}")


def planned(made: Machine, h100: RecordedNvml, root: str) -> tuple[list[Command], list[str]]:
    facts = collect(str(made.venv.python), nvml=h100)
    job = plan_install(facts, InstallRequest("fa3", mirrors=(("pytorch", root),)), here=True)
    return [s for s in job.plan.steps if isinstance(s, Command)], list(job.plan.notes)


def test_fa3_from_pytorchs_index_is_fetched_and_proven_before_it_is_chosen(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
    mirror: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_HOME", str(cuda_toolkit()))
    root = (mirror / "url").read_text() + "/whl"
    built = tmp_path / "built"
    ampere = fa3_wheel(machine, built / "ampere", "manylinux_2_17_x86_64", "sm_80")
    tampered = fa3_wheel(machine, built / "tampered", "manylinux_2_24_x86_64", "sm_90a")
    good = fa3_wheel(machine, built / "good", "manylinux_2_28_x86_64", "sm_90a")
    publish(mirror, [(ampere, None), (tampered, "0" * 64), (good, None)])

    (step,), notes = planned(machine, h100, root)
    assert "compile FA3" not in step.describe()
    [wheel] = [Path(a) for a in step.argv if a.endswith(".whl")]  # installed by its path, as fetched
    assert wheel.name == good.name and wheel.read_bytes() == good.read_bytes()
    assert f"{root}/cu130/flash-attn-3/{good.name}" in step.why  # its origin, journaled with the step
    assert any(ampere.name in n and "passed over" in n and "carries no code for sm_90" in n for n in notes), notes
    assert any(tampered.name in n and "sha256 is not the one its page gives" in n for n in notes), notes
    assert any(good.name in n and "proven before installing" in n for n in notes), notes

    publish(mirror, [(ampere, None)])  # nothing that fits: the plan compiles, and says why
    steps, notes = planned(machine, h100, root)
    assert any("compile FA3" in s.describe() for s in steps)
    assert any(ampere.name in n and "carries no code for sm_90" in n for n in notes), notes


def test_a_source_that_cannot_be_reached_is_said_and_the_plan_compiles(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
    mirror: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_HOME", str(cuda_toolkit()))
    root = (mirror / "url").read_text() + "/whl"  # serves no cu130 folder: HTTP 404
    steps, notes = planned(machine, h100, root)
    assert any("compile FA3" in s.describe() for s in steps)
    assert any("PyTorch's own index (pytorch) not reached" in n and "HTTP 404" in n for n in notes), notes


def test_the_fetched_wheel_is_what_is_installed_and_undo_takes_it_back(
    machine: Machine,  # noqa: F811
    mirror: Path,
    tmp_path: Path,
) -> None:
    """The whole command, as a user runs it: the wheel is fetched into a temporary folder, proven,
    installed by its path (its origin in the journal; it imports next to the machine's torch), and
    `undo` takes it back byte for byte; the temporary folder is gone when the doctor exits."""
    good = fa3_wheel(machine, tmp_path / "built", "manylinux_2_28_x86_64", "sm_90a")
    publish(mirror, [(good, None)])
    root = (mirror / "url").read_text() + "/whl"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    # the machine's torch is built here: pip is told it is installed, so that the plan's torch pin
    # holds it; the wheel's own requirements and this machine's pip configuration are left out
    torch_installed(machine)
    env = {**os.environ, "PIP_NO_DEPS": "1", "PIP_CONFIG_FILE": os.devnull, "TMPDIR": str(temporary)}
    before = snapshot(machine.venv)
    argv: list[str | Path] = [
        "install",
        "fa3",
        "--python",
        machine.venv.python,
        "--mirror",
        f"pytorch={root}",
        "--force",
        "--yes",
    ]
    done = run(sys.executable, "-m", "attn_doctor", *argv, env=env, check=False, cwd=REPO)
    assert done.returncode == 0 and "Successfully installed flash-attn-3-3.0.0" in done.stdout, (
        done.stdout + done.stderr
    )
    assert f"fetching {root}/cu130/flash-attn-3/{good.name} to prove it fits here" in done.stderr  # said as it goes
    (journal,) = repairs_root(str(machine.venv.root)).glob("*/journal.json")
    [command] = [s for s in json.loads(journal.read_text())["steps"] if s["kind"] == "command"]
    assert any(a.endswith(good.name) for a in command["argv"]), command
    assert f"{root}/cu130/flash-attn-3/{good.name}" in command["why"]
    assert list(temporary.iterdir()) == []
    run(sys.executable, "-m", "attn_doctor", "undo", "--python", machine.venv.python, env=env, cwd=REPO)
    assert snapshot(machine.venv) == before


@pytest.mark.parametrize(
    ("mirror", "said"),
    [
        ("bogus=http://x", "NAME is one of dao-ailab, pytorch, pypi, windreamer"),
        ("pytorch=/srv/wheels", "URL must be http(s)://"),
        ("pytorch", "give NAME=URL"),
    ],
)
def test_a_bad_mirror_is_one_line_and_exit_2(mirror: str, said: str) -> None:
    done = run(
        sys.executable, "-m", "attn_doctor", "install", "fa3", "--mirror", mirror, "--dry-run", check=False, cwd=REPO
    )
    assert done.returncode == 2 and said in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_fa2s_release_wheel_is_fetched_by_its_url_and_proven(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
    mirror: Path,
    tmp_path: Path,
) -> None:
    """FA2's own release keeps one wheel per torch/CUDA/Python/ABI at a URL its name gives (a `+` in
    it, written %2B): fetched from a mirror of the release, proven, installed by its path; one
    built for Ampere only is passed over, said why, and the plan compiles."""
    facts = collect(str(machine.venv.python), nvml=h100)
    assert facts.torch is not None
    # the machine's torch, read as a 2.8 CUDA 12.8 build: FA2 2.8.3.post1 published a wheel for that
    torch = dataclasses.replace(facts.torch, version="2.8.0", cuda="12.8", cxx11_abi=True)
    facts = dataclasses.replace(facts, torch=torch)
    name = fa2_wheel_for(FA2_WHEEL_VERSION, torch, facts.python)
    assert name is not None and "+" in name
    release = mirror / f"v{FA2_WHEEL_VERSION}"
    release.mkdir()
    root = (mirror / "url").read_text()

    def published(*targets: str) -> list[str]:
        build_extension(machine, *targets)
        version, tag = name.removeprefix("flash_attn-").removesuffix(".whl").split("-", 1)
        files = {machine.extension.name: machine.extension.read_bytes(), "flash_attn/__init__.py": b""}
        wheel = make_wheel(tmp_path, "flash_attn", version, files, tag)
        shutil.copy(wheel, release / name)
        job = plan_install(facts, InstallRequest("fa2", force=True, mirrors=(("dao-ailab", root),)), here=True)
        return [s.describe() for s in job.plan.steps] + list(job.plan.notes)

    said = published("sm_90")
    assert any(
        s.startswith("run") and name in s and "fetched from FlashAttention's own GitHub release" in s for s in said
    )
    assert any("proven before installing" in s for s in said), said
    said = published("sm_80")
    assert any("FLASH_ATTENTION_FORCE_BUILD" in s for s in said), said
    assert any(f"{name} from FlashAttention's own GitHub release" in s and "no code for sm_90" in s for s in said)


def test_a_wheel_built_against_another_cuda_runtime_is_passed_over(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
    mirror: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PyTorch's index has served the CUDA 12.6 build of FA3 from its cu128 and cu129 folders: on a
    machine with only CUDA 13 its extension cannot load (`libcudart.so.12: cannot open shared object
    file`). Its DT_NEEDED says so before anything is installed; the next candidate is taken."""
    monkeypatch.setenv("CUDA_HOME", str(cuda_toolkit()))
    known = run("ldconfig", "-p").stdout
    runtime = next(n for n in ("libcudart.so.12", "libcudart.so.11.0") if n not in known)
    stub = tmp_path / runtime
    run("cc", "-shared", "-fPIC", "-o", stub, f"-Wl,-soname,{runtime}", "-x", "c", "/dev/null")
    build(
        machine.extension,
        EXTENSION + KERNEL,
        f"-L{machine.torch_lib}",
        "-lc10",
        "-ltorch",
        *gencode("sm_90a"),
        f"-L{tmp_path}",
        "-Xlinker",
        "--no-as-needed",
        f"-l:{runtime}",
    )
    stub.unlink()  # built against a CUDA runtime this machine does not have
    files = {"flash_attn_3/_C.abi3.so": machine.extension.read_bytes(), "flash_attn_3/__init__.py": b""}
    (tmp_path / "cu12").mkdir()
    other_cuda = make_wheel(tmp_path / "cu12", "flash_attn_3", FA3_VERSION, files, "cp39-abi3-manylinux_2_17_x86_64")
    good = fa3_wheel(machine, tmp_path / "good", "manylinux_2_28_x86_64", "sm_90a")
    publish(mirror, [(other_cuda, None), (good, None)])
    (step,), notes = planned(machine, h100, (mirror / "url").read_text() + "/whl")
    assert any(a.endswith(good.name) for a in step.argv), step.argv
    assert any(other_cuda.name in n and f"needs {runtime}, which this machine does not have" in n for n in notes), notes


def test_the_proven_file_of_a_wheelhouse_is_the_one_installed(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two builds of FA3 3.0.0 kept side by side: pip, asked for flash-attn-3==3.0.0, takes the one
    whose platform tag ranks first (manylinux_2_28 before plain linux), here the Ampere-only one. The
    plan installs the file it proved, by its path, and says why the other was passed over."""
    monkeypatch.setenv("CUDA_HOME", str(cuda_toolkit()))
    wheelhouse = tmp_path / "wheelhouse"
    ampere = fa3_wheel(machine, wheelhouse, "manylinux_2_28_x86_64", "sm_80")
    good = fa3_wheel(machine, wheelhouse, "linux_x86_64", "sm_90a")
    facts = collect(str(machine.venv.python), nvml=h100)
    nowhere = (("pytorch", "http://127.0.0.1:9/whl"),)
    job = plan_install(facts, InstallRequest("fa3", find_links=str(wheelhouse), mirrors=nowhere), here=True)
    (step,) = [s for s in job.plan.steps if isinstance(s, Command)]
    assert str(good) in step.argv and not any("flash-attn-3==" in a for a in step.argv), step.argv
    assert any(ampere.name in n and "carries no code for sm_90" in n for n in job.plan.notes), "\n".join(job.plan.notes)


def test_what_cannot_be_fetched_or_kept_is_one_line(mirror: Path, tmp_path: Path) -> None:
    from attn_doctor.facts.published import Listed, NotFetched, fetch, listed

    url = (mirror / "url").read_text()
    (mirror / "a.whl").write_bytes(b"wheel")
    with pytest.raises(NotFetched, match=r"/missing/: HTTP 404"):
        listed(f"{url}/missing/")
    with pytest.raises(NotFetched, match=r"not an http\(s\) URL"):
        listed("ftp://example.org/simple/")
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # not a folder: nothing can be kept in it
    with pytest.raises(NotFetched, match=r"cannot keep a\.whl in"):
        fetch(Listed("a.whl", f"{url}/a.whl", None), blocked)
    assert fetch(Listed("a.whl", f"{url}/a.whl", None), tmp_path).read_bytes() == b"wheel"


def test_the_newest_release_a_source_publishes_is_taken_not_only_the_one_these_rules_know(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
    mirror: Path,
    tmp_path: Path,
) -> None:
    """No pin goes stale here either: the index's newest final release that fits is planned (a
    pre-release only where there is nothing else), and the plan verifies that release."""
    built = tmp_path / "built"
    wheels = [
        fa3_wheel(machine, built / v, "manylinux_2_28_x86_64", "sm_90a", version=v)
        for v in ("3.0.0", "3.1.0", "3.2.0rc1")
    ]
    publish(mirror, [(w, None) for w in wheels])
    facts = collect(str(machine.venv.python), nvml=h100)
    root = (mirror / "url").read_text() + "/whl"
    job = plan_install(facts, InstallRequest("fa3", mirrors=(("pytorch", root),)), here=True)
    (step,) = [s for s in job.plan.steps if isinstance(s, Command)]
    assert str(step.argv).count("flash_attn_3-3.1.0-") == 1 and job.version == "3.1.0", step.argv


def serve_index(mirror: Path, folder: str, wheels: list[Path], metadata_only: tuple[Path, ...] = ()) -> str:
    """A PEP 503 project page at <mirror>/<folder>/ listing these wheels; each of `metadata_only` is
    listed with its METADATA served beside it (PEP 658) and its own file absent. Its root URL."""
    page = mirror / folder
    shutil.rmtree(page, ignore_errors=True)
    page.mkdir(parents=True)
    links = []
    for wheel in wheels:
        shutil.copy(wheel, page / wheel.name)
        links.append(f'<a href="{wheel.name}#sha256={hashlib.sha256(wheel.read_bytes()).hexdigest()}">{wheel.name}</a>')
    for wheel in metadata_only:
        with zipfile.ZipFile(wheel) as archive:
            [info] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            (page / f"{wheel.name}.metadata").write_bytes(archive.read(info))
        links.append(f'<a href="{wheel.name}" data-dist-info-metadata="true">{wheel.name}</a>')
    (page / "index.html").write_text("<html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    return (mirror / "url").read_text() + "/" + folder.rsplit("/", 2)[0]


def xformers_wheel(made: Machine, folder: Path, version: str, *targets: str, torch: str = "torch>=2.10") -> Path:
    """An xFormers wheel as its releases are laid out (`xformers/_C.so`, py39-none), its extension
    built here against the machine's torch."""
    build_extension(made, *targets)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "xformers/_C.so": made.extension.read_bytes(),
        "xformers/__init__.py": b"",
        "xformers/ops/__init__.py": b"",
    }
    return make_wheel(folder, "xformers", version, files, "py39-none-manylinux_2_28_x86_64", (torch,))


def test_xformers_wheels_are_proven_and_pypis_cuda_12_build_is_passed_over(
    machine: Machine,  # noqa: F811
    h100: RecordedNvml,
    mirror: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real xFormers 0.0.35 wheel from PyPI (a CUDA 12.8 build: DT_NEEDED libcudart.so.12) on a
    CUDA 13 torch: pip would install it and its import would fail. It is read and passed over; with
    nothing else, the install is refused naming why; PyTorch's cu130 folder's build is proven and
    installed by its path. A release requiring another torch is passed over by the metadata the index
    serves beside it, without fetching the wheel."""
    torch_installed(machine)
    facts = collect(str(machine.venv.python), nvml=h100)
    real = pypi_wheel("xformers==0.0.35")
    pypi = serve_index(mirror, "simple/xformers", [real])
    pytorch = serve_index(mirror, "whl/cu130/xformers", [])  # lists nothing yet

    def planned() -> tuple[list[str], str]:
        request = InstallRequest("xformers", mirrors=(("pytorch", pytorch), ("pypi", pypi)))
        job = plan_install(facts, request, here=True)
        return [" ".join(map(str, s.argv)) for s in job.plan.steps if isinstance(s, Command)], "\n".join(job.plan.notes)

    with pytest.raises(Refusal) as refused:
        planned()
    said = str(refused.value)
    # --force: what the installer's index resolves all the same (here no index answers: the rules' release)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    request = InstallRequest("xformers", force=True, mirrors=(("pytorch", pytorch), ("pypi", pypi)))
    forced = plan_install(facts, request, here=True)
    [step] = [" ".join(map(str, s.argv)) for s in forced.plan.steps if isinstance(s, Command)]
    assert "xformers==0.0.35" in step and any(real.name in n and "passed over" in n for n in forced.plan.notes)
    assert said.startswith("no xFormers wheel fits here") and f"{real.name} from PyPI (pypi) passed over" in said
    assert "_C.so needs " in said, said
    if "libcudart.so.12" not in run("ldconfig", "-p").stdout:
        assert "libcudart.so.12" in said, said

    good = xformers_wheel(machine, tmp_path / "good", "0.0.35", "sm_90a")
    pinned = xformers_wheel(machine, tmp_path / "pinned", "0.0.36", "sm_90a", torch="torch==2.10.0")
    serve_index(mirror, "whl/cu130/xformers", [good], metadata_only=(pinned,))
    (step,), notes = planned()
    assert f"/{good.name} " in step and "xformers==" not in step, step  # installed by its path
    assert (
        f"{pinned.name} from PyTorch's own index (pytorch) passed over: it requires "
        "torch==2.10.0, and torch 2.99.0+cu130 is installed" in notes
    ), notes
    assert "PyPI (pypi)" not in notes  # the index made for this torch's CUDA build is asked first

    # without the index's metadata, the fetched wheel's own METADATA says the same
    serve_index(mirror, "whl/cu130/xformers", [pinned])
    with pytest.raises(
        Refusal, match=r"xformers-0\.0\.36-py39-none-manylinux_2_28_x86_64\.whl from PyTorch.*requires torch==2\.10\.0"
    ):
        planned()


@pytest.mark.parametrize("broken_build_installed", [False, True])
def test_the_proven_xformers_wheel_is_installed_by_its_path_and_undone(
    machine: Machine,  # noqa: F811
    mirror: Path,
    tmp_path: Path,
    broken_build_installed: bool,
) -> None:
    """`install xformers` as a user runs it, against a mirror of PyTorch's index: the wheel fetched,
    proven, installed by its path (its origin journaled), imported next to the machine's torch, and
    `undo` takes it back byte for byte.

    Over PyPI's xFormers 0.0.35 (a CUDA 12.8 build that cannot load on CUDA 13: libcudart.so.12)
    the fix is the same release built for CUDA 13, which pip, given its wheel, takes as installed
    already ("already installed with the same version as the provided wheel") and changes nothing:
    the plan puts the proven wheel's files in over it, and undo puts the broken build back."""
    if broken_build_installed:
        machine.venv.install(pypi_wheel("xformers==0.0.35"))
    torch_installed(machine)
    good = xformers_wheel(machine, tmp_path / "good", "0.0.35", "sm_90a")
    root = serve_index(mirror, "whl/cu130/xformers", [good])
    env = {**os.environ, "PIP_NO_DEPS": "1", "PIP_CONFIG_FILE": os.devnull}
    before = snapshot(machine.venv)
    argv: list[str | Path] = [
        "install",
        "xformers",
        "--python",
        machine.venv.python,
        "--mirror",
        f"pytorch={root}",
        "--force",
        "--yes",
    ]
    done = run(sys.executable, "-m", "attn_doctor", *argv, env=env, check=False, cwd=REPO)
    assert done.returncode == 0 and "Successfully installed xformers-0.0.35" in done.stdout, done.stdout + done.stderr
    if broken_build_installed:
        assert "--force-reinstall" in done.stdout and "over the installed xformers 0.0.35" in done.stdout
    with zipfile.ZipFile(good) as wheel:  # the proven build, not PyPI's
        assert (machine.venv.site / "xformers" / "_C.so").read_bytes() == wheel.read("xformers/_C.so")
    (journal,) = repairs_root(str(machine.venv.root)).glob("*/journal.json")
    [command] = [s for s in json.loads(journal.read_text())["steps"] if s["kind"] == "command"]
    assert any(a.endswith(good.name) for a in command["argv"]), command
    assert f"{root}/cu130/xformers/{good.name}" in command["why"]
    run(sys.executable, "-m", "attn_doctor", "undo", "--python", machine.venv.python, env=env, cwd=REPO)
    assert snapshot(machine.venv) == before
