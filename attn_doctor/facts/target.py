"""The target interpreter: which one it is, and what the stdlib-only probe reads inside it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from attn_doctor.facts.child import Child, ChildTimeout, run_child
from attn_doctor.facts.locate import TargetError, answer_marker, find_target, start_probe
from attn_doctor.facts.model import (
    FactsError,
    Installed,
    Interpreter,
    Package,
    Resolution,
    Torch,
    from_data,
)
from attn_doctor.registry.backends import distributions, resolved_modules, verified_distributions

# Files above this size are compared by size on the fast path; `--deep` hashes them too.
# (FA2's compiled extension alone is ~400 MB: hashing it takes most of a second.)
HASH_LIMIT_BYTES = 4 << 20
PROBE_TIMEOUT_S = 60.0


def probe_request(deep: bool) -> bytes:
    """What the probe reads on standard input: the distributions and modules the registry knows."""
    request = {
        "distributions": distributions(),
        "verify": verified_distributions(),
        "modules": resolved_modules(),
        "hash_limit": None if deep else HASH_LIMIT_BYTES,
    }
    return json.dumps(request).encode("utf-8")


def resolve_python(python: str | None) -> str:
    """An absolute path to the target interpreter, or TargetError with one clear line. --python
    takes an interpreter, or an environment's folder (as pip's --python does)."""
    return find_target(python)[0]


def target_prefix(python: str | None) -> str:
    """sys.prefix of the target interpreter: where its repairs are journaled."""
    executable = resolve_python(python)
    marker = answer_marker()
    code = f"import json, sys; print(); print({marker!r}); print(json.dumps(sys.prefix))"
    try:
        done = run_child([executable, "-B", "-c", code], PROBE_TIMEOUT_S)
    except (OSError, ChildTimeout) as error:
        raise TargetError(f"cannot run target interpreter {executable}: {error}") from error
    if done.returncode != 0:
        raise TargetError(f"target interpreter {executable} failed: {done.stderr.strip()[-200:]}")
    try:
        prefix = answer(done.stdout, marker)
    except ValueError as error:
        raise TargetError(f"target interpreter {executable} gave unreadable output: {error}") from error
    if not isinstance(prefix, str):
        raise TargetError(f"target interpreter {executable} gave no sys.prefix")
    return prefix


@dataclass(frozen=True)
class ProbeResult:
    python: Interpreter
    torch: Torch | None
    packages: tuple[Package, ...]
    resolutions: tuple[Resolution, ...]
    torch_problem: str | None
    installed: tuple[Installed, ...] = ()


class RunningProbe:
    """The probe started in the background, so NVML and the toolchain are read meanwhile; or
    taken over from `check`'s head start (`started`: its child and marker)."""

    def __init__(self, python: str, deep: bool, started: tuple[Child, str] | None = None) -> None:
        """`started`: a probe already started and fed the request for `deep`."""
        self.python = python
        if started is not None:
            self._child, self._marker = started
            return
        try:
            self._child, self._marker = start_probe(python)
        except OSError as error:
            raise TargetError(f"cannot run target interpreter {python}: {error.strerror}") from error
        self._child.feed(probe_request(deep))

    def result(self) -> ProbeResult:
        try:
            done = self._child.finish(PROBE_TIMEOUT_S)
        except ChildTimeout as error:
            raise TargetError(f"the probe in {self.python} did not answer in {PROBE_TIMEOUT_S:.0f} s") from error
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise TargetError(f"the probe crashed in {self.python} (exit {done.returncode}): {last}")
        try:
            return parse_probe(answer(done.stdout, self._marker))
        except (ValueError, FactsError, KeyError) as error:
            raise TargetError(f"the probe in {self.python} gave unreadable output: {error}") from error


def answer(stdout: str, marker: str) -> Any:
    """The JSON line after the marker line. Whatever the target printed on its own (a .pth file, a
    sitecustomize, an atexit hook) is above the marker or below the answer, and costs nothing."""
    _, found, after = stdout.rpartition(f"\n{marker}\n")
    if not found:
        raise ValueError(f"no answer in its output ({stdout.strip()[:80]!r})")
    return json.loads(after.partition("\n")[0])


def parse_probe(data: dict[str, Any]) -> ProbeResult:
    torch_data = data.get("torch")
    torch: Torch | None = None
    torch_problem = None
    if torch_data:
        if torch_data.get("error") or not torch_data.get("version"):
            torch_problem = torch_data.get("error") or "torch/version.py has no __version__"
        else:
            torch = from_data(Torch, torch_data)
    return ProbeResult(
        python=from_data(Interpreter, {**data["interpreter"], "markers": data.get("markers")}),
        torch=torch,
        packages=tuple(from_data(Package, d) for d in data["distributions"]),
        resolutions=tuple(from_data(Resolution, r) for r in data["resolutions"]),
        torch_problem=torch_problem,
        installed=tuple(
            Installed(name, version if isinstance(version, str) else None)
            for name, version in sorted((data.get("installed") or {}).items())
        ),
    )
