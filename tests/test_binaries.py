"""The `undefined symbol` prediction against what the dynamic loader really does.

Real shared libraries built with the system compiler: a "torch" (libc10.so, libtorch.so, and a
torch package whose import loads them globally, as torch's does) and an FA2 "extension" linked
against it. Then torch changes under it. For every case the prediction from the ELF files must
agree with a real load of the extension after `import torch` in the target interpreter.
"""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from attn_doctor.facts.collect import collect
from attn_doctor.facts.imports import classify
from attn_doctor.facts.model import Binary, ImportResult
from attn_doctor.report import Report, judge
from tests.conftest import RealPackages, RecordedNvml, Venv, run

C10 = """
#include <stdexcept>
#include <string>
namespace c10 {
namespace detail {
[[noreturn]] void torchCheckFail(const char*, const char*, unsigned int, const std::string& msg) {
  throw std::runtime_error(msg);
}
}  // namespace detail
namespace cuda { void SetDevice(%s) {} }
}  // namespace c10
"""
LIBTORCH = "namespace at { int version() { return 1; } }\n"
EXTENSION = """
#include <string>
namespace c10 {
namespace detail {
[[noreturn]] void torchCheckFail(const char*, const char*, unsigned int, const std::string&);
}
namespace cuda { void SetDevice(int); }
}  // namespace c10
namespace at { int version(); }
extern "C" void* PyInit_flash_attn_2_cuda() {
  c10::cuda::SetDevice(at::version());
  if (at::version() < 0) c10::detail::torchCheckFail("f", "file", 1, std::string("x"));
  return nullptr;
}
"""
TORCH_INIT = """
import ctypes, os
_lib = os.path.join(os.path.dirname(__file__), "lib")
for _name in ("libc10.so", "libtorch.so"):  # torch loads its libraries into the global scope
    ctypes.CDLL(os.path.join(_lib, _name), mode=ctypes.RTLD_GLOBAL)
"""
TORCH_VERSION = "__version__ = '2.99.0+cu130'\ncuda = '13.0'\nhip = None\n"


def cxx(source: str, output: Path, *flags: str) -> None:
    src = output.with_name(output.name + ".cpp")
    src.write_text(source)
    run("g++", "-shared", "-fPIC", "-o", output, src, *flags)
    src.unlink()


@dataclass
class Machine:
    venv: Venv
    torch_lib: Path
    extension: Path

    def build_torch(self, set_device_argument: str = "int", abi: int = 1) -> None:
        cxx(
            C10 % set_device_argument,
            self.torch_lib / "libc10.so",
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            "-Wl,-soname,libc10.so",
        )
        cxx(LIBTORCH, self.torch_lib / "libtorch.so", "-Wl,-soname,libtorch.so")

    def build_extension(self, *flags: str, abi: int = 1) -> None:
        cxx(
            EXTENSION,
            self.extension,
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            f"-L{self.torch_lib}",
            "-lc10",
            "-ltorch",
            *flags,
        )

    def real_load(self) -> str:
        """'' when the extension loads after `import torch`, else the loader's message."""
        done = subprocess.run(
            [self.venv.python, "-c", f"import torch, ctypes; ctypes.CDLL({str(self.extension)!r})"],
            capture_output=True,
            text=True,
        )
        return "" if done.returncode == 0 else done.stderr.strip().splitlines()[-1]


@pytest.fixture
def machine(venv: Venv, real: RealPackages) -> Machine:
    venv.install(real.fa2_wheel)  # the extension belongs to the real FA2's files
    torch = venv.site / "torch"
    (torch / "lib").mkdir(parents=True)
    (torch / "__init__.py").write_text(TORCH_INIT)
    (torch / "version.py").write_text(TORCH_VERSION)
    suffix = run(venv.python, "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))").stdout.strip()
    made = Machine(venv, torch / "lib", venv.site / f"flash_attn_2_cuda{suffix}")
    made.build_torch()
    return made


def predict(machine: Machine, nvml: RecordedNvml) -> tuple[Binary, Report]:
    report = judge(collect(str(machine.venv.python), nvml=nvml))
    [binary] = report.facts.binaries
    return binary, report


def codes(report: Report) -> set[str]:
    return {f.code for f in report.findings if f.code.startswith("abi-")}


def test_built_for_this_torch(machine: Machine, h100: RecordedNvml) -> None:
    machine.build_extension()
    binary, report = predict(machine, h100)
    assert binary.package == "flash-attn" and binary.torch_symbols == 3
    assert not binary.missing_symbols and not binary.missing_libraries
    assert (binary.abi, binary.torch_abi) == ("cxx11", "cxx11")
    assert codes(report) == set()
    assert machine.real_load() == ""  # and it really loads


def test_torch_changed_a_signature(machine: Machine, h100: RecordedNvml) -> None:
    machine.build_extension()
    machine.build_torch(set_device_argument="signed char")  # the "torch upgrade"
    binary, report = predict(machine, h100)
    assert binary.missing_symbols == ("_ZN3c104cuda9SetDeviceEi",)
    assert binary.readable_symbols == ("c10::cuda::SetDevice(int)",)
    assert codes(report) == {"abi-undefined-symbol"}
    [found] = [f for f in report.findings if f.code == "abi-undefined-symbol"]
    assert "that torch 2.99.0+cu130 does not export (c10::cuda::SetDevice(int))" in found.title
    # no official wheel for this torch: the fix compiles, forced past setup.py's download of the
    # release's wheel (which would put the same binary back), and says how long
    # for this machine's GPUs only (the recorded H100: sm 90), as the install plan builds
    assert found.fix[0].startswith("FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTN_CUDA_ARCHS='90' MAX_JOBS=")
    assert "--force-reinstall --no-deps --no-build-isolation --no-cache-dir flash-attn==2.8.3.post2" in found.fix[0]
    assert "no release wheel for torch 2.99.0+cu130: compiles against it for sm 90, about" in found.fix[0]
    error = machine.real_load()
    assert "undefined symbol: _ZN3c104cuda9SetDeviceEi" in error  # the loader agrees


def test_cxx11_abi_mismatch(machine: Machine, h100: RecordedNvml) -> None:
    machine.build_extension(abi=0)  # built with the pre-C++11 ABI, torch with the C++11 one
    binary, report = predict(machine, h100)
    assert (binary.abi, binary.torch_abi) == ("pre-cxx11", "cxx11")
    assert binary.missing_symbols == ("_ZN3c106detail14torchCheckFailEPKcS2_jRKSs",)
    assert codes(report) == {"abi-cxx11-mismatch"}
    assert "undefined symbol: _ZN3c106detail14torchCheckFailEPKcS2_jRKSs" in machine.real_load()


def test_missing_cuda_runtime(machine: Machine, h100: RecordedNvml, tmp_path: Path) -> None:
    known = run("ldconfig", "-p").stdout
    runtime = next(n for n in ("libcudart.so.12", "libcudart.so.11.0") if n not in known)
    stub = tmp_path / runtime
    run("cc", "-shared", "-fPIC", "-o", stub, f"-Wl,-soname,{runtime}", "-x", "c", "/dev/null")
    machine.build_extension(f"-L{tmp_path}", "-Wl,--no-as-needed", f"-l:{runtime}")
    stub.unlink()  # built against a CUDA runtime this machine does not have
    binary, report = predict(machine, h100)
    assert binary.missing_libraries == (runtime,) and not binary.missing_symbols
    [found] = [f for f in report.findings if f.code == "abi-missing-library"]
    assert f"it was built for CUDA {runtime.split('.so.')[1].split('.')[0]}; torch is a CUDA 13.0 build" in found.title
    assert f"{runtime}: cannot open shared object file" in machine.real_load()


def test_runpath_origin_is_followed(machine: Machine, h100: RecordedNvml) -> None:
    helpers = machine.venv.site / "flash_attn_libs"
    helpers.mkdir()
    library = helpers / "libfa_helper.so"
    run("cc", "-shared", "-fPIC", "-o", library, "-Wl,-soname,libfa_helper.so", "-x", "c", "/dev/null")
    runpath = ["-Wl,-rpath,$ORIGIN/flash_attn_libs", "-Wl,--enable-new-dtags"]
    machine.build_extension(f"-L{helpers}", "-Wl,--no-as-needed", "-lfa_helper", *runpath)
    binary, report = predict(machine, h100)
    assert "libfa_helper.so" in binary.needed and not binary.missing_libraries
    assert codes(report) == set() and machine.real_load() == ""
    library.unlink()  # and once it is gone, both say so
    binary, report = predict(machine, h100)
    assert binary.missing_libraries == ("libfa_helper.so",)
    assert "libfa_helper.so: cannot open shared object file" in machine.real_load()


def test_deep_import_is_shown_beside_the_prediction(machine: Machine, h100: RecordedNvml) -> None:
    machine.build_extension()
    machine.build_torch(set_device_argument="signed char")
    report = judge(collect(str(machine.venv.python), deep=True, nvml=h100))
    [found] = [f for f in report.findings if f.code == "abi-undefined-symbol"]
    assert any(e.startswith("--deep: import flash_attn -> ") for e in found.evidence)


def test_unreadable_extension(machine: Machine, h100: RecordedNvml) -> None:
    machine.extension.write_bytes(b"\x7fELF not really")
    binary, report = predict(machine, h100)
    assert binary.error and codes(report) == {"abi-unreadable"}


def test_hash_lookups_agree_with_nm_on_real_libtorch(real: RealPackages) -> None:
    """The lazily read GNU hash table answers as binutils' nm does, on torch's real libtorch_cpu."""
    from contextlib import ExitStack

    from attn_doctor.facts.binaries import _Elf

    site = run(real.torch_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    library = Path(site) / "torch" / "lib" / "libtorch_cpu.so"
    defined = run("nm", "-D", "--defined-only", library).stdout.splitlines()
    undefined = run("nm", "-D", "--undefined-only", library).stdout.splitlines()
    exported = [line.split()[-1].split("@")[0] for line in defined if " T " in line][::500]
    imported = [line.split()[-1].split("@")[0] for line in undefined][:200]
    with ExitStack() as stack:
        elf = _Elf(str(library), stack)
        assert len(exported) > 50 and all(elf.exports(name) for name in exported)
        assert not any(elf.exports(name) for name in imported)
        assert not elf.exports(exported[0] + "_not_there")
        # its imports, read from the entries before the hash table's symoffset, are nm's "U" symbols
        strong = {line.split()[-1].split("@")[0] for line in undefined if line.split()[0] == "U"}
        assert set(elf.undefined()) == strong and len(strong) > 100


STUB = 'extern "C" int attn_doctor_future_%s() { return 1; }\n'
USES = 'extern "C" int attn_doctor_future_%s();\nextern "C" int uses_the_future() { return attn_doctor_future_%s(); }\n'


@pytest.mark.parametrize(
    ("library", "version"),
    [("libstdc++.so.6", "GLIBCXX_3.4.99"), ("libc.so.6", "GLIBC_2.99")],
    ids=["libstdc++", "glibc"],
)
def test_a_libstdcxx_or_glibc_too_old(
    machine: Machine, h100: RecordedNvml, tmp_path: Path, library: str, version: str
) -> None:
    """An extension built on a newer system: linked (with the system compiler) against a library of
    the same soname that defines a newer symbol version than this machine's does. The real loader
    refuses it (`version ... not found`); the doctor says so from the ELF files, and --deep's import
    says so too; the fix builds it here."""
    stub = tmp_path / "newer"
    stub.mkdir()
    tag = version.split("_")[0].lower()
    script = stub / "versions.map"
    script.write_text(f"{version} {{ global: attn_doctor_future_{tag}; local: *; }};\n")
    cxx(STUB % tag, stub / library, f"-Wl,-soname,{library}", f"-Wl,--version-script={script}", "-nostdlib")
    machine.build_extension(f"-L{stub}", f"-l:{library}")
    (machine.extension.parent / "uses.cpp").write_text(USES % (tag, tag))
    run(
        "g++",
        "-shared",
        "-fPIC",
        "-o",
        machine.extension,
        machine.extension.parent / "uses.cpp",
        f"-L{machine.torch_lib}",
        "-lc10",
        "-ltorch",
        f"-L{stub}",
        f"-l:{library}",
    )
    refused = machine.real_load()
    assert f"version `{version}' not found" in refused  # the loader agrees
    binary, report = predict(machine, h100)
    assert [(n.library, n.version) for n in binary.missing_versions] == [(library, version)]
    [found] = [f for f in report.findings if f.code == "abi-version-missing"]
    assert f"needs {version} from {library}" in found.title and "does not define" in found.title
    assert found.fix[0].startswith("FLASH_ATTENTION_FORCE_BUILD=TRUE")  # built here, against this system
    # what --deep makes of the loader's own words: not "reinstall", the same build here
    outcome, detail = classify(refused)
    assert outcome == "missing-symbol-version"
    failed = dataclasses.replace(report.facts, imports=(ImportResult("flash_attn", outcome, 0.1, detail),))
    [imported] = [f for f in judge(failed).findings if f.code == "import-missing-symbol-version"]
    assert version in imported.title and imported.fix[0].startswith("FLASH_ATTENTION_FORCE_BUILD=TRUE")


def test_symbol_versions_read_as_pyelftools_reads_them(real: RealPackages) -> None:
    """The version chains read through the dynamic table agree with pyelftools' own section
    reader on real libraries: the system's libstdc++ and libc, and torch's libc10."""
    from contextlib import ExitStack

    from elftools.elf.elffile import ELFFile

    from attn_doctor.facts.binaries import Loader

    site = run(real.torch_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    libraries = [
        Path(site, "torch", "lib", "libc10.so"),
        *(p for p in (Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6"), Path("/lib/x86_64-linux-gnu/libc.so.6"))),
    ]
    with ExitStack() as stack:
        loader = Loader(stack, "/nowhere")
        for path in (p for p in libraries if p.exists()):
            with path.open("rb") as handle:
                elf = ELFFile(handle)
                need: Any = elf.get_section_by_name(".gnu.version_r")
                define: Any = elf.get_section_by_name(".gnu.version_d")
                needed = {v.name: [a.name for a in aux] for v, aux in need.iter_versions()} if need else {}
                defined = {next(aux).name for _, aux in define.iter_versions()} if define else set()
            assert loader.open(str(path)).needed_versions() == needed, path
            assert loader.open(str(path)).defined_versions() == defined, path
