"""The fleet's facts: one report per node, read from the files a job wrote (`srun`, `mpirun`, a
Kubernetes job running `check --format json --output ...`) or gathered now from every node of a
Ray cluster. Read-only, like every collector; Ray is imported only here, and only for `--ray`.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attn_doctor.facts.child import ChildTimeout, run_child
from attn_doctor.facts.model import Facts, FactsError
from attn_doctor.facts.saved import MAX_REPORT_BYTES, facts_of_report
from attn_doctor.inputs import MIB, InputError, parse_json, read_bytes, read_json
from attn_doctor.registry.findings import (
    FLEET_NODE_CHECK_FAILED,
    FLEET_NODE_DEAD,
    FLEET_NODE_TIMEOUT,
    FLEET_NODE_UNREACHABLE,
    Finding,
    finding,
)

RAY_MISSING = "fleet --ray needs Ray, which is an optional extra: pip install 'attn-doctor[ray]'"
# What a node's worker may take to start and hand its answer back, on top of --timeout for the
# check itself: the check's own deadline then ends it first, and its process group with it (a
# worker cancelled with force would leave the check's child running in its own session).
START_GRACE_S = 5.0
JOIN_TIMEOUT_S = 30.0


class FleetInputError(Exception):
    """Bad input: a report that cannot be read, two of one node, Ray not installed (exit 2)."""


class FleetRunError(Exception):
    """The fleet could not be asked: no Ray cluster at the address (exit 3)."""


@dataclass(frozen=True)
class Answer:
    """What one node gave: its facts, or the fleet finding that says why there are none."""

    name: str
    where: str  # the report file, or "ray node ID"
    facts: Facts | None
    problem: Finding | None = None


# --reports


def read_reports(patterns: list[str]) -> list[Answer]:
    """Every report the patterns name (globs, or files), one per node; FleetInputError says, in one
    line, which file is wrong and how."""
    answers: list[Answer] = []
    seen: dict[str, Path] = {}
    for path in report_paths(patterns):
        facts = _load(path)
        name = facts.hostname or path.stem
        if name in seen:
            raise FleetInputError(
                f"{seen[name]} and {path} are both reports of node {name}: one report per node "
                "(one left from an earlier job?)"
            )
        seen[name] = path
        answers.append(Answer(name, str(path), facts))
    return answers


# All reports together: a node's report is tens to hundreds of KiB, so this is thousands of nodes;
# each one may be up to MAX_REPORT_BYTES, but twenty of those held 1.9 GiB of the doctor's memory.
MAX_FLEET_BYTES = 256 * MIB


def report_paths(patterns: list[str]) -> list[Path]:
    found: dict[Path, None] = {}
    for pattern in patterns:
        matched = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matched:
            raise FleetInputError(f"--reports {pattern}: no file matches")
        for name in matched:
            found.setdefault(Path(name), None)
    total = sum(os.stat(p).st_size for p in found if os.path.isfile(p))
    if total > MAX_FLEET_BYTES:
        raise FleetInputError(
            f"--reports: {len(found)} files of {total / MIB:.0f} MiB together, over {MAX_FLEET_BYTES // MIB} MiB: "
            "are these check reports (a node's is some hundred KiB)?"
        )
    return list(found)


def _load(path: Path) -> Facts:
    try:
        data = read_json(path, "report", MAX_REPORT_BYTES)
    except InputError as error:
        raise FleetInputError(_truncated(path) or str(error)) from error
    return _facts(data, f"report {path}")


def _truncated(path: Path) -> str | None:
    """A report cut short (a job killed while `check` wrote it, a full disk) says so."""
    try:
        data = read_bytes(path, "report", MAX_REPORT_BYTES).rstrip()
    except InputError:
        return None
    if not data.startswith(b"{") or data.endswith(b"}"):
        return None
    return f"report {path} is truncated: its JSON stops after {len(data)} bytes (a check killed while writing it?)"


def _facts(data: Any, what: str) -> Facts:
    try:
        return facts_of_report(data, what)
    except FactsError as error:
        raise FleetInputError(str(error)) from error


# --ray


def check_here(python: str | None, deep: bool, timeout: float) -> dict[str, Any]:
    """The Ray task: `attn-doctor check --format json` on this node, in a child process with a
    deadline, against --python, else this node's ATTN_DOCTOR_PYTHON, else its active env."""
    target = python or os.environ.get("ATTN_DOCTOR_PYTHON")
    argv = [sys.executable, "-m", "attn_doctor", "check", "--format", "json", "--fail-on", "never"]
    argv += ["--python", target] if target else []
    argv += ["--deep"] if deep else []
    try:
        done = run_child(argv, timeout)
    except ChildTimeout:
        return {"hostname": socket.gethostname(), "timeout": True}
    except OSError as error:
        return {"hostname": socket.gethostname(), "returncode": 3, "stdout": "", "stderr": str(error)}
    return {
        "hostname": socket.gethostname(),
        "returncode": done.returncode,
        "stdout": done.stdout,
        "stderr": done.stderr,
    }


def ask_ray(address: str, python: str | None, deep: bool, timeout: float) -> list[Answer]:
    """One check per node of the cluster, each pinned to its node, all at once; a node that died,
    is dead, or does not answer within `timeout` (+ START_GRACE_S) is a finding, never a wait."""
    try:
        import ray
    except ImportError as error:
        raise FleetInputError(RAY_MISSING) from error
    with _stdout_to_stderr():
        _join(ray, address)
        try:
            return _ask(ray, python, deep, timeout)
        finally:
            ray.shutdown()


def _join(ray: Any, address: str) -> None:
    """ray.init, bounded: given an address where no cluster answers, it retries for ever."""
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:
        try:  # nothing listening: say so at once, not after JOIN_TIMEOUT_S
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as error:
            raise FleetRunError(f"no Ray cluster at {address}: {error.strerror or error}") from error
    failed: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        except BaseException as error:  # ConnectionError, ValueError for a bad address, RuntimeError
            failed.append(error)

    joining = threading.Thread(target=init, name="ray.init", daemon=True)
    joining.start()
    joining.join(JOIN_TIMEOUT_S)
    if joining.is_alive():
        raise FleetRunError(f"the Ray cluster at {address} did not answer within {JOIN_TIMEOUT_S:g} s")
    if failed:
        raise FleetRunError(f"cannot join the Ray cluster at {address}: {_line(failed[0])}") from failed[0]


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Ray's driver prints what the cluster tells it (`(raylet) Raylet is terminated...` when a node
    dies) on standard output, from its own threads: while Ray runs, file descriptor 1 is stderr, so
    stdout carries the JSON or JUnit report alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _ask(ray: Any, python: str | None, deep: bool, timeout: float) -> list[Answer]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = ray.nodes()
    names = node_names(nodes)
    # num_cpus=0: a node busy training has no free CPU, and the check must not queue behind the job;
    # no retries: a node that failed once is reported, not tried again until the deadline
    task = ray.remote(num_cpus=0, max_retries=0)(check_here)
    asked: dict[Any, dict[str, Any]] = {}
    answers: dict[str, Answer] = {}
    for node in nodes:
        node_id = node["NodeID"]
        if not node.get("Alive"):
            answers[node_id] = Answer(
                names[node_id],
                f"ray node {node_id}",
                None,
                finding(FLEET_NODE_DEAD, f"Ray lists node {names[node_id]} as dead: no check ran there"),
            )
            continue
        strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
        asked[task.options(scheduling_strategy=strategy).remote(python, deep, timeout)] = node
    waiting = list(asked)
    deadline = time.monotonic() + timeout + START_GRACE_S
    while waiting and (left := deadline - time.monotonic()) > 0:
        done, waiting = ray.wait(waiting, num_returns=1, timeout=left)
        for ref in done:
            node = asked[ref]
            answers[node["NodeID"]] = _answer(ray, ref, names[node["NodeID"]], node["NodeID"], timeout)
    for ref in waiting:
        ray.cancel(ref, force=True)
        node_id = asked[ref]["NodeID"]
        answers[node_id] = Answer(
            names[node_id],
            f"ray node {node_id}",
            None,
            finding(
                FLEET_NODE_TIMEOUT,
                f"node {names[node_id]} did not answer within {timeout:g} s (+{START_GRACE_S:g} s to start): cancelled",
            ),
        )
    return [answers[n["NodeID"]] for n in nodes]


def node_names(nodes: list[dict[str, Any]]) -> dict[str, str]:
    """Each node by its hostname, with its Ray node ID's start where hostnames repeat (several
    raylets on one machine, containers that share a name)."""
    hosts = [str(n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or "node") for n in nodes]
    return {
        n["NodeID"]: host if hosts.count(host) == 1 else f"{host}:{n['NodeID'][:8]}"
        for n, host in zip(nodes, hosts, strict=True)
    }


def _answer(ray: Any, ref: Any, name: str, node_id: str, timeout: float) -> Answer:
    where = f"ray node {node_id}"
    try:
        said = ray.get(ref)
    except ray.exceptions.RayTaskError as error:  # the task ran and raised: attn-doctor missing there
        return Answer(name, where, None, finding(FLEET_NODE_CHECK_FAILED, f"{name}: {_line(error.cause)}"))
    except ray.exceptions.RayError as error:  # the node or its worker went away
        title = f"node {name} was lost while its check ran: {type(error).__name__}"
        return Answer(name, where, None, finding(FLEET_NODE_UNREACHABLE, title, (_line(error),)))
    if said.get("timeout"):
        title = f"the check on node {name} did not finish within {timeout:g} s: stopped"
        return Answer(name, where, None, finding(FLEET_NODE_TIMEOUT, title))
    if said["returncode"] not in (0, 1):
        why = _line(said["stderr"]) or f"exit code {said['returncode']}"
        return Answer(name, where, None, finding(FLEET_NODE_CHECK_FAILED, f"the check on {name} failed: {why}"))
    try:
        return Answer(name, where, _facts(_json(said["stdout"]), f"the report of node {name}"))
    except FleetInputError as error:
        return Answer(name, where, None, finding(FLEET_NODE_CHECK_FAILED, str(error)))


def _json(text: str) -> Any:
    if len(text) > MAX_REPORT_BYTES:
        raise FleetInputError("the check's output is over the size of a report")
    try:
        return parse_json(text, "the check's output")
    except InputError as error:
        raise FleetInputError(str(error)) from error


def _line(error: object) -> str:
    """The one line of an error (or of a stderr) that says why: its last non-empty one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__
