"""`check`'s head start: the probe started by the entry point, before the doctor's imports, changes
how soon the answer comes and nothing of the answer."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from attn_doctor.entry import _head_start
from attn_doctor.facts import head_start
from attn_doctor.facts.locate import start_probe
from attn_doctor.facts.target import RunningProbe
from tests.conftest import REPO, RealPackages, RecordedNvml, Venv, run


def report(*argv: str | Path) -> dict[str, Any]:
    done = run(*argv, check=False, cwd=REPO)
    assert done.returncode in (0, 1), done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    data.pop("collected_at")
    return data


def test_the_head_start_changes_nothing_of_the_report(venv: Venv, real: RealPackages) -> None:
    venv.install(real.fa2_wheel, real.fa4_wheel)
    args = ("check", "--python", str(venv.python), "--format", "json")
    with_head_start = report(sys.executable, "-m", "attn_doctor", *args)
    plain_cli = "from attn_doctor.cli import main; main()"  # the CLI alone, as before the head start
    without = report(sys.executable, "-c", plain_cli, *args)
    assert with_head_start == without
    assert any(p["name"] == "flash-attn-4" for p in with_head_start["packages"])


@pytest.mark.parametrize(
    ("argv", "deep"),
    [
        (["check", "--python", "{python}"], False),
        (["check", "--deep", "--python={python}", "--format", "json"], True),
    ],
)
def test_a_plain_check_gets_its_probe_started(venv: Venv, argv: list[str], deep: bool) -> None:
    """The probe starts before the registry is imported, and answers the request it is then given."""
    _head_start([a.format(python=venv.python) for a in argv])
    started = head_start.take(str(venv.python), deep)
    assert started is not None
    seen = RunningProbe(str(venv.python), deep, started.probe).result()
    assert seen.python.executable and seen.python.prefix == str(venv.root)
    assert head_start.take(str(venv.python), deep) is None  # handed over once


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--facts", "saved.json"],
        ["check", "--help"],
        ["install", "fa4", "--python", "{python}"],
        ["check", "--python"],
        [],
    ],
)
def test_nothing_is_started_where_check_will_not_probe(venv: Venv, argv: list[str]) -> None:
    _head_start([a.format(python=venv.python) for a in argv])
    assert head_start.take(str(venv.python), False) is None


def test_a_probe_started_for_another_target_is_not_used(venv: Venv) -> None:
    _head_start(["check", "--python", str(venv.python)])
    assert head_start.take(sys.executable, False) is None  # collect was asked about another interpreter


def test_a_probe_started_for_another_request_is_not_used(venv: Venv) -> None:
    """Fed the fast path's request (files over the hash limit compared by size), it cannot answer
    `--deep`'s (every file hashed)."""
    _head_start(["check", "--python", str(venv.python)])
    assert head_start.take(str(venv.python), True) is None


def test_a_probe_not_taken_ends_on_its_own(venv: Venv) -> None:
    """Its request never comes: it reads end-of-file and ends (or the keeper kills it at exit)."""
    child, _ = start_probe(str(venv.python))
    child.feed(b"")
    assert child.finish(timeout=30).returncode != 0


def test_collect_takes_over_what_was_started(venv: Venv) -> None:
    from attn_doctor.facts.collect import collect

    _head_start(["check", "--python", str(venv.python)])
    facts = collect(str(venv.python))
    assert head_start.take(str(venv.python), False) is None  # collect took it
    assert facts.python.executable


RECORDED_PYNVML = """import json, sys
sys.path.insert(0, {repo!r})
from tests.conftest import RecordedNvml


class NVMLError(Exception):  # what RecordedNvml raises a recorded error as
    def __init__(self, value):
        super().__init__(f"NVML error {{value}}")
        self.value = value


_recorded = RecordedNvml(json.load(open({recording!r})))
{broken}


def __getattr__(name):
    return getattr(_recorded, name)
"""


def recorded_pynvml(folder: Path, broken: str = "") -> Path:
    """A `pynvml` module answering as NVML did on a real H100 (tests/fixtures/nvml-h100.json), for
    a child process: there is no GPU here. `broken`: a statement its import runs after loading
    the recording (one that fails; one that replaces nvmlInit with a hang)."""
    folder.mkdir()
    recording = REPO / "tests" / "fixtures" / "nvml-h100.json"
    source = RECORDED_PYNVML.format(repo=str(REPO), recording=str(recording), broken=broken)
    (folder / "pynvml.py").write_text(source)
    return folder


@pytest.mark.parametrize("broken", [False, True])
def test_the_gpus_read_by_the_head_starts_child_are_the_gpus_read_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, h100: RecordedNvml, no_cuda_visible: None, broken: bool
) -> None:
    """NVML read in a process of its own (the doctor's interpreter, with the doctor's sys.path) gives
    the reading `collect` would make itself, field for field; a child that fails (here its pynvml
    cannot be imported) leaves `collect` to read the GPUs itself."""
    from attn_doctor.facts import collect as collecting
    from attn_doctor.facts import gpu_child
    from attn_doctor.facts.gpu import read_gpus

    monkeypatch.syspath_prepend(str(recorded_pynvml(tmp_path / "nvml", "1 / 0" if broken else "")))
    device = tmp_path / "nvidiactl"  # the device node the child is started for
    device.touch()
    child = head_start.start_gpu_reading(str(device))
    assert child is not None
    reading = gpu_child.taken(child)
    expected = read_gpus(h100)
    if broken:
        assert reading is None
    else:
        assert reading == expected and reading[1][0].name == "NVIDIA H100 80GB HBM3"

    # collect's side: what the head start started, taken once
    monkeypatch.setattr(head_start, "_gpus", head_start.start_gpu_reading(str(device)))
    monkeypatch.setattr(collecting, "read_gpus", lambda nvml: read_gpus(h100))  # its own reading: the H100's
    assert collecting._read_gpus(None) == expected
    assert head_start.take_gpus() is None
    assert head_start.start_gpu_reading(str(tmp_path / "absent")) is None  # no NVIDIA device node: nothing started


def test_nvml_that_never_answers_is_an_nvml_failure_not_a_hung_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_cuda_visible: None
) -> None:
    """A driver that hangs NVML (nvmlInit never returns): read in-process it would hang `check`;
    the head start's child is killed after its time and the reading says NVML gave no answer."""
    import time

    from attn_doctor.facts import gpu_child

    hang = "_recorded.nvmlInit = lambda: __import__('time').sleep(3600)"
    monkeypatch.syspath_prepend(str(recorded_pynvml(tmp_path / "nvml", hang)))
    monkeypatch.setattr(gpu_child, "TIMEOUT_S", 2.0)
    device = tmp_path / "nvidiactl"
    device.touch()
    child = head_start.start_gpu_reading(str(device))
    assert child is not None
    started = time.monotonic()
    reading = gpu_child.taken(child)
    assert time.monotonic() - started < 10
    assert reading is not None
    driver, gpus = reading
    assert driver.nvidia_status == "nvml-error" and "no answer in 2 s" in driver.nvidia_detail and gpus == ()
