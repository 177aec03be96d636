"""FA3's place on Hopper follows the H100 measurement (tests/fixtures/h100-bench-five-gpu.json, the
GPU's time at every shape): ahead of SDPA at every sequence length; Axolotl selects it only by its
own attn_implementation."""

from __future__ import annotations

import json

from attn_doctor.facts.saved import load_facts
from attn_doctor.registry.backends import by_name
from attn_doctor.rules.ranking import ranking
from attn_doctor.workload import Workload
from tests.conftest import FIXTURES


def order(seq_len: int | None) -> list[str]:
    gpu = load_facts(FIXTURES / "h100-check.json").gpus[0]
    return [b.name for b in ranking(gpu, Workload(seq_len=seq_len))]


def test_fa3_ranks_ahead_of_sdpa_at_every_length() -> None:
    for seq_len in (1024, 8192, None):
        ranked = order(seq_len)
        assert ranked.index("fa3") < ranked.index("sdpa"), seq_len


def test_the_measurement_behind_it() -> None:
    """1k tokens included: the bench that put SDPA first there (h100-bench-fa3.json, FA3 0.68x SDPA at
    4x1024x16x128) timed the host; timed on the GPU, FA3 ran 1.16x SDPA there."""
    measured = json.loads((FIXTURES / "h100-bench-five-gpu.json").read_text())
    rate = {(t["backend"], t["shape"], t["mode"]): t["tflops"] for t in measured["timings"]}
    for shape in {shape for _, shape, _ in rate}:
        assert rate[("fa3", shape, "fwd+bwd")] > 1.1 * rate[("sdpa", shape, "fwd+bwd")], shape
    old = json.loads((FIXTURES / "h100-bench-fa3.json").read_text())
    host_timed = {(t["backend"], t["shape"], t["mode"]): t["tflops"] for t in old["timings"]}
    assert host_timed[("fa3", "4x1024x16x128", "fwd+bwd")] < host_timed[("sdpa", "4x1024x16x128", "fwd+bwd")]


def test_axolotl_selects_fa3_only_by_its_own_line() -> None:
    fa3 = by_name()["fa3"]
    assert fa3.axolotl == "attn_implementation: flash_attention_3"
    assert any("never picks FA3 by itself" in c for c in fa3.caveats)


def test_the_hopper_order_follows_the_five_backend_bench() -> None:
    """h100-bench-five-gpu.json, one run, the GPU's time: at every standard shape FA3 and FA4 at
    1.12-1.29x SDPA, within 10% of each other; FA2 behind SDPA. Without a bench of its own, a Hopper
    machine gets that order at every length (FA4 first of the two: Axolotl picks it by itself)."""
    measured = json.loads((FIXTURES / "h100-bench-five-gpu.json").read_text())
    rate = {(t["backend"], t["shape"]): t["tflops"] for t in measured["timings"] if t["mode"] == "fwd+bwd"}
    shapes = {shape for _, shape in rate}
    for shape in shapes:
        assert rate[("fa2", shape)] < rate[("sdpa", shape)]
        assert rate[("fa3", shape)] > 1.1 * rate[("sdpa", shape)] and rate[("fa4", shape)] > 1.1 * rate[("sdpa", shape)]
        assert abs(rate[("fa3", shape)] / rate[("fa4", shape)] - 1) < 0.11
    for seq_len in (1024, 8192):
        ranked = [name for name in order(seq_len) if name in ("fa2", "fa3", "fa4", "sdpa")]
        assert ranked == ["fa4", "fa3", "sdpa", "fa2"]
    b200 = load_facts(FIXTURES / "machines" / "b200.json").gpus[0]  # not measured: FA2 stays ahead of SDPA
    on_b200 = [b.name for b in ranking(b200, Workload())]
    assert on_b200.index("fa2") < on_b200.index("sdpa")
