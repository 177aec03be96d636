"""A bench run's figures: TFLOP/s per backend, shape and mode on one machine. Measured facts:
`attn-doctor bench` writes them, `check --bench FILE` reads them back to rank the backends as
they ran here rather than as they were expected to."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from attn_doctor.facts.model import FactsError, from_data, to_data
from attn_doctor.inputs import MIB, InputError, read_json

BENCH_SCHEMA = "attn-doctor/bench-1"
MAX_BENCH_BYTES = 1 * MIB  # a bench file holds a few dozen timings
SHAPE = re.compile(r"\d+x\d+x\d+x\d+")  # Shape.label, B x S x H x D: `fastest` reads S from it


@dataclass(frozen=True)
class Timing:
    backend: str
    shape: str  # Shape.label
    mode: str  # "fwd" | "fwd+bwd"
    ms: float
    tflops: float
    # the host issued these calls no faster than the GPU ran them: `ms` is the GPU's time, taken with
    # the calls queued ahead; a training step made of such calls runs at the host's pace
    host_bound: bool = False


@dataclass(frozen=True)
class Measured:
    """A bench run: what `check --bench` reads."""

    gpu: str  # the GPU's name as NVML gives it
    compute_capability: str | None
    torch: str | None
    dtype: str
    causal: bool
    timings: tuple[Timing, ...]
    failed: tuple[tuple[str, str], ...] = ()  # (backend, why) of those not timed
    matmul_tflops: float | None = None  # the GPU's bf16 matmul rate, measured in the same run

    def timing(self, backend: str, shape: str, mode: str) -> Timing | None:
        for timing in self.timings:
            if (timing.backend, timing.shape, timing.mode) == (backend, shape, mode):
                return timing
        return None

    def tflops(self, backend: str, shape: str, mode: str) -> float | None:
        timing = self.timing(backend, shape, mode)
        return timing.tflops if timing else None

    def fastest(self, mode: str = "fwd+bwd", seqlen: int | None = None) -> list[tuple[str, float]]:
        """Backends by their mean TFLOP/s over the shapes, fastest first: the shapes closest to
        `seqlen` when given, else all of them."""
        shapes = sorted({t.shape for t in self.timings if t.mode == mode})
        if seqlen is not None and shapes:
            distance = {s: abs(_tokens(s) - seqlen) for s in shapes}
            shapes = [s for s in shapes if distance[s] == min(distance.values())]
        scores = {}
        for backend in {t.backend for t in self.timings}:
            values = [self.tflops(backend, s, mode) for s in shapes]
            if values and all(v is not None for v in values):
                scores[backend] = sum(v for v in values if v is not None) / len(values)
        return sorted(scores.items(), key=lambda item: -item[1])

    def winners(self, backends: set[str], mode: str = "fwd+bwd") -> list[tuple[str, list[tuple[str, float]]]]:
        """Per shape (fewest tokens first, then the smaller head dim), those of `backends` timed
        there, fastest first."""
        shapes = sorted({t.shape for t in self.timings if t.mode == mode}, key=lambda s: (_tokens(s), _head_dim(s)))
        ranked = []
        for shape in shapes:
            timed = [(t.backend, t.tflops) for t in self.timings if (t.shape, t.mode) == (shape, mode)]
            timed = sorted(((b, v) for b, v in timed if b in backends), key=lambda item: -item[1])
            if timed:
                ranked.append((shape, timed))
        return ranked


def _tokens(shape: str) -> int:
    """S of a B x S x H x D label."""
    return int(shape.split("x")[1])


def _head_dim(shape: str) -> int:
    """D of a B x S x H x D label."""
    return int(shape.split("x")[3])


def dumps(measured: Measured) -> str:
    return json.dumps({"schema": BENCH_SCHEMA, **to_data(measured)}, indent=2) + "\n"


def load(path: Path) -> Measured:
    """Raises FactsError with one line that says what is wrong with the file."""
    try:
        data = read_json(path, "--bench", MAX_BENCH_BYTES)
    except InputError as error:
        raise FactsError(str(error)) from error
    if not isinstance(data, dict) or data.get("schema") != BENCH_SCHEMA:
        raise FactsError(f'{path} is not an attn-doctor bench file (no "schema": "{BENCH_SCHEMA}")')
    try:
        measured = from_data(Measured, data)
    except FactsError as error:
        raise FactsError(f"{path}: {error}") from error
    odd = next((t.shape for t in measured.timings if not SHAPE.fullmatch(t.shape)), None)
    if odd is not None:
        raise FactsError(f"{path}: shape {odd!r} is not B x S x H x D (as in 4x4096x16x128)")
    return measured
