"""FA3's place on Hopper follows the H100 measurement (tests/fixtures/h100-bench-fa3.json): ahead
of SDPA from 2k tokens, behind it below; Axolotl selects it only by its own attn_implementation."""

from __future__ import annotations

import json

from attn_doctor.facts.saved import load_facts
from attn_doctor.rules.backends import by_name
from attn_doctor.rules.ranking import ranking
from attn_doctor.workload import Workload
from tests.conftest import FIXTURES


def order(seq_len: int | None) -> list[str]:
    gpu = load_facts(FIXTURES / "h100-check.json").gpus[0]
    return [b.name for b in ranking(gpu, Workload(seq_len=seq_len))]


def test_fa3_ranks_ahead_of_sdpa_for_long_sequences_and_behind_for_short() -> None:
    long, short = order(8192), order(1024)
    assert long.index("fa3") < long.index("sdpa")
    assert short.index("sdpa") < short.index("fa3")


def test_the_measurement_behind_it() -> None:
    measured = json.loads((FIXTURES / "h100-bench-fa3.json").read_text())
    rate = {(t["backend"], t["shape"], t["mode"]): t["tflops"] for t in measured["timings"]}
    for shape in ("4x4096x16x128", "4x8192x16x128"):
        assert rate[("fa3", shape, "fwd+bwd")] > 1.1 * rate[("sdpa", shape, "fwd+bwd")]
    assert rate[("fa3", "4x1024x16x128", "fwd+bwd")] < rate[("sdpa", "4x1024x16x128", "fwd+bwd")]


def test_axolotl_selects_fa3_only_by_its_own_line() -> None:
    fa3 = by_name()["fa3"]
    assert fa3.axolotl == "attn_implementation: flash_attention_3"
    assert any("never picks FA3 by itself" in c for c in fa3.caveats)
