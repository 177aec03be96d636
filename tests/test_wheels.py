"""FA2's prebuilt wheels: the names its setup.py guesses, for the releases whose matrix is known."""

from __future__ import annotations

import pytest

from attn_doctor.registry.wheels import fa2_wheel_name


def test_the_example_from_setup_py() -> None:
    """The example wheel name in FA2's own setup.py (https://github.com/Dao-AILab/flash-attention/blob/v2.8.3/setup.py)."""
    assert (
        fa2_wheel_name("2.8.3", "2.8.0+cu128", "12.8", True, "3.12.3", "x86_64")
        == "flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"
    )


@pytest.mark.parametrize(
    ("fa2", "torch", "cuda", "python", "machine"),
    [
        ("2.8.3", "2.11.0+cu130", "13.0", "3.12", "x86_64"),  # torch >= 2.9 and CUDA 13: none built
        ("2.8.3", "2.8.0+cu128", "12.8", "3.12", "aarch64"),  # x86_64 only
        ("2.8.3", "2.4.0+cu124", "12.4", "3.13", "x86_64"),  # the one excluded pair
        ("2.8.3.post2", "2.8.0+cu128", "12.8", "3.12", "x86_64"),  # post2's assets are not confirmed
        ("2.8.3", "2.8.0+cpu", None, "3.12", "x86_64"),  # CPU torch: setup.py fails outright
        ("2.8.3", "2.8.0+cu128", "12.8", "3.8", "x86_64"),
    ],
)
def test_no_wheel(fa2: str, torch: str, cuda: str | None, python: str, machine: str) -> None:
    assert fa2_wheel_name(fa2, torch, cuda, True, python, machine) is None


def test_post1_and_the_old_abi() -> None:
    assert (
        fa2_wheel_name("2.8.3.post1", "2.6.0+cu126", "12.6", False, "3.10.14", "x86_64")
        == "flash_attn-2.8.3.post1+cu12torch2.6cxx11abiFALSE-cp310-cp310-linux_x86_64.whl"
    )
