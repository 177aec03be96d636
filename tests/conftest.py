"""Test set-up: the real FA2 and FA4 files, real temporary venvs, and NVML recorded on an H100.

The real packages are fetched or built once and cached under `.cache/` (git ignores it):
- FA4: the `flash-attn-4` wheel and sdist from PyPI (pure Python).
- FA2: the `flash-attn` sdist built into a wheel with FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE, which
  needs torch in the build environment (its setup.py imports torch): the real file layout (dist-info,
  RECORD, the stale `flash_attn/cute/`) without the CUDA extension, in about a minute on 2 cores.
  The torch for that build is ATTN_DOCTOR_TEST_TORCH (default torch==2.13.0, the CPU build this
  machine image carries on disk).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache"
FIXTURES = Path(__file__).parent / "fixtures"
FA2_VERSION = "2.8.3.post2"
FA4_VERSION = "4.0.0b36"


def run(
    *argv: str | Path, env: dict[str, str] | None = None, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, cwd=cwd
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def cuda_toolkit() -> Path:
    """This machine image's CUDA toolkit (made from NVIDIA's pip wheels: its dist-info, no version.json),
    whose nvcc and ptxas are programs, not the wrapper scripts on PATH."""
    found = (
        next(
            (
                p
                for p in sorted(Path("/usr/local").glob("cuda*"))
                if (p / "bin" / "nvcc").read_bytes()[:4] == b"\x7fELF"
            ),
            None,
        )
        if Path("/usr/local").is_dir()
        else None
    )
    assert found is not None, "this machine image carries a CUDA toolkit in /usr/local"
    return found


@contextlib.contextmanager
def one_at_a_time() -> Iterator[None]:
    """Held while .cache/ is filled: test processes running side by side (pytest-xdist) would each
    find what another is still writing. One lock for every cache entry; none of them nests."""
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def pip(*args: str | Path, env: dict[str, str] | None = None) -> None:
    run(sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args, env=env)


def pypi_wheel(requirement: str) -> Path:
    """A pure-Python wheel from PyPI, downloaded once into .cache/wheels (yanked ones too: an
    exact pin reaches them, as it would for a user)."""
    with one_at_a_time():
        wheels = CACHE / "wheels"
        name, _, version = requirement.partition("==")
        pattern = f"{name.replace('-', '_')}-{version}-*.whl"
        if not list(wheels.glob(pattern)):
            pip("download", "--no-deps", "--only-binary=:all:", requirement, "-d", wheels)
        return next(wheels.glob(pattern))


def pypi_sdist(requirement: str) -> Path:
    """A release's sdist from PyPI, downloaded once into .cache/sdist, as its simple page lists it
    (`pip download` would run its setup.py, and FA2's imports torch)."""
    with one_at_a_time():
        from attn_doctor.facts.published import fetch, listed

        sdists = CACHE / "sdist"
        name, _, version = requirement.partition("==")
        filename = f"{name.replace('-', '_')}-{version}.tar.gz"
        if not (sdists / filename).exists():
            sdists.mkdir(parents=True, exist_ok=True)
            [file] = [f for f in listed(f"https://pypi.org/simple/{name}/") if f.filename == filename]
            fetch(file, sdists)
        return sdists / filename


@dataclass(frozen=True)
class RealPackages:
    fa2_wheel: Path
    fa4_wheel: Path
    fa4_source: Path  # the unpacked sdist: what `pip install -e` of FA4 is done from
    torch_python: Path  # a venv with a real (CPU) torch: the one FA2 was built in


def _build_venv() -> Path:
    with one_at_a_time():
        venv = CACHE / "build-venv"
        python = venv / "bin" / "python"
        marker = venv / ".ready"
        if not marker.exists():
            run(sys.executable, "-m", "venv", "--clear", venv)
            torch = os.environ.get("ATTN_DOCTOR_TEST_TORCH", "torch==2.13.0")
            run(python, "-m", "pip", "install", "-q", torch, "setuptools", "wheel", "packaging", "psutil", "ninja")
            marker.write_text(torch)
        return python


def _fa2_wheel(python: Path) -> Path:
    with one_at_a_time():
        wheels = CACHE / "wheels"
        found = sorted(wheels.glob(f"flash_attn-{FA2_VERSION}-*.whl"))
        if found:
            return found[0]
        # Only the exact string TRUE switches these on (FA2 setup.py).
        env = {**os.environ, "FLASH_ATTENTION_SKIP_CUDA_BUILD": "TRUE", "FLASH_ATTENTION_FORCE_BUILD": "TRUE"}
        run(
            python,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-build-isolation",
            "--no-deps",
            f"flash-attn=={FA2_VERSION}",
            "-w",
            wheels,
            env=env,
        )
        return sorted(wheels.glob(f"flash_attn-{FA2_VERSION}-*.whl"))[0]


def _fa4() -> tuple[Path, Path]:
    with one_at_a_time():
        wheels, sdists = CACHE / "wheels", CACHE / "sdist"
        wheel = wheels / f"flash_attn_4-{FA4_VERSION}-py3-none-any.whl"
        if not wheel.exists():
            pip(
                "download",
                "--pre",
                "--no-deps",
                "--only-binary=:all:",
                f"flash-attn-4=={FA4_VERSION}",
                "-d",
                wheels,
            )
        source = CACHE / f"flash_attn_4-{FA4_VERSION}"
        if not source.exists():
            pip(
                "download",
                "--pre",
                "--no-deps",
                "--no-binary=:all:",
                f"flash-attn-4=={FA4_VERSION}",
                "-d",
                sdists,
            )
            with tarfile.open(sdists / f"flash_attn_4-{FA4_VERSION}.tar.gz") as archive:
                archive.extractall(CACHE, filter="data")
        return wheel, source


# flash-attn-4 4.0.0b36 and its whole dependency closure but torch (and triton, which only a CUDA
# torch brings), as pip resolves it on Linux x86_64: a real wheelhouse for `install --find-links`.
FA4_CLOSURE = (
    f"flash-attn-4=={FA4_VERSION}",
    "nvidia-cutlass-dsl==4.8.1",
    "nvidia-cutlass-dsl-libs-base==4.8.1",
    "nvidia-cutlass-dsl-libs-core==4.8.1",
    "nvidia-cutlass-dsl-libs-cu12==4.8.1",  # required by nvidia-cutlass-dsl whatever the extra
    "quack-kernels==0.6.5",
    "apache-tvm-ffi==0.1.15.post2",
    "torch-c-dlpack-ext==0.1.5",
    "cuda-bindings==13.5.0",
    "cuda-pathfinder==1.9.0",
    "protobuf==7.36.2",
    "einops==0.8.2",
    "typing-extensions==4.16.0",
)


@pytest.fixture(scope="session")
def fa4_wheelhouse() -> Path:
    """The real wheels, downloaded once (about 110 MB, most of it the CuTe DSL's libraries)."""
    with one_at_a_time():
        folder = CACHE / "fa4-wheelhouse"
        marker = folder / ".ready"
        if not marker.exists():
            pip("download", "--no-deps", "--only-binary=:all:", "-d", folder, *FA4_CLOSURE)
            marker.write_text("\n".join(FA4_CLOSURE))
        return folder


@pytest.fixture(scope="session")
def real() -> RealPackages:
    CACHE.mkdir(exist_ok=True)
    python = _build_venv()
    fa4_wheel, fa4_source = _fa4()
    return RealPackages(_fa2_wheel(python), fa4_wheel, fa4_source, python)


class Venv:
    """A real virtual environment; packages go in and out with the real pip."""

    def __init__(self, root: Path) -> None:
        run(sys.executable, "-m", "venv", "--without-pip", root)
        self.root = root
        self.python = root / "bin" / "python"
        purelib = run(self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        self.site = Path(purelib.stdout.strip())

    def pip(self, *args: str | Path) -> None:
        pip("--python", self.python, *args)

    def install(self, *wheels: Path) -> None:
        self.pip("install", "--no-deps", "--no-index", *wheels)

    def install_editable(self, source: Path) -> None:
        self.pip("install", "--no-deps", "-e", source)

    def uninstall(self, name: str) -> None:
        self.pip("uninstall", "-y", name)

    def see_packages_of(self, python: Path) -> None:
        """Make another environment's packages importable here (a .pth line, as a conda or
        system site does): how a test venv gets the real CPU torch without a 200 MB install."""
        other = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
        (self.site / "other-environment.pth").write_text(other + "\n")


def interpreter(pattern: str) -> Path:
    """One of the interpreters this machine image carries (pyenv's, Debian's)."""
    found = sorted(glob.glob(pattern))
    if not found:
        pytest.skip(f"no interpreter matches {pattern} on this machine")
    return Path(found[-1])


def doctor(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """attn-doctor as a user runs it: its own process, exit code, stdout, stderr."""
    done = run(sys.executable, "-m", "attn_doctor", *args, env=env, check=False)
    return done.returncode, done.stdout, done.stderr


def snapshot(venv: Venv) -> dict[str, str]:
    """Every file and folder of the environment with its sha256: what undo must give back."""
    state = {}
    for folder, dirs, files in os.walk(venv.root):
        dirs[:] = [d for d in dirs if d != ".attn-doctor"]  # the repairs' own journal and backups
        for name in dirs:
            state[os.path.join(folder, name)] = "folder"
        for name in files:
            path = os.path.join(folder, name)
            state[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return state


@pytest.fixture
def venv(tmp_path: Path) -> Venv:
    return Venv(tmp_path / "venv")


@pytest.fixture
def torch_venv(venv: Venv, real: RealPackages) -> Venv:
    """A venv that sees the real CPU torch of the build venv."""
    venv.see_packages_of(real.torch_python)
    return venv


class RecordedNvml:
    """NVML as it answered on a real H100 (tests/fixtures/nvml-h100.json); `fail` makes one
    call raise the real pynvml.NVMLError with the given code."""

    def __init__(self, recording: dict[str, Any], fail: tuple[str, int] | None = None) -> None:
        self.recording = recording
        self.fail = fail

    def _answer(self, call: str, value: Any) -> Any:
        if self.fail and self.fail[0] == call:
            import pynvml

            raise pynvml.NVMLError(self.fail[1])
        if isinstance(value, dict) and "error" in value:
            import pynvml

            raise pynvml.NVMLError(value["error"])
        return value

    def nvmlInit(self) -> None:
        self._answer("nvmlInit", None)

    def nvmlShutdown(self) -> None:
        self._answer("nvmlShutdown", None)

    def nvmlSystemGetDriverVersion(self) -> str:
        return str(self._answer("nvmlSystemGetDriverVersion", self.recording["nvmlSystemGetDriverVersion"]))

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return int(
            self._answer("nvmlSystemGetCudaDriverVersion_v2", self.recording["nvmlSystemGetCudaDriverVersion_v2"])
        )

    def nvmlDeviceGetCount(self) -> int:
        return int(self._answer("nvmlDeviceGetCount", len(self.recording["devices"])))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict[str, Any]:
        return dict(self._answer("nvmlDeviceGetHandleByIndex", self.recording["devices"][index]))

    def _device(self, call: str, handle: dict[str, Any]) -> Any:
        return self._answer(call, handle[call])

    def nvmlDeviceGetName(self, handle: dict[str, Any]) -> str:
        return str(self._device("nvmlDeviceGetName", handle))

    def nvmlDeviceGetUUID(self, handle: dict[str, Any]) -> str:
        return str(self._device("nvmlDeviceGetUUID", handle))

    def nvmlDeviceGetCudaComputeCapability(self, handle: dict[str, Any]) -> tuple[int, int]:
        major, minor = self._device("nvmlDeviceGetCudaComputeCapability", handle)
        return int(major), int(minor)

    def nvmlDeviceGetMemoryInfo(self, handle: dict[str, Any]) -> Any:
        total = self._device("nvmlDeviceGetMemoryInfo", handle)["total"]
        return type("Memory", (), {"total": total})()

    def nvmlDeviceGetMigMode(self, handle: dict[str, Any]) -> tuple[int, int]:
        current, pending = self._device("nvmlDeviceGetMigMode", handle)
        return int(current), int(pending)


def h100_recording() -> dict[str, Any]:
    return dict(json.loads((FIXTURES / "nvml-h100.json").read_text()))


@pytest.fixture
def h100() -> RecordedNvml:
    return RecordedNvml(h100_recording())


@pytest.fixture
def no_cuda_visible(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield


SEAM = Path(__file__).parent / "seam"


@pytest.fixture(autouse=True, scope="session")
def kill_seam() -> Iterator[None]:
    """The kill seam (tests/seam/sitecustomize.py) on every child's PYTHONPATH: the shipped
    program has no kill switch of its own, so ATTN_DOCTOR_KILL_AT works only under the tests."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SEAM), before) if p)
    yield
    if before is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = before
