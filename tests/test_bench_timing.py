"""`bench`'s timing (trials/kernel.py median_ms) on a simulated GPU: the H100 is absent here, so a
GPU and its host are modelled with the figures recorded on it (tests/fixtures/h100-bench-regimes.txt):
each call costs the host some time to issue and the GPU some time to run, the GPU runs what is
queued in order, and CUDA events read the GPU's clock. Host-bound (FA2 fwd+bwd at 4x1024x16x64:
the host issued calls at 41 TFLOP/s, the GPU ran them at 157 from a CUDA graph), `bench` must read
the GPU's time, not the host's, and the GPU must never wait for the host inside a timed batch;
GPU-bound (even where the host needs half the GPU's time, FA3's fwd at 4x4096x16x128) no spin
must be queued, whose idle time let the H100's clocks run a short batch 14% fast."""

from __future__ import annotations

import types
from typing import Any

import pytest

from attn_doctor.trials import kernel

FA2_1K_FLOPS = 4 * 4 * 16 * 1024 * 1024 * 64 * 0.5 * 3.5  # fwd+bwd, causal (trials/bench.py Shape.flops)
LOAD_MS = 5.0  # the host's cost of a kernel's first launch (lazy module loading)
CYCLES_PER_MS = 1_980_000  # an H100's SM clock
FLUSH_MS = 0.08  # 256 MB zeroed at ~3 TB/s
LAUNCH_MS = 0.004  # the host's cost of a flush, a spin or an event record


class SimulatedGpu:
    """torch as median_ms uses it: torch.cuda.{Event, synchronize, _sleep}, torch.empty(...).zero_(),
    torch.int32, and a perf_counter, over one clock in milliseconds. Every piece of GPU work is
    logged with how long the GPU stood idle before it."""

    int32 = "int32"

    def __init__(self, host_ms: float, gpu_ms: float, waits: bool = False) -> None:
        self.host_ms, self.gpu_ms, self.waits = host_ms, gpu_ms, waits
        self.now = 0.0  # the host's clock
        self.free = 0.0  # when the GPU has run everything queued
        self.log: list[tuple[str, float]] = []  # (what, the GPU's idle time before it)
        self.loaded = False
        self.cuda = types.SimpleNamespace(Event=self._event, synchronize=self._synchronize, _sleep=self._sleep)

    def _queue(self, what: str, gpu_ms: float) -> float:
        began = max(self.now, self.free)
        self.log.append((what, began - self.free))
        self.free = began + gpu_ms
        return self.free

    def _synchronize(self) -> None:
        self.now = max(self.now, self.free)
        self.log.append(("sync", 0.0))

    def _event(self, enable_timing: bool = False) -> Any:
        gpu = self

        class Event:
            stamp = 0.0

            def record(self) -> None:
                gpu.now += LAUNCH_MS
                self.stamp = max(gpu.now, gpu.free)

            def query(self) -> bool:
                return self.stamp <= gpu.now

            def elapsed_time(self, end: Any) -> float:
                return float(end.stamp - self.stamp)

        return Event()

    def _buffer(self, *args: Any, **kwargs: Any) -> Any:
        gpu = self

        class Buffer:
            def zero_(self) -> None:
                gpu.now += LAUNCH_MS
                gpu._queue("flush", FLUSH_MS)

        return Buffer()

    empty = _buffer

    def _sleep(self, cycles: int) -> None:
        if not self.loaded:
            self.now += LOAD_MS
            self.loaded = True
        self.now += LAUNCH_MS
        self._queue("spin", cycles / CYCLES_PER_MS)

    def spins(self) -> list[float]:
        return [idle for what, idle in self.log if what == "spin"]

    def step(self) -> None:
        self.now += self.host_ms
        self._queue("call", self.gpu_ms)
        if self.waits:  # a call that synchronises with the GPU inside (reads a result back)
            self.now = max(self.now, self.free)

    def perf_counter(self) -> float:
        return self.now / 1000

    def batches(self) -> list[list[tuple[str, float]]]:
        """What was queued between synchronisations, for those that start with a spin."""
        runs: list[list[tuple[str, float]]] = [[]]
        for entry in self.log:
            if entry[0] == "sync":
                runs.append([])
            else:
                runs[-1].append(entry)
        return [run for run in runs if run and run[0][0] == "spin" and any(what == "call" for what, _ in run)]


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(host_ms: float, gpu_ms: float, waits: bool = False) -> SimulatedGpu:
        gpu = SimulatedGpu(host_ms, gpu_ms, waits)
        monkeypatch.setattr(kernel, "time", types.SimpleNamespace(perf_counter=gpu.perf_counter))
        monkeypatch.setattr(kernel, "_SPIN_CYCLES_PER_MS", [])  # calibrated afresh, as in a new process
        return gpu

    return make


def busy_throughout(batch: list[tuple[str, float]]) -> bool:
    """Once the spin has started, the GPU never waited for the host."""
    return all(idle == 0.0 for _, idle in batch[1:])


def test_a_host_bound_call_is_timed_on_the_gpu(simulated: Any) -> None:
    host_ms, gpu_ms = FA2_1K_FLOPS / 41e9, FA2_1K_FLOPS / 157e9  # 0.92 ms to issue, 0.24 ms to run
    gpu = simulated(host_ms, gpu_ms)
    measured, host_bound = kernel.timed_ms(gpu, gpu.step, "cuda", 3, 10)
    assert measured == pytest.approx(gpu_ms, rel=0.05) and host_bound  # events around each call would read ~0.93 ms
    batches = gpu.batches()  # the first batch, unspun, timed the host: timed again behind spins
    assert len(batches) > 3 and all(busy_throughout(batch) for batch in batches)


def test_a_spin_the_host_outruns_is_lengthened(simulated: Any) -> None:
    """The host slows down once the spin is sized (a build on the same CPUs, as on the H100 while
    SageAttention compiled): a batch whose spin ended before its last call was queued is timed again."""
    gpu = simulated(0.3, 0.05)
    spin = gpu._sleep

    def slowing(cycles: int) -> None:
        if len(gpu.spins()) == 2:  # the calibration's two spins done: the first batch's spin is sized
            gpu.host_ms *= 5
        spin(cycles)

    gpu.cuda._sleep = slowing
    assert kernel.median_ms(gpu, gpu.step, "cuda", 3, 10) == pytest.approx(0.05, rel=0.05)
    kept = [batch for batch in gpu.batches() if busy_throughout(batch)]
    assert len(kept) < len(gpu.batches())  # one outran its spin, and was timed again


@pytest.mark.parametrize(
    ("host_ms", "gpu_ms"),
    [(0.05, 1.9), (0.225, 0.45)],  # SDPA fwd 4x8192x16x128; FA3 fwd 4x4096x16x128 (bench read it 14% fast spun)
)
def test_a_gpu_bound_call_is_timed_without_a_spin(simulated: Any, host_ms: float, gpu_ms: float) -> None:
    gpu = simulated(host_ms, gpu_ms)
    measured, host_bound = kernel.timed_ms(gpu, gpu.step, "cuda", 3, 10)
    assert measured == pytest.approx(gpu_ms, rel=0.01) and not host_bound
    assert gpu.spins() == []


def test_a_call_that_waits_on_the_gpu_is_timed_as_do_bench_times_it(simulated: Any) -> None:
    """It is never ahead of the host, however long the spin: after SPIN_RETRIES the batch is taken
    as it is, not timed again without end."""
    gpu = simulated(0.3, 0.1, waits=True)
    measured = kernel.median_ms(gpu, gpu.step, "cuda", 3, 10)
    assert 0.1 <= measured <= 0.3 + 0.1 + FLUSH_MS
    assert len(gpu.spins()) <= 1 + 1 + kernel.SPIN_RETRIES + 10  # calibration, then at most 10 batches


def test_the_spin_is_calibrated_past_the_first_launchs_load(simulated: Any) -> None:
    """The first launch of the spin kernel loads it on the host; timed inside the calibration's
    events it made every spin ~5x too short, and host-bound calls read the host again."""
    gpu = simulated(0.9, 0.24)
    kernel._spin(gpu, 1.0)
    assert kernel._SPIN_CYCLES_PER_MS[0] == pytest.approx(CYCLES_PER_MS, rel=0.01)
    assert gpu.free - gpu.now == pytest.approx(1.0, rel=0.01)  # the spin asked for is queued
