"""Write tests/fixtures/machines/*.json: the GPU generations the recommendation is tested on.

Each is the real H100 report (tests/fixtures/h100-check.json, recorded on the machine) with its
GPUs, driver and torch build replaced by those of another machine, so the software side stays
a real reading. They say so in their "derived_from" field.

    python scripts/make_machine_fixtures.py
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from attn_doctor.facts.given import given_gpu
from attn_doctor.facts.model import SCHEMA, Driver, Facts, Torch, to_data
from attn_doctor.facts.saved import load_facts

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"

# name -> (GPUs as (product name, --gpu spec), torch build)
MACHINES = {
    "t4": ([("Tesla T4", "T4")], "cuda"),
    "a100": ([("NVIDIA A100-SXM4-80GB", "A100")], "cuda"),
    "a10": ([("NVIDIA A10", "A10")], "cuda"),
    "l4": ([("NVIDIA L4", "L4")], "cuda"),
    "h100": ([("NVIDIA H100 80GB HBM3", "H100")], "cuda"),
    "b200": ([("NVIDIA B200", "B200")], "cuda"),
    "rtx5090": ([("NVIDIA GeForce RTX 5090", "RTX 5090")], "cuda"),
    "rtx3090": ([("NVIDIA GeForce RTX 3090", "RTX 3090")], "cuda"),
    "mixed-h100-a100": ([("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA A100-SXM4-80GB", "A100")], "cuda"),
    "mi300x": ([("AMD Instinct MI300X", "MI300X")], "rocm"),
    "mi250": ([("AMD Instinct MI250X", "MI250X")], "rocm"),
    "cpu": ([], "cpu"),
}


def machine(base: Facts, gpus: list[tuple[str, str]], build: str) -> Facts:
    made = tuple(
        dataclasses.replace(given_gpu(spec), index=i, physical_index=i, name=name)
        for i, (name, spec) in enumerate(gpus)
    )
    assert base.torch is not None
    torch: Torch = base.torch
    driver: Driver = base.driver
    if build == "rocm":
        torch = dataclasses.replace(torch, version="2.11.0+rocm6.4", cuda=None, hip="6.4.43482")
        driver = Driver(
            nvidia_status="nvml-library-missing",
            nvidia_detail="nvmlInit: NVML Shared Library Not Found",
            rocm_version="6.4.1-120",
        )
    elif build == "cpu":
        torch = dataclasses.replace(torch, version="2.11.0+cpu", cuda=None)
        driver = Driver(nvidia_status="nvml-library-missing", nvidia_detail="nvmlInit: NVML Shared Library Not Found")
    return dataclasses.replace(base, gpus=made, driver=driver, torch=torch, hostname=f"{build}-machine")


def main() -> None:
    base = load_facts(FIXTURES / "h100-check.json")
    for name, (gpus, build) in MACHINES.items():
        data = {
            "schema": SCHEMA,
            "derived_from": "tests/fixtures/h100-check.json (real H100), GPUs/torch replaced",
            **to_data(machine(base, gpus, build)),
        }
        (FIXTURES / "machines" / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote machines/{name}.json")


if __name__ == "__main__":
    main()
