"""Inputs that used to hang, explode or end as "internal error" (issue 17): each built for real and
answered with one line and exit 2, a finding, or the check's own exit code.

A hang must fail the test, not stall the run: every doctor here runs under a subprocess timeout
far above what the answer takes, and no test asserts a duration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from attn_doctor.facts.binaries import check_binaries
from attn_doctor.facts.toolchain import read_toolchain
from attn_doctor.inputs import MIB
from tests.conftest import FIXTURES, Venv, cuda_toolkit
from tests.test_binaries import Machine, machine  # noqa: F401 (machine: a venv with FA2 and a built torch)

HEALTHY = FIXTURES / "h100-check.json"  # exit 0
COLLIDING = FIXTURES / "h100-fa2-over-fa4.json"  # exit 1
HANG_GUARD_S = 60  # what would have been a hang fails here instead
GATE_ENV = ("ATTN_DOCTOR_FAIL_ON", "ATTN_DOCTOR_IGNORE", "ATTN_DOCTOR_REQUIRE", "ATTN_DOCTOR_NO_GPU_OK")


def doctor(*args: str | Path, cwd: Path | None = None, **env: str) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in GATE_ENV and k != "GITHUB_ACTIONS"}
    done = subprocess.run(
        [sys.executable, "-m", "attn_doctor", *map(str, args)],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD_S,
    )
    return done.returncode, done.stdout, done.stderr


def one_line(code: int, out: str, err: str, message: str) -> None:
    assert (code, out) == (2, ""), (code, out, err)
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


# --- children that keep the probe's pipes open ------------------------------------------------


def in_child(code: str) -> str:
    """Python run in a fresh interpreter (the timeouts it shortens are module constants)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_wrapper_whose_child_keeps_stdout_open_times_out(tmp_path: Path) -> None:
    """The wrapper never answers and its background job holds stdout: at the deadline the whole
    group is killed and each of the three kinds of child run says so instead of waiting for EOF."""
    wrapper = script(tmp_path / "python", f"sleep 1000 &\necho $! > {tmp_path}/job\nexec sleep 1000\n")
    out = in_child(f"""
        import attn_doctor.facts.target as target
        from attn_doctor.facts.imports import import_one
        target.PROBE_TIMEOUT_S = 1
        for run in (lambda: target.RunningProbe({str(wrapper)!r}, False).result(),
                    lambda: target.target_prefix({str(wrapper)!r})):
            try:
                run()
            except target.TargetError as error:
                print(error)
        print(import_one({str(wrapper)!r}, "flash_attn", timeout=1).outcome)
    """)
    assert out.splitlines() == [
        f"the probe in {wrapper} did not answer in 1 s",
        f"cannot run target interpreter {wrapper}: no answer in 1 s",
        "timeout",
    ]
    assert not alive(int((tmp_path / "job").read_text()))  # killed with its group, not left behind


def alive(pid: int) -> bool:
    """Running: not gone, and not a zombie waiting for whoever inherited it to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_child_that_left_the_group_does_not_hold_the_read(tmp_path: Path) -> None:
    """A job that escaped the group with setsid cannot be killed with it; the read still ends."""
    wrapper = script(
        tmp_path / "python", f"setsid sh -c 'echo $$ > {tmp_path}/job; exec sleep 1000' &\nexec sleep 1000\n"
    )
    try:
        out = in_child(f"""
            from attn_doctor.facts.imports import import_one
            print(import_one({str(wrapper)!r}, "flash_attn", timeout=1).outcome)
        """)
        assert out == "timeout\n"
    finally:
        if (tmp_path / "job").exists():
            os.kill(int((tmp_path / "job").read_text()), signal.SIGKILL)


def test_wrapper_that_leaves_a_job_behind_still_answers(venv: Venv, tmp_path: Path) -> None:
    """A wrapper that runs the real interpreter but leaves a background job holding stdout: the
    probe's answer is complete when the interpreter exits, and the check uses it."""
    wrapper = script(tmp_path / "python", f'sleep 1000 &\nexec {venv.python} "$@"\n')
    code, out, err = doctor("check", "--python", wrapper, "--format", "json", "--fail-on", "never")
    assert code == 0 and err == "", err
    assert json.loads(out)["python"]["prefix"] == str(venv.root)


def test_pth_that_prints_costs_nothing(venv: Venv) -> None:
    """A .pth that prints at every start (and an atexit hook that prints after) must not cost the
    probe's report, nor `undo`'s reading of sys.prefix."""
    (venv.site / "chatty.pth").write_text(
        'import sys, atexit; print("{hello from a .pth"); sys.stdout.write("no newline");'
        ' atexit.register(print, "bye from atexit")\n'
    )
    code, out, err = doctor("check", "--python", venv.python, "--format", "json", "--fail-on", "never")
    assert code == 0 and err == "", err
    assert json.loads(out)["python"]["prefix"] == str(venv.root)
    code, out, err = doctor("undo", "--python", venv.python)
    assert (code, out, err) == (0, f"Nothing to undo in {venv.root}.\n", "")


# --- files that are not files ---------------------------------------------------------------

OPTIONS = {  # option -> (what a valid run adds, the cap)
    "--facts": ((), 16 * MIB),
    "--config": (("--facts", HEALTHY), 1 * MIB),
    "--model": (("--facts", HEALTHY), 1 * MIB),
    "--against": (("--facts", HEALTHY), 1 * MIB),
    "--bench": (("--facts", HEALTHY), 1 * MIB),
}


def hostile_file(kind: str, folder: Path, cap: int) -> tuple[Path, str]:
    """(the path, what the one line says) for a FIFO, /dev/zero or a file one byte over the cap."""
    if kind == "fifo":
        path = folder / "input"
        os.mkfifo(path)  # nothing ever writes to it: a plain open() blocks for good
        return path, "is a FIFO, not a regular file"
    if kind == "dev-zero":
        return Path("/dev/zero"), "is a character device, not a regular file"
    path = folder / "input"
    with path.open("wb") as huge:
        huge.truncate(cap + 1)  # sparse: over the cap without writing it
    return path, f"is over {cap // MIB} MiB"


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_file_options_read_regular_files_only(tmp_path: Path, option: str, kind: str) -> None:
    rest, cap = OPTIONS[option]
    path, message = hostile_file(kind, tmp_path, cap)
    one_line(*doctor("check", *rest, option, path), message)


@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_pyproject_that_is_not_a_file(tmp_path: Path, kind: str) -> None:
    made, message = hostile_file(kind, tmp_path, 1 * MIB)
    made.rename(tmp_path / "pyproject.toml")
    one_line(*doctor("check", "--facts", HEALTHY, cwd=tmp_path), message)


def test_pyproject_that_links_to_dev_zero(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").symlink_to("/dev/zero")
    one_line(*doctor("check", "--facts", HEALTHY, cwd=tmp_path), "is a character device")


def test_extension_that_is_a_fifo_is_not_opened(machine: Machine) -> None:  # noqa: F811
    """The import system skips a FIFO named like an extension; a RECORD row naming one must not
    block the ELF reader either."""
    os.mkfifo(machine.extension)
    out = in_child(f"""
        from attn_doctor.facts.binaries import check_binaries
        [binary] = check_binaries([({str(machine.extension)!r}, "flash-attn")], {str(machine.torch_lib.parent)!r})
        print(binary.error)
    """)
    assert out == f"OSError: {machine.extension} is not a regular file\n"


# --- YAML and JSON bombs --------------------------------------------------------------------


@pytest.mark.parametrize(
    "bomb",
    [
        "attn_implementation: " + "[" * 5000 + "\n",  # the 10 KB file that cost 35 s and then exit 3
        "attn_implementation: " + "[ " * 50_000 + "\n",  # 100 KB: over four minutes
        "- " * 5000 + "x\n",  # block sequences, one line
        "{a: " * 5000 + "\n",
        "".join(" " * i + "a:\n" for i in range(40)),  # block mappings by indentation
    ],
    ids=["flow-10k", "flow-100k", "block-dashes", "flow-mappings", "indented"],
)
def test_yaml_nesting_bomb_is_refused(tmp_path: Path, bomb: str) -> None:
    config = tmp_path / "axolotl.yml"
    config.write_text(bomb)
    one_line(*doctor("check", "--facts", HEALTHY, "--config", config), "nests over 32 levels deep; refusing")


@pytest.mark.parametrize(
    ("value", "message"),
    [("2024-13-45", "month must be in 1..12"), ("9" * 5000, "ValueError"), ("!!timestamp x", "AttributeError")],
)
def test_yaml_value_the_constructor_cannot_build(tmp_path: Path, value: str, message: str) -> None:
    config = tmp_path / "axolotl.yml"
    config.write_text(f"base_model: {value}\n")
    one_line(*doctor("check", "--facts", HEALTHY, "--config", config), message)


def test_real_axolotl_nesting_still_reads(tmp_path: Path) -> None:
    config = tmp_path / "axolotl.yml"
    config.write_text(
        "base_model: meta-llama/Llama-3.1-8B\nattn_implementation: sdpa\n"
        "datasets:\n  - path: a\n    type:\n      field_messages: conversations\n      roles: {user: [human]}\n"
    )
    assert doctor("check", "--facts", HEALTHY, "--config", config)[0] == 0


def saved(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "report.json"
    path.write_text(text)
    return path


def test_facts_nested_too_deep(tmp_path: Path) -> None:
    path = saved(tmp_path, '{"schema": "attn-doctor/report-1", "gpus": ' + "[" * 100_000 + "]" * 100_000 + "}")
    one_line(*doctor("check", "--facts", path), "nests over 64 levels deep")


@pytest.mark.parametrize(("number", "message"), [("9" * 5000, "5000 digits"), ("1e999", "out of range")])
def test_facts_with_a_number_too_large(tmp_path: Path, number: str, message: str) -> None:
    data = json.loads(HEALTHY.read_text())
    text = json.dumps(data).replace('"memory_mib": 81559', f'"memory_mib": {number}')
    assert number in text
    one_line(*doctor("check", "--facts", saved(tmp_path, text)), message)


def test_facts_with_infinity(tmp_path: Path) -> None:
    text = json.dumps({**json.loads(HEALTHY.read_text()), "doctor_version": float("inf")})
    one_line(*doctor("check", "--facts", saved(tmp_path, text)), "Infinity is not a JSON number")


@pytest.mark.parametrize(
    ("section", "field"), [("gpus", "compute_capability"), ("driver", "cuda_driver_version"), ("toolchain", "nvcc")]
)
def test_facts_version_that_is_not_one(tmp_path: Path, section: str, field: str) -> None:
    data = json.loads(HEALTHY.read_text())
    (data[section][0] if section == "gpus" else data[section])[field] = "abc"
    one_line(*doctor("check", "--facts", saved(tmp_path, json.dumps(data))), "'abc' is not a version number")


def test_bench_shape_that_is_not_one(tmp_path: Path) -> None:
    bench = json.loads((FIXTURES / "h100-bench.json").read_text())
    bench["timings"][0]["shape"] = "abc"
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    one_line(*doctor("check", "--facts", HEALTHY, "--bench", path, "--seq-len", "4096"), "shape 'abc' is not B x S")


def test_tool_that_is_not_a_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("tool = 5\n")
    one_line(*doctor("check", "--facts", HEALTHY, cwd=tmp_path), "[tool] must be a table")


# --- a damaged extension --------------------------------------------------------------------


def test_bit_flipped_extension_is_a_finding(machine: Machine) -> None:  # noqa: F811
    """One byte of the extension's dynamic string table flipped: pyelftools raises
    UnicodeDecodeError reading the library names. That is the file's finding, not the report's end."""
    machine.build_extension()
    data = bytearray(machine.extension.read_bytes())
    data[data.index(b"libc10.so\x00")] ^= 0xFF  # DT_NEEDED's first name, in .dynstr
    machine.extension.write_bytes(bytes(data))
    code, out, err = doctor("check", "--python", machine.venv.python, "--format", "json", "--fail-on", "never")
    assert code == 0 and err == "", err
    [unreadable] = [f for f in json.loads(out)["findings"] if f["code"] == "abi-unreadable"]
    assert "UnicodeDecodeError" in unreadable["title"]


def test_no_bit_flip_makes_the_elf_reader_raise(machine: Machine) -> None:  # noqa: F811
    """Every 29th byte of a real extension flipped in turn, each high bit once: every damaged
    file is read or reported as unreadable, never raised (sweeps of every 13th byte and of every
    byte passed too)."""
    machine.build_extension()
    good = machine.extension.read_bytes()
    torch = str(machine.torch_lib.parent)
    errors = set()
    for index in range(0, len(good), 29):
        damaged = bytearray(good)
        damaged[index] ^= 0x80
        machine.extension.write_bytes(bytes(damaged))
        [binary] = check_binaries([(str(machine.extension), "flash-attn")], torch)
        errors.add(binary.error.split(":")[0])
    assert len(errors) > 2  # the sweep did reach the parser's failures, not only harmless bytes


# --- the CI gate ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", " ", " ; "])
def test_empty_require_variable_keeps_pyproject_requirements(tmp_path: Path, value: str) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.attn-doctor]\nrequire = ["fa4"]\nno-gpu-ok = true\n')
    _, out, _ = doctor("check", "--facts", HEALTHY, "--format", "json", cwd=tmp_path, ATTN_DOCTOR_REQUIRE=value)
    assert [r["require"] for r in json.loads(out)["requirements"]] == ["fa4"]


def exit_code_into_a_closed_pipe(*args: str | Path) -> int:
    """`attn-doctor ARGS | head -1` where head has already left: a real pipe whose read end is
    closed before the doctor writes, so its first write meets EPIPE every time."""
    read_end, write_end = os.pipe()
    with subprocess.Popen(
        [sys.executable, "-m", "attn_doctor", *map(str, args)],
        stdout=write_end,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    ) as child:
        os.close(write_end)
        os.close(read_end)
        assert child.stderr is not None
        err = child.stderr.read().decode()
        code = child.wait(timeout=HANG_GUARD_S)
    assert err == "", err  # no "Exception ignored ... BrokenPipeError" either
    return code


def test_head_of_a_healthy_check_exits_0() -> None:
    assert exit_code_into_a_closed_pipe("check", "--facts", HEALTHY) == 0
    assert exit_code_into_a_closed_pipe("check", "--facts", HEALTHY, "--format", "json") == 0


def test_head_of_a_failing_check_keeps_its_exit_code() -> None:
    assert exit_code_into_a_closed_pipe("check", "--facts", COLLIDING) == 1


def test_head_in_a_pipefail_shell(tmp_path: Path) -> None:
    shell = f"set -o pipefail; {sys.executable} -m attn_doctor check --facts {HEALTHY} -v | head -1"
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert (done.returncode, done.stdout, done.stderr) == (0, "GPU\n", "")


def test_columns_zero_still_prints(tmp_path: Path) -> None:
    code, out, err = doctor("check", "--facts", COLLIDING, COLUMNS="0")
    assert code == 1 and "fa4-files-overwritten" in out and err == ""


def test_ascii_terminal_gets_the_report() -> None:
    code, out, err = doctor("check", "--facts", COLLIDING, PYTHONIOENCODING="ascii")
    assert code == 1 and "? error [fa2-extension-missing]" in out and err == ""


@pytest.mark.parametrize(
    ("requirement", "message"),
    [
        ("fa4 @ file:///etc/passwd", "not a URL (file:///etc/passwd)"),
        ("fa4[cu13]", "not extras [cu13]"),
        ('fa4; python_version < "3"', "not a marker"),
    ],
)
def test_require_takes_a_version_spec_only(requirement: str, message: str) -> None:
    one_line(*doctor("check", "--facts", HEALTHY, "--require", requirement), message)


# --- nvcc is read, never run ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "version"),
    [
        ({"version.json": json.dumps({"cuda": {"version": "12.8.1"}, "cuda_nvcc": {"version": "12.6.85"}})}, "12.6"),
        ({"version.txt": "CUDA Version 10.2.89\n"}, "10.2"),
        ({"include/cuda.h": "#ifndef __cuda_cuda_h__\n#define CUDA_VERSION 12080\n"}, "12.8"),
        ({}, None),
        ({"version.json": "{}"}, None),
    ],
)
def test_nvcc_of_the_target_is_never_run(tmp_path: Path, files: dict[str, str], version: str | None) -> None:
    """The target environment's bin/nvcc comes first on the search path; running it would run
    whatever that environment put there."""
    ran = tmp_path / "nvcc-ran"
    nvcc = script(tmp_path / "env" / "bin" / "nvcc", f"touch {ran}\necho 'Cuda compilation tools, release 99.9'\n")
    for name, text in files.items():
        (tmp_path / "env" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "env" / name).write_text(text)
    tools = read_toolchain(str(nvcc.parent))
    assert (tools.nvcc_path, tools.nvcc) == (str(nvcc), version)
    assert not ran.exists()


def test_nvcc_version_file_that_is_a_fifo(tmp_path: Path) -> None:
    nvcc = script(tmp_path / "env" / "bin" / "nvcc", "exit 1\n")
    os.mkfifo(tmp_path / "env" / "version.json")
    assert read_toolchain(str(nvcc.parent)).nvcc is None


def test_a_fifo_named_in_record_is_not_opened(venv: Venv, tmp_path: Path) -> None:
    """The probe hashes every file RECORD lists: one that is now a FIFO is reported, never opened
    (opening it would block the probe until its timeout)."""
    from tests.conftest import doctor, pypi_wheel

    venv.install(pypi_wheel("sageattention==1.0.6"))
    listed = venv.site / "sageattention" / "core.py"
    listed.unlink()
    os.mkfifo(listed)
    code, out, err = doctor("check", "--python", venv.python, "--no-gpu-ok", "--format", "json")
    assert code != 3, err
    [package] = [p for p in json.loads(out)["packages"] if p["name"] == "sageattention"]
    assert {"path": "sageattention/core.py", "now_matches": None} in package["modified"]


@pytest.mark.parametrize(
    ("row", "said"),
    [
        # a row over csv's field limit (131,072 characters) ended the probe (exit 3)
        ("sageattention/" + "x" * 200_000 + ".py,sha256=AAAA,1\n", "RECORD unreadable"),
        # a row naming a kernel file: reading /proc/self/pagemap held the probe for a minute
        ("/proc/self/pagemap,sha256=AAAA,1\n", None),
    ],
    ids=["over-csv-field-limit", "proc-pagemap"],
)
def test_a_hostile_record_row_is_a_finding_not_a_crash_or_a_wait(venv: Venv, row: str, said: str | None) -> None:
    from tests.conftest import doctor, pypi_wheel

    venv.install(pypi_wheel("sageattention==1.0.6"))
    [record] = venv.site.glob("sageattention-1.0.6.dist-info/RECORD")
    record.write_text(record.read_text() + row)
    code, out, err = doctor("check", "--python", venv.python, "--no-gpu-ok", "--format", "json")
    assert code in (0, 1), err
    [package] = [p for p in json.loads(out)["packages"] if p["name"] == "sageattention"]
    if said is None:
        assert package["metadata_problem"] is None and package["missing"] == [] and package["modified"] == []
    else:
        assert said in (package["metadata_problem"] or "")


def test_check_and_install_say_the_same_of_an_nvcc_wrapper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A toolkit made from NVIDIA's pip wheels (no version.json: its nvcc names its release itself),
    reached through a wrapper script on PATH: check and install give one answer, and CUDA_HOME,
    set as that answer says, is what both then build with."""
    import dataclasses

    from attn_doctor.actions.install import plan_install
    from attn_doctor.actions.plan import Refusal
    from attn_doctor.actions.recipes.context import InstallRequest
    from attn_doctor.facts.model import Toolchain
    from attn_doctor.facts.saved import load_facts
    from attn_doctor.report import judge

    toolkit = tmp_path / "cuda-pip"
    (toolkit / "bin").mkdir(parents=True)
    real = toolkit / "bin" / "nvcc"
    real.write_bytes((cuda_toolkit() / "bin" / "nvcc").read_bytes())
    real.chmod(0o755)
    wrapper = script(tmp_path / "bin" / "nvcc", f'exec {real} "$@"\n')
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")

    facts = load_facts(HEALTHY)  # a CUDA 12.8 torch on an H100, with this machine's toolchain
    from attn_doctor.facts.given import with_given_torch

    def judged(tools: Toolchain) -> tuple[list[str], str]:
        here = dataclasses.replace(with_given_torch(facts, "2.11.0", "13.0"), toolchain=tools)
        said = [f.title for f in judge(here).findings if f.code == "nvcc-version-unknown"]
        try:
            plan_install(here, InstallRequest("fa3"), here=False)
            return said, ""
        except Refusal as refusal:
            return said, str(refusal)

    wrapped = read_toolchain(None)
    assert (wrapped.nvcc_path, wrapped.nvcc) == (str(wrapper), None)
    said, refused = judged(wrapped)
    assert said and said[0] in refused and "set CUDA_HOME" in refused  # one answer, in both

    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    named = read_toolchain(None)
    assert (named.nvcc_path, named.nvcc) == (str(real), "13.0")  # read, never run
    said, refused = judged(named)
    assert said == [] and "nvcc" not in refused


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("require = " + "[" * 5000 + "]" * 5000, "nested too deeply to read"),  # was an internal error
        ("require = [" + ",".join(['"sdpa"'] * 120_000) + "]", "require lists 120000 entries: at most 256"),
    ],
    ids=["nested-5000-deep", "120000-requirements"],
)
def test_a_pyproject_bounded_in_work_not_only_in_bytes(tmp_path: Path, toml: str, message: str) -> None:
    """Under the 1 MiB limit, and still no gate: one line, exit 2, at once (it took 38 s and printed
    120,040 lines)."""
    (tmp_path / "pyproject.toml").write_text(f"[tool.attn-doctor]\n{toml}\n")
    one_line(*doctor("check", "--facts", HEALTHY, cwd=tmp_path), message)


def test_a_pth_that_prints_256_mib_costs_the_doctor_no_more_memory(venv: Venv, tmp_path: Path) -> None:
    """Every start of the target runs its .pth files: one that prints 256 MiB cost the doctor 1.5 GiB
    (each child's output was kept whole). The output kept is the last part, where the answer is."""
    (venv.site / "loud.pth").write_text("import sys; [sys.stdout.write('x' * (1 << 20)) for _ in range(256)]\n")
    # the doctor's peak resident memory, as wait4 reports it for a child (what GNU time's %M prints)
    measure = (
        "import json, resource, subprocess, sys; done = subprocess.run(sys.argv[1:], capture_output=True, "
        "text=True, stdin=subprocess.DEVNULL); print(json.dumps([done.returncode, done.stdout, done.stderr, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    argv = [
        sys.executable,
        "-m",
        "attn_doctor",
        "check",
        "--python",
        str(venv.python),
        "--no-gpu-ok",
        "--format",
        "json",
    ]
    measured = subprocess.run(
        [sys.executable, "-c", measure, *argv], capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    code, out, err, peak_kib = json.loads(measured.stdout)
    assert code in (0, 1), err[-500:]
    assert json.loads(out)["python"]["executable"] == str(venv.python)
    peak_mib = peak_kib / 1024
    assert peak_mib < 400, peak_mib  # the doctor's own process: bounded, far under the 256 MiB printed x6


def test_check_and_install_say_the_same_of_a_conda_toolkit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A toolkit from conda (conda-forge's cuda-nvcc: nvcc in the env's bin/, its record in
    conda-meta/, no version.json), the env activated and no CUDA_HOME: the nvcc on PATH is the one
    torch's cpp_extension builds with; check reads its release off the program and install agrees."""
    import dataclasses
    import json

    from attn_doctor.actions.install import plan_install
    from attn_doctor.actions.plan import Refusal
    from attn_doctor.actions.recipes.context import InstallRequest
    from attn_doctor.facts.given import with_given_torch
    from attn_doctor.facts.saved import load_facts
    from attn_doctor.report import judge

    env = tmp_path / "miniforge" / "envs" / "train"
    (env / "bin").mkdir(parents=True)
    (env / "conda-meta").mkdir()
    nvcc = env / "bin" / "nvcc"
    nvcc.write_bytes((cuda_toolkit() / "bin" / "nvcc").read_bytes())
    nvcc.chmod(0o755)
    record = {"name": "cuda-nvcc", "version": "13.0.88", "files": ["bin/nvcc"]}
    (env / "conda-meta" / "cuda-nvcc-13.0.88-0.json").write_text(json.dumps(record))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("CONDA_PREFIX", str(env))
    monkeypatch.setenv("PATH", f"{env / 'bin'}{os.pathsep}{os.environ['PATH']}")

    tools = read_toolchain(None)
    assert (tools.nvcc_path, tools.nvcc) == (str(nvcc), "13.0")
    here = dataclasses.replace(with_given_torch(load_facts(HEALTHY), "2.11.0", "13.0"), toolchain=tools)
    assert not [f for f in judge(here).findings if f.code.startswith("nvcc-")]
    try:
        plan_install(here, InstallRequest("fa3"), here=False)
    except Refusal as refusal:
        assert "nvcc" not in str(refusal), refusal
