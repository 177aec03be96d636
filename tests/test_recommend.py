"""The recommendation, table-driven over the machine fixtures and workloads; workload files
(Hugging Face config.json, Axolotl YAML), including hostile ones; an Axolotl config's problems."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from attn_doctor.facts.collect import collect
from attn_doctor.facts.model import Package
from attn_doctor.facts.saved import load_facts
from attn_doctor.registry.backends import fa4_accepts
from attn_doctor.report import CheckRequest, judge
from attn_doctor.rules.ranking import ranking
from attn_doctor.workload import Workload, axolotl_workload, model_head_dims
from tests.conftest import FIXTURES, RealPackages, RecordedNvml, Venv, h100_recording, run

MACHINES = FIXTURES / "machines"


def best(machine: str, work: Workload) -> tuple[str, str]:
    """(what to use now, what would be best here): none of these machines has FA installed."""
    report = judge(load_facts(MACHINES / f"{machine}.json"), CheckRequest(workload=work))
    chosen = report.recommendation
    assert chosen is not None
    return chosen.backend, chosen.better or chosen.backend


TRAIN = Workload(training="full")
INFER = Workload(training="inference")


@pytest.mark.parametrize(
    ("machine", "work", "expected"),
    [
        ("t4", Workload(), "xformers"),
        ("t4", INFER, "xformers"),  # SageAttention has no sm_75 kernels
        ("a100", Workload(), "fa2"),
        ("a100", INFER, "sage"),
        ("a10", Workload(), "fa2"),
        ("l4", TRAIN, "fa2"),
        ("h100", Workload(), "fa4"),
        ("h100", TRAIN, "fa4"),
        ("h100", INFER, "fa4"),  # measured forward there: FA4 1.02-1.13x SDPA from 4k, SageAttention 2 0.27-0.88x
        ("h100", Workload(seq_len=1024), "fa4"),  # measured as the GPU's time: FA4 1.12-1.22x SDPA at 1k tokens
        ("h100", Workload(seq_len=8192), "fa4"),
        ("h100", Workload(head_dim=192, head_dim_v=128), "fa4"),  # SM90 takes 8..256
        ("h100", Workload(head_dim=512, head_dim_v=512), "sdpa"),  # over FA4's SM90 and FA2's 256
        ("b200", Workload(), "fa4"),
        ("b200", Workload(head_dim=256, head_dim_v=128), "fa2"),  # not a shape FA4 takes on SM100
        ("b200", Workload(head_dim=192, head_dim_v=128), "fa4"),
        ("b200", INFER, "fa4"),  # no SageAttention 2 kernels for sm_100
        ("rtx5090", Workload(), "fa2"),  # Axolotl uses FA4 on majors 9-11 only
        ("rtx5090", INFER, "sage"),
        ("mi300x", Workload(), "fa2"),
        ("mi250", TRAIN, "fa2"),
        ("cpu", Workload(), "sdpa"),
        ("mixed-h100-a100", Workload(), "fa2"),  # judged for the A100, the oldest
    ],
)
def test_recommendation_table(machine: str, work: Workload, expected: str) -> None:
    now, ideal = best(machine, work)
    assert ideal == expected
    assert now == "sdpa"  # the fixtures have no FlashAttention installed: SDPA is what runs today


def test_sageattention_is_last_for_inference_on_hopper_and_first_elsewhere() -> None:
    """Forward only on the H100, SageAttention 2 ran at 0.13-0.89x SDPA (h100-bench-sage2.json)."""
    h100, a100 = (load_facts(MACHINES / f"{m}.json").gpus[0] for m in ("h100", "a100"))
    assert ranking(h100, INFER)[-1].name == "sage"
    assert ranking(a100, INFER)[0].name == "sage"
    assert "sage" not in [b.name for b in ranking(h100, TRAIN)]  # it has no backward


def test_a_usable_backend_is_recommended_and_a_better_one_named() -> None:
    """The real H100 with FA2 installed over FA4: both broken, so SDPA now; FA4 is what to get."""
    report = judge(load_facts(FIXTURES / "h100-fa2-over-fa4.json"))
    assert report.recommendation is not None
    assert (report.recommendation.backend, report.recommendation.better) == ("sdpa", "fa4")
    assert "FlashAttention 4 would be first: 20 of flash-attn-4's files" in " ".join(report.recommendation.reasons)


@pytest.mark.parametrize(
    ("major", "dims", "accepted"),
    [
        (9, (128, 128), True),
        (9, (256, 256), True),
        (9, (260, 260), False),
        (9, (100, 100), False),
        (10, (128, 128), True),
        (10, (192, 128), True),
        (10, (64, 512), True),
        (10, (256, 256), True),
        (10, (256, 128), False),
        (11, (160, 160), False),
        (8, (512, 512), None),
        (12, (300, 300), None),
    ],
)
def test_fa4_head_dim_rule(major: int, dims: tuple[int, int], accepted: bool | None) -> None:
    assert fa4_accepts(major, *dims) is accepted


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data) if path.suffix == ".json" else str(data))
    return path


def test_model_head_dims(tmp_path: Path) -> None:
    llama = write(tmp_path / "llama.json", {"hidden_size": 4096, "num_attention_heads": 32})
    gemma = write(tmp_path / "gemma.json", {"hidden_size": 3072, "num_attention_heads": 16, "head_dim": 256})
    mla = write(tmp_path / "dsv3.json", {"qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128})
    folder = tmp_path / "vlm"
    folder.mkdir()
    write(folder / "config.json", {"text_config": {"hidden_size": 2048, "num_attention_heads": 16}})
    assert model_head_dims(llama) == (128, 128)
    assert model_head_dims(gemma) == (256, 256)
    assert model_head_dims(mla) == (192, 128)
    assert model_head_dims(folder) == (128, 128)


def test_head_dims_as_transformers_builds_the_layers(tmp_path: Path) -> None:
    """Gemma 4 (a composite config): 256 on its sliding layers, 512 on its full-attention ones;
    DeepSeek-V3 sets head_dim to the rope part (64), not the attention's 192; a decoder config."""
    gemma4 = write(
        tmp_path / "gemma4.json",
        {"model_type": "gemma4", "text_config": {"head_dim": 256, "global_head_dim": 512, "hidden_size": 5376}},
    )
    dsv3 = write(
        tmp_path / "dsv3.json",
        {"head_dim": 64, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128},
    )
    decoder = write(tmp_path / "t5like.json", {"decoder": {"hidden_size": 1024, "num_attention_heads": 8}})
    assert model_head_dims(gemma4) == (512, 512)
    assert model_head_dims(dsv3) == (192, 128)
    assert model_head_dims(decoder) == (128, 128)


def doctor(*args: str | Path) -> tuple[int, str, str]:
    done = run(sys.executable, "-m", "attn_doctor", *args, check=False)
    return done.returncode, done.stdout, done.stderr


def config_codes(config: Path, *extra: str) -> set[str]:
    _, out, _ = doctor("check", "--facts", FIXTURES / "h100-check.json", "--config", config, "--format", "json", *extra)
    return {f["code"] for f in json.loads(out)["findings"] if f["code"].startswith("config-")}


@pytest.mark.parametrize(
    ("yaml_text", "codes"),
    [
        ("base_model: m\nattn_implementation: sdpa\nsample_packing: true\nadapter: lora\n", set()),
        # no flash-attn there; and the flag itself is deprecated
        ("base_model: m\nflash_attention: true\n", {"config-backend-unavailable", "config-legacy-attention-flag"}),
        ("attn_implementation: sdpa\nflash_attention: true\n", {"config-mixed-attention-keys"}),
        (
            "sdp_attention: true\nxformers_attention: true\n",
            {"config-several-attention-flags", "config-backend-unavailable"},
        ),
        ("s2_attention: true\nsample_packing: true\n", {"config-s2-attention"}),
        ("attn_implementation: flex_attention\n", {"config-flex-without-compile"}),
        ("attn_implementation: flex_attention\ntorch_compile: auto\n", set()),
        (
            "sage_attention: true\n",
            {"config-sage-full-finetune", "config-backend-unavailable", "config-legacy-attention-flag"},
        ),
        ("attn_implementation: s2\n", {"config-unknown-attention"}),
        # a hub kernel: transformers loads it through the `kernels` package, not installed there
        ("attn_implementation: kernels-community/flash-attn3\n", {"config-backend-unavailable"}),
        ("base_model: m\nsome_future_key: [1, 2]\nattn_implementation: sdpa\n", set()),  # unknown keys: left alone
    ],
)
def test_axolotl_config_findings(tmp_path: Path, yaml_text: str, codes: set[str]) -> None:
    assert config_codes(write(tmp_path / "axolotl.yml", yaml_text)) == codes


def test_fa4_head_dims_from_a_config_on_blackwell(tmp_path: Path) -> None:
    """The H100 state with FA4 installed, judged for a B200 and a model with (256, 128) heads."""
    config = write(tmp_path / "axolotl.yml", "flash_attention: true\n")
    _, out, _ = doctor(
        "check",
        "--facts",
        FIXTURES / "h100-fa2-over-fa4.json",
        "--gpu",
        "B200",
        "--head-dim",
        "256,128",
        "--config",
        config,
        "--format",
        "json",
    )
    assert "config-fa4-head-dims" in {f["code"] for f in json.loads(out)["findings"]}


def test_config_and_flags_make_one_workload(tmp_path: Path) -> None:
    config = write(tmp_path / "axolotl.yml", "adapter: qlora\nsequence_len: 1024\nsample_packing: true\n")
    work = axolotl_workload(config)
    assert (work.training, work.seq_len, work.sample_packing) == ("lora", 1024, True)
    # --seq-len on the command line wins over the config's sequence_len
    bench = FIXTURES / "h100-bench-five-gpu.json"
    _, out, _ = doctor(
        "check", "--facts", MACHINES / "h100.json", "--config", config, "--seq-len", "8192", "--bench", bench,
        "--format", "json",
    )  # fmt: skip
    recommendation = json.loads(out)["recommendation"]
    assert recommendation["better"] == "fa4" and "measured here near 8192 tokens" in " ".join(recommendation["reasons"])


BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(12)
)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("axolotl.yml", "flash_attention: yes please\n", "flash_attention must be true or false"),
        ("axolotl.yml", "sequence_len: long\n", "sequence_len must be an integer"),
        ("axolotl.yml", "- a list\n- not a mapping\n", "is a mapping of keys"),
        ("axolotl.yml", "key: [unclosed\n", "is not valid YAML"),
        ("axolotl.yml", BOMB, "YAML aliases; refusing"),
        ("axolotl.yml", "HUGE", "over 1 MiB"),
        ("axolotl.yml", b"\xff\xfe\x00", "is not UTF-8"),
        ("config.json", "{not json", "is not JSON"),
        ("config.json", json.dumps({"hidden_size": "4096", "num_attention_heads": 32}), "hidden_size must be"),
        ("config.json", json.dumps({"vocab_size": 3}), "no head_dim"),
    ],
)
def test_hostile_workload_files_exit_2(tmp_path: Path, name: str, content: str | bytes, message: str) -> None:
    path = tmp_path / name
    if content == "HUGE":  # made here: a 1 MiB parameter would land in PYTEST_CURRENT_TEST, the environment
        content = "a: " + "x" * (1 << 20) + "\n"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    option = "--config" if name.endswith(".yml") else "--model"
    code, out, err = doctor("check", "--facts", FIXTURES / "h100-check.json", option, path)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--head-dim", "big"], "--head-dim 'big'"),
        (["--head-dim", "1,2,3"], "give N or Q,V"),
        (["--torch", "two"], "--torch 'two' is not a version"),
        (["--cuda", "13"], "--cuda '13'"),
    ],
)
def test_bad_workload_flags_exit_2(args: list[str], message: str) -> None:
    code, _, err = doctor("check", "--facts", FIXTURES / "h100-check.json", *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_explain_a_backend() -> None:
    code, out, _ = doctor("explain", "sage")
    assert code == 0 and "trains: no (inference only)" in out
    assert "https://github.com/thu-ml/SageAttention/blob/v2.2.0/setup.py" in out  # a source a user can open


def test_every_backend_rule_has_a_source() -> None:
    from attn_doctor.registry.backends import BACKENDS

    assert all(b.source and b.axolotl and b.install for b in BACKENDS)


def test_a_machine_you_do_not_have() -> None:
    """--gpu/--torch/--cuda: what would you recommend on an H100 with torch 2.8 and CUDA 12.8?"""
    code, out, _ = doctor(
        "check",
        "--facts",
        MACHINES / "cpu.json",
        "--gpu",
        "H100",
        "--torch",
        "2.8.0",
        "--cuda",
        "12.8",
        "--format",
        "json",
    )
    data = json.loads(out)
    assert data["torch"]["version"] == "2.8.0" and data["gpus"][0]["compute_capability"] == "9.0"
    assert data["recommendation"]["better"] == "fa4" and code == 0
    assert dataclasses.is_dataclass(load_facts(MACHINES / "cpu.json"))


def test_old_rocm_and_fa4_without_hopper_backward() -> None:
    mi300 = load_facts(MACHINES / "mi300x.json")
    assert mi300.torch is not None
    old_rocm = dataclasses.replace(mi300, torch=dataclasses.replace(mi300.torch, hip="5.7.31921"))
    report = judge(old_rocm, CheckRequest(workload=TRAIN))
    assert report.recommendation is not None and report.recommendation.better is None  # SDPA, and nothing better
    assert "FlashAttention 2 needs ROCm >= 6.0" in " ".join(report.recommendation.reasons)
    # an FA4 installed without its Hopper backward: it cannot train there; FA4 4.0.0b36 can
    h100 = load_facts(MACHINES / "h100.json")
    fa4 = Package("flash-attn-4", "4.0.0b3", "/x/flash_attn_4-4.0.0b3.dist-info", "/x")
    old_fa4 = dataclasses.replace(h100, packages=(*h100.packages, fa4), fa4_sm90_backward=False)
    trained = judge(old_fa4, CheckRequest(workload=TRAIN)).recommendation
    inferred = judge(old_fa4, CheckRequest(workload=Workload())).recommendation
    assert trained is not None and (trained.backend, trained.better) == ("sdpa", "fa4")
    assert "no SM90 backward kernel" in " ".join(trained.reasons)
    assert inferred is not None and inferred.backend == "fa4"


def test_the_real_fa4_wheel_has_the_hopper_backward(venv: Venv, real: RealPackages) -> None:
    """4.0.0b36's wheel ships flash_bwd_sm90.py (the upstream doc said the pip package had none)."""
    venv.install(real.fa4_wheel)
    assert collect(str(venv.python), nvml=RecordedNvml(h100_recording())).fa4_sm90_backward is True
    venv.uninstall("flash-attn-4")
    assert collect(str(venv.python), nvml=RecordedNvml(h100_recording())).fa4_sm90_backward is None


def test_check_reads_head_dims_from_the_configs_local_base_model(tmp_path: Path) -> None:
    """`install fa3 --config` read the head dims of a config's local base_model and `check --config`
    did not: a model with head dim 512 was told FA4 would be better on the H100, though FA4 takes
    8-256 there. One workload now, for both; a base_model that is a hub id is not read, and a local
    one with a broken config.json is one line, exit 2."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 8192, "num_attention_heads": 16, "head_dim": 512}))
    local, hub = tmp_path / "local.yml", tmp_path / "hub.yml"
    local.write_text(f"base_model: {model}\nattn_implementation: flash_attention_2\n")
    hub.write_text("base_model: meta-llama/Llama-3.1-8B\nattn_implementation: flash_attention_2\n")

    def better(config: Path) -> str | None:
        code, out, err = doctor(
            "check", "--facts", FIXTURES / "h100-check.json", "--config", config, "--format", "json"
        )
        assert code in (0, 1), err
        return json.loads(out)["recommendation"]["better"]  # type: ignore[no-any-return]

    assert better(hub) == "fa4"
    assert better(local) is None  # 512 is over what FA4 (and FA2) take on the H100
    (model / "config.json").write_text("{broken")
    code, _, err = doctor("check", "--facts", FIXTURES / "h100-check.json", "--config", local)
    assert code == 2 and err.count("\n") == 1 and f"base_model of {local}" in err


@pytest.mark.parametrize("repo", ["kernels-community/flash-attn3", "kernels-community/flash-attn2"])
def test_a_hub_kernel_needs_the_kernels_package(tmp_path: Path, repo: str) -> None:
    """attn_implementation: kernels-community/flash-attn3 (axolotl PR #3602): without `kernels` the model
    fails to load, and check says so with the install; with it, nothing stands in the way."""
    import dataclasses

    from attn_doctor.facts.model import Installed
    from attn_doctor.report import CheckRequest

    config = tmp_path / "axolotl.yaml"
    config.write_text(f"base_model: m\nattn_implementation: {repo}\nadapter: lora\n")
    facts = load_facts(FIXTURES / "h100-check.json")
    work = axolotl_workload(config)
    [missing] = [f for f in judge(facts, CheckRequest(workload=work)).findings if f.code.startswith("config-")]
    assert "through the `kernels` package, which is not installed" in missing.title
    assert "pip install 'transformers[kernels]'" in missing.fix[0]
    with_kernels = dataclasses.replace(facts, installed=(*facts.installed, Installed("kernels", "0.11.0")))
    found = [f for f in judge(with_kernels, CheckRequest(workload=work)).findings if f.code.startswith("config-")]
    assert [f.code for f in found] == ["config-hub-kernel-not-cached"]  # fetched at load: said, not an error


@pytest.mark.parametrize(
    ("repo", "gpu", "unfit"),
    [
        ("kernels-community/flash-attn3", "B200", "carries no code for GPU 0 (B200 (given), sm_100)"),
        ("kernels-community/flash-attn3", "H100", ""),
        ("kernels-community/flash-attn3@v2", "A100", ""),  # its sm80 build, a revision named
        ("kernels-community/flash-attn2", "T4", "carries no code for GPU 0 (T4 (given), sm_75)"),
    ],
)
def test_a_hub_kernel_is_judged_by_the_gpus_its_builds_carry(tmp_path: Path, repo: str, gpu: str, unfit: str) -> None:
    """kernels-community/flash-attn3 is built for sm_80 and sm_90a only (its build.toml): on a B200
    the model loads and the first attention call fails, whether `kernels` is installed or not, so
    that is what is said (not the install of `kernels`)."""
    config = write(tmp_path / "axolotl.yml", f"base_model: m\nattn_implementation: {repo}\nadapter: lora\n")
    _, out, _ = doctor(
        "check", "--facts", FIXTURES / "h100-check.json", "--gpu", gpu, "--config", config, "--format", "json"
    )
    [found] = [f for f in json.loads(out)["findings"] if f["code"] == "config-backend-unavailable"]
    if unfit:
        assert unfit in found["title"] and found["fix"] == ["use attn_implementation: sdpa"], found
    else:
        assert "`kernels` package, which is not installed" in found["title"], found  # what stands in the way


def test_the_hub_kernel_for_fa3_needs_the_torch_its_builds_are_made_for(tmp_path: Path) -> None:
    config = write(tmp_path / "axolotl.yml", "base_model: m\nattn_implementation: kernels-community/flash-attn3\n")
    _, out, _ = doctor(
        "check",
        "--facts",
        FIXTURES / "h100-check.json",
        "--torch",
        "2.8.0",
        "--cuda",
        "12.8",
        "--config",
        config,
        "--format",
        "json",
    )
    [found] = [f for f in json.loads(out)["findings"] if f["code"] == "config-backend-unavailable"]
    assert "the Hub builds kernels-community/flash-attn3 for torch 2.9 on; this is torch 2.8.0" in found["title"]
