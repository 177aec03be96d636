"""`attn-doctor fleet`: real reports written by the real CLI from differing venvs (each under its own
hostname, in its own UTS namespace), and a real local Ray cluster of several raylets whose nodes
check different venvs; a node killed mid-run, and one too slow, are reported, not waited on."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from junitparser import Failure, JUnitXml

from tests.conftest import FIXTURES, RealPackages, Venv, doctor, run

MACHINES = FIXTURES / "machines"


@dataclass(frozen=True)
class Venvs:
    fa4: Venv  # FA4 alone, as pip installs it
    fa4_no_compile: Venv  # the same wheel with --no-compile: the same files, another RECORD
    collided: Venv  # FA2 installed over FA4: 20 of FA4's files are now FA2's


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory, real: RealPackages) -> Venvs:
    root = tmp_path_factory.mktemp("fleet")
    made = [Venv(root / name) for name in ("fa4", "fa4-no-compile", "collided")]
    for venv in made:
        venv.see_packages_of(real.torch_python)
    made[0].install(real.fa4_wheel)
    made[1].pip("install", "--no-deps", "--no-index", "--no-compile", real.fa4_wheel)
    made[2].install(real.fa4_wheel)
    made[2].install(real.fa2_wheel)
    return Venvs(*made)


def report_as(host: str, python: Path, output: Path) -> None:
    """The real `check --format json --output` under its own hostname, as a node of a job writes it."""
    if shutil.which("unshare") is None or run("unshare", "-u", "true", check=False).returncode != 0:
        pytest.skip("needs unshare -u (a UTS namespace) to give each report its own hostname")
    command = (
        f"hostname {host} && exec {sys.executable} -m attn_doctor check --python {python} "
        f"--format json --output {output} > /dev/null"
    )
    done = run("unshare", "-u", "sh", "-c", command, check=False)
    assert done.returncode in (0, 1), done.stderr


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory, venvs: Venvs) -> Path:
    folder = tmp_path_factory.mktemp("logs")
    for host, venv in (
        ("node-01", venvs.fa4),
        ("node-02", venvs.fa4),
        ("node-03", venvs.fa4),
        ("node-17", venvs.collided),
    ):
        report_as(host, venv.python, folder / f"attn-doctor-{host}.json")
    return folder


# FA4 goes in with --no-deps here (no 110 MB of CuTe DSL): every node misses its requirements alike
IGNORE = ("--ignore", "package-requirements-unmet")


def fleet_json(*args: str | Path) -> tuple[int, dict[str, Any], str]:
    code, out, err = doctor("fleet", *args, "--format", "json")
    return code, json.loads(out) if out else {}, err


def test_reports_group_the_odd_node_out_and_name_what_differs(reports: Path) -> None:
    code, fleet, _ = fleet_json("--reports", str(reports / "attn-doctor-*.json"), *IGNORE)
    assert code == 1 and fleet["schema"] == "attn-doctor/fleet-1"
    majority, odd = fleet["groups"]
    assert majority["majority"] and majority["nodes"] == ["node-01", "node-02", "node-03"]
    assert odd["nodes"] == ["node-17"]
    said = {d["field"]: d["text"] for d in odd["differences"]}
    assert said["flash-attn"] == "flash-attn 2.8.3.post2, files as installed vs not installed"
    assert said["flash-attn-4"].startswith("flash-attn-4 files 20 modified of ") and said["flash-attn-4"].endswith(
        " vs as installed"
    )
    assert "+fa4-files-overwritten" in said["findings"]
    assert set(fleet["drift"]) == {"flash-attn", "flash-attn-4", "findings"}
    errors = [(n["name"], f["code"]) for n in fleet["nodes"] for f in n["findings"] if f["severity"] == "error"]
    assert ("node-17", "fa4-files-overwritten") in errors and all(name == "node-17" for name, _ in errors)
    assert fleet["summary"]["failing_nodes"] == 1 and fleet["summary"]["exit_code"] == 1


def test_terminal_markdown_and_junit_say_the_same(reports: Path, tmp_path: Path) -> None:
    pattern = str(reports / "*.json")
    code, text, _ = doctor("fleet", "--reports", pattern, *IGNORE, env={**os.environ, "COLUMNS": "300"})
    assert code == 1
    assert (
        "node-17: flash-attn 2.8.3.post2, files as installed vs not installed; flash-attn-4 files 20 modified" in text
    )
    assert "majority, 3 node(s): node-01, node-02, node-03" in text and "node-17 [fa4-files-overwritten]" in text
    code, markdown, _ = doctor("fleet", "--reports", pattern, "--format", "markdown")
    assert code == 1 and "## attn-doctor fleet" in markdown and "**node-17** `fa4-files-overwritten`" in markdown
    code, junit, _ = doctor("fleet", "--reports", pattern, *IGNORE, "--format", "junit")
    (tmp_path / "fleet.xml").write_text(junit)
    [suite] = list(JUnitXml.fromfile(str(tmp_path / "fleet.xml")))
    cases = {case.name: case for case in suite}
    assert code == 1 and set(cases) == {"node-01", "node-02", "node-03", "node-17"}
    assert all(cases[n].is_passed for n in ("node-01", "node-02", "node-03"))
    assert isinstance(cases["node-17"].result[0], Failure) and suite.failures == 1


def test_schema_doc_lists_every_field_of_the_fleet_report(reports: Path) -> None:
    code, fleet, _ = fleet_json("--reports", str(reports / "*.json"))
    doc = (Path(__file__).resolve().parents[1] / "docs" / "report-schema.md").read_text()
    section = doc[doc.index("# The fleet report") :]
    group = fleet["groups"][1]
    fields = {*fleet, *fleet["summary"], *group, *group["differences"][0], *fleet["nodes"][0]}
    assert code == 1 and not {f for f in fields if f"`{f}`" not in section}


def test_allowed_drift_and_fail_on(reports: Path) -> None:
    pattern = str(reports / "*.json")
    allow = ("--allow-drift", "flash-attn", "--allow-drift", "flash-attn-4", "--allow-drift", "findings")
    code, fleet, _ = fleet_json("--reports", pattern, *allow, *IGNORE)
    assert code == 1 and fleet["drift"] == []  # node-17's own errors still fail it
    assert all(d["allowed"] for d in fleet["groups"][1]["differences"])
    code, fleet, _ = fleet_json("--reports", pattern, *allow, "--fail-on", "never")
    assert code == 0 and fleet["summary"]["failing_nodes"] == 0
    code, _, err = fleet_json("--reports", pattern, "--allow-drift", "colour")
    assert code == 2 and err.count("\n") == 1 and "--allow-drift colour: not a field" in err


def test_same_release_another_record_is_named(venvs: Venvs, tmp_path: Path) -> None:
    """The same FA4 wheel installed twice, once without bytecode: every file as installed, but the
    RECORDs differ (the pyc rows), which is what a node installed another way looks like."""
    report_as("node-a", venvs.fa4.python, tmp_path / "a.json")
    report_as("node-b", venvs.fa4.python, tmp_path / "b.json")
    report_as("node-c", venvs.fa4_no_compile.python, tmp_path / "c.json")
    code, fleet, _ = fleet_json("--reports", str(tmp_path / "*.json"))
    [difference] = fleet["groups"][1]["differences"]
    assert code == 1 and fleet["groups"][1]["nodes"] == ["node-c"]
    assert difference["text"] == "flash-attn-4 files differ by RECORD digest"
    code, fleet, _ = fleet_json("--reports", str(tmp_path / "*.json"), "--allow-drift", "packages", *IGNORE)
    assert code == 0 and len(fleet["groups"]) == 2


def test_recorded_machines_differ_by_gpu() -> None:
    """Reports recorded on real machines (an H100, an A100): the GPU and its compute capability."""
    code, fleet, _ = fleet_json(str(MACHINES / "h100.json"), "--reports", str(MACHINES / "a100.json"))
    # both were recorded on a host named cuda-machine: two reports of one node is bad input
    assert code == 2 and fleet == {}
    code, fleet, _ = fleet_json("--reports", str(MACHINES / "h100.json"), "--reports", str(MACHINES / "cpu.json"))
    assert code == 1
    [difference] = [d for d in fleet["groups"][1]["differences"] if d["field"] == "gpu"]
    assert {difference["value"], difference["majority_value"]} == {"1x NVIDIA H100 80GB HBM3 (9.0)", "no GPU"}


def test_bad_reports_are_one_line_and_exit_2(reports: Path, tmp_path: Path) -> None:
    whole = (reports / "attn-doctor-node-01.json").read_text()
    cases: dict[str, tuple[str, str]] = {
        "truncated": (whole[: len(whole) // 2], "is truncated: its JSON stops after"),
        "foreign": (json.dumps({"name": "a package.json", "version": "1.0"}), "is not an attn-doctor report"),
        "other-schema": (json.dumps({"schema": "attn-doctor/report-9"}), "has schema attn-doctor/report-9"),
        "not-json": ("<html>502 Bad Gateway</html>", "is not JSON text"),
        "bad-field": (json.dumps({**json.loads(whole), "gpus": "eight"}), "Facts.gpus: expected a list"),
    }
    for name, (text, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(reports / "attn-doctor-node-02.json", folder)
        (folder / "attn-doctor-node-09.json").write_text(text)
        code, out, err = doctor("fleet", "--reports", str(folder / "*.json"))
        assert (code, out) == (2, ""), name
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, (name, err)
    duplicate = tmp_path / "duplicate"
    duplicate.mkdir()
    shutil.copy(reports / "attn-doctor-node-02.json", duplicate / "old.json")
    shutil.copy(reports / "attn-doctor-node-02.json", duplicate / "new.json")
    code, _, err = doctor("fleet", "--reports", str(duplicate / "*.json"))
    assert code == 2 and "are both reports of node node-02" in err and err.count("\n") == 1
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    for args, message in (
        (["--reports", str(fifo)], "is a FIFO, not a regular file"),
        (["--reports", str(tmp_path / "none-*.json")], "no file matches"),
        ([], "fleet needs one of --reports GLOB or --ray"),
        (["--reports", str(fifo), "--python", sys.executable], "--python, --deep and --address are for --ray"),
    ):
        code, out, err = doctor("fleet", *args)
        assert (code, out) == (2, "") and message in err and err.count("\n") == 1, err


# --ray: a real local cluster, one raylet per node, each node's workers pointed at a venv


@dataclass
class Cluster:
    cluster: Any
    address: str
    names: dict[str, str]  # Ray node ID -> the venv its ATTN_DOCTOR_PYTHON names


@pytest.fixture(scope="module")
def ray_cluster(venvs: Venvs) -> Iterator[Cluster]:
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    env = {"ATTN_DOCTOR_PYTHON": str(venvs.fa4.python)}
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "env_vars": env})
    try:
        second = cluster.add_node(num_cpus=1, env_vars=env)
        odd = cluster.add_node(num_cpus=1, env_vars={"ATTN_DOCTOR_PYTHON": str(venvs.collided.python)})
        cluster.wait_for_nodes()
        names = {cluster.head_node.node_id: "fa4", second.node_id: "fa4", odd.node_id: "collided"}
        yield Cluster(cluster, cluster.address, names)
    finally:
        cluster.shutdown()


def by_node_id(fleet: dict[str, Any]) -> dict[str, str]:
    """Ray node ID -> the name the fleet report gives the node."""
    return {n["where"].removeprefix("ray node "): n["name"] for n in fleet["nodes"]}


def test_ray_checks_every_node_and_names_the_odd_one(ray_cluster: Cluster) -> None:
    started = time.monotonic()
    code, fleet, err = fleet_json("--ray", "--address", ray_cluster.address, "--timeout", "60")
    assert code == 1, err
    names = by_node_id(fleet)
    [odd_id] = [i for i, venv in ray_cluster.names.items() if venv == "collided"]
    majority, odd = fleet["groups"]
    assert sorted(majority["nodes"]) == sorted(names[i] for i, v in ray_cluster.names.items() if v == "fa4")
    assert odd["nodes"] == [names[odd_id]]
    said = {d["field"]: d["text"] for d in odd["differences"]}
    assert said["flash-attn"] == "flash-attn 2.8.3.post2, files as installed vs not installed"
    assert "+fa4-files-overwritten" in said["findings"]
    assert fleet["summary"]["checked"] == 3 and time.monotonic() - started < 60


@pytest.fixture
def slow_python(tmp_path: Path, venvs: Venvs) -> Iterator[tuple[Path, Path]]:
    """A target interpreter that stalls before it starts (as one on a hung file system does): it
    says it started, then sleeps. Its process is ended here, by its own pid, whatever the test did."""
    started = tmp_path / "started"
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\necho $$ > {started}\nsleep 30\nexec {venvs.fa4.python} "$@"\n')
    wrapper.chmod(0o755)
    yield wrapper, started
    if started.exists():
        # the check started it as the leader of its own process group: its sleep goes with it
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):  # gone already
            os.killpg(int(started.read_text()), signal.SIGKILL)


def test_ray_node_too_slow_is_a_timeout(ray_cluster: Cluster, slow_python: tuple[Path, Path]) -> None:
    wrapper, _ = slow_python
    node = ray_cluster.cluster.add_node(num_cpus=1, env_vars={"ATTN_DOCTOR_PYTHON": str(wrapper)})
    try:
        ray_cluster.cluster.wait_for_nodes()
        started = time.monotonic()
        code, fleet, _ = fleet_json("--ray", "--address", ray_cluster.address, "--timeout", "3")
        took = time.monotonic() - started
    finally:
        ray_cluster.cluster.remove_node(node)
    [slow] = [n for n in fleet["nodes"] if n["where"] == f"ray node {node.node_id}"]
    assert code == 1 and not slow["checked"] and slow["findings"][0]["code"] == "fleet-node-timeout"
    assert fleet["summary"]["checked"] == 3 and took < 20


def test_ray_node_killed_mid_run_is_reported_not_waited_on(
    ray_cluster: Cluster, slow_python: tuple[Path, Path]
) -> None:
    wrapper, started = slow_python
    node = ray_cluster.cluster.add_node(num_cpus=1, env_vars={"ATTN_DOCTOR_PYTHON": str(wrapper)})
    ray_cluster.cluster.wait_for_nodes()
    argv = [sys.executable, "-m", "attn_doctor", "fleet", "--ray", "--address", ray_cluster.address, "--format", "json"]
    fleet = subprocess.Popen([*argv, "--timeout", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:  # its check is under way on the node
            time.sleep(0.1)
        assert started.exists()
        ray_cluster.cluster.remove_node(node, allow_graceful=False)
        killed = time.monotonic()
        out, err = fleet.communicate(timeout=60)
        waited = time.monotonic() - killed
    finally:
        if fleet.poll() is None:
            fleet.kill()
            fleet.wait()
    report = json.loads(out)
    [lost] = [n for n in report["nodes"] if n["where"] == f"ray node {node.node_id}"]
    assert fleet.returncode == 1 and lost["findings"][0]["code"] == "fleet-node-unreachable", err
    assert report["summary"]["checked"] == 3 and waited < 30  # not the 120 s of --timeout


def test_ray_without_a_cluster_is_exit_3_at_once() -> None:
    started = time.monotonic()
    code, out, err = doctor("fleet", "--ray", "--address", "127.0.0.1:1")
    assert (code, out) == (3, "") and "no Ray cluster at 127.0.0.1:1" in err and time.monotonic() - started < 20


def test_reports_are_bounded_together_not_only_each(tmp_path: Path) -> None:
    """Each file under its own limit (16 MiB) and twenty of them held 1.9 GiB: the reports together are
    bounded too, refused in one line before any is parsed."""
    big = tmp_path / "big"
    big.mkdir()
    for node in range(20):
        # 15 MiB of whitespace after a valid object: under each report's own limit
        (big / f"node-{node}.json").write_text('{"schema": "attn-doctor/report-1"}' + " " * (15 << 20))
    code, out, err = doctor("fleet", "--reports", str(big / "*.json"))
    assert (code, out) == (2, "") and "over 256 MiB" in err and err.count("\n") == 1
