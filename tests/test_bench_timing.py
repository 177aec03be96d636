"""`bench`'s timing (trials/kernel.py median_ms) on a simulated GPU: the H100 is absent here, so a
GPU and its host are modelled with the figures recorded on it (tests/fixtures/h100-bench-regimes.txt):
each call costs the host some time to issue and the GPU some time to run, the GPU runs what is
queued in order, and CUDA events read the GPU's clock. Host-bound (FA2 fwd+bwd at 4x1024x16x64:
the host issued calls at 41 TFLOP/s, the GPU ran them at 157 from a CUDA graph), `bench` must read
the GPU's time, not the host's; GPU-bound (SDPA fwd at 4x8192x16x128) it must queue no spin, whose
idle time let the clocks run fast there."""

from __future__ import annotations

import types
from typing import Any

import pytest

from attn_doctor.trials import kernel

FA2_1K_FLOPS = 4 * 4 * 16 * 1024 * 1024 * 64 * 0.5 * 3.5  # fwd+bwd, causal (trials/bench.py Shape.flops)
CYCLES_PER_MS = 1_980_000  # an H100's SM clock
LOAD_MS = 5.0  # the host's cost of a kernel's first launch (lazy module loading)
FLUSH_MS = 0.08  # 256 MB zeroed at ~3 TB/s
LAUNCH_MS = 0.004  # the host's cost of a flush or an event record


class SimulatedGpu:
    """torch as median_ms uses it: torch.cuda.{Event, synchronize, _sleep}, torch.empty(...).zero_(),
    torch.int32, and a perf_counter, over one clock in milliseconds."""

    int32 = "int32"

    def __init__(self, host_ms: float, gpu_ms: float) -> None:
        self.host_ms, self.gpu_ms = host_ms, gpu_ms
        self.now = 0.0  # the host's clock
        self.free = 0.0  # when the GPU has run everything queued
        self.spins: list[float] = []
        self.loaded = False
        self.cuda = types.SimpleNamespace(Event=self._event, synchronize=self._synchronize, _sleep=self._sleep)

    def _queue(self, gpu_ms: float) -> float:
        self.free = max(self.now, self.free) + gpu_ms
        return self.free

    def _synchronize(self) -> None:
        self.now = max(self.now, self.free)

    def _sleep(self, cycles: int) -> None:
        if not self.loaded:
            self.now += LOAD_MS
            self.loaded = True
        self.spins.append(cycles / CYCLES_PER_MS)
        self.now += LAUNCH_MS
        self._queue(cycles / CYCLES_PER_MS)

    def _event(self, enable_timing: bool) -> Any:
        gpu = self

        class Event:
            stamp = 0.0

            def record(self) -> None:
                gpu.now += LAUNCH_MS
                self.stamp = gpu._queue(0.0)

            def elapsed_time(self, end: Any) -> float:
                return float(end.stamp - self.stamp)

        return Event()

    def empty(self, *args: Any, **kwargs: Any) -> Any:
        gpu = self

        class Buffer:
            def zero_(self) -> None:
                gpu.now += LAUNCH_MS
                gpu._queue(FLUSH_MS)

        return Buffer()

    def step(self) -> None:
        self.now += self.host_ms
        self._queue(self.gpu_ms)

    def perf_counter(self) -> float:
        return self.now / 1000


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(host_ms: float, gpu_ms: float) -> SimulatedGpu:
        gpu = SimulatedGpu(host_ms, gpu_ms)
        monkeypatch.setattr(kernel, "time", types.SimpleNamespace(perf_counter=gpu.perf_counter))
        monkeypatch.setattr(kernel, "_SPIN_CYCLES_PER_MS", [])  # calibrated afresh, as in a new process
        return gpu

    return make


def test_a_host_bound_call_is_timed_on_the_gpu(simulated: Any) -> None:
    host_ms, gpu_ms = FA2_1K_FLOPS / 41e9, FA2_1K_FLOPS / 157e9  # 0.92 ms to issue, 0.24 ms to run
    gpu = simulated(host_ms, gpu_ms)
    measured = kernel.median_ms(gpu, gpu.step, "cuda", 3, 10)
    assert measured == pytest.approx(gpu_ms, rel=0.05)  # timed by events around each call: ~1.2 ms
    assert len(gpu.spins) > 3  # calibration, the host's own time, then the timed batches


def test_a_gpu_bound_call_is_timed_without_a_spin(simulated: Any) -> None:
    gpu = simulated(0.05, 1.9)
    assert kernel.median_ms(gpu, gpu.step, "cuda", 3, 10) == pytest.approx(1.9, rel=0.01)
    assert len(gpu.spins) == 3  # calibration (2) and the host's own time: none before the batches


def test_the_spin_is_calibrated_past_the_first_launchs_load(simulated: Any) -> None:
    """The first launch of the spin kernel loads it on the host; timed inside the calibration's
    events it made every spin ~5x too short, and host-bound calls read the host again."""
    gpu = simulated(0.9, 0.24)
    kernel._spin(gpu, 1.0)
    assert kernel._SPIN_CYCLES_PER_MS[0] == pytest.approx(CYCLES_PER_MS, rel=0.01)
    assert gpu.spins[-1] == pytest.approx(1.0, rel=0.01)
