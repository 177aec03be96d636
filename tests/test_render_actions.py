"""What install tells after it ran: everything else it changed (seen: setuptools 65 -> 84 with FA4)."""

from __future__ import annotations

import dataclasses

from attn_doctor.facts.model import Installed
from attn_doctor.facts.saved import load_facts
from attn_doctor.render.actions import also_changed
from tests.conftest import FIXTURES


def test_an_install_names_what_else_it_added_upgraded_or_removed() -> None:
    h100 = load_facts(FIXTURES / "h100-check-requirements.json")
    before = dataclasses.replace(h100, installed=(Installed("setuptools", "65.5.0"), Installed("six", "1.16.0")))
    after = dataclasses.replace(
        h100,
        installed=(
            Installed("setuptools", "84.0.0"),
            Installed("flash-attn-4", "4.0.0b36"),
            Installed("einops", "0.8.2"),
        ),
    )
    assert also_changed(before, after, "flash-attn-4") == [
        "Also changed by the install (undo takes these back too):",
        "  einops: not installed -> 0.8.2",
        "  setuptools: 65.5.0 -> 84.0.0",
        "  six: 1.16.0 -> removed",
    ]
    assert also_changed(before, before, "flash-attn-4") == []
