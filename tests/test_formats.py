"""One renderer interface: every command's --format takes the one Format, and a format a result
has no renderer for is refused in one line before anything runs, never printed as text."""

from __future__ import annotations

import sys

import pytest

from attn_doctor.cli import main
from attn_doctor.render.interface import Format, Renderers, UnsupportedFormat, View
from attn_doctor.render.tables import BENCH, CHECK, FLEET, VERIFY
from tests.conftest import FIXTURES


def test_each_table_offers_what_its_command_documents() -> None:
    assert CHECK.offered() == FLEET.offered() == list(Format)
    assert VERIFY.offered() == BENCH.offered() == [Format.text, Format.json, Format.junit]


def test_a_missing_renderer_is_refused_not_replaced_by_text() -> None:
    shown: list[str] = []
    table: Renderers[str] = Renderers("demo", text=lambda result, view: shown.append(result))
    table.of(Format.text)("x", View())
    with pytest.raises(UnsupportedFormat, match=r"^demo has no json output: --format text$"):
        table.of(Format.json)
    assert shown == ["x"]


@pytest.mark.parametrize("command", [["verify"], ["bench"], ["verify", "--python", "/no/such/python"]])
def test_an_unsupported_format_stops_before_anything_runs(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused first: not after minutes of kernels, not with a missing interpreter's error."""
    monkeypatch.setattr(sys, "argv", ["attn-doctor", *command, "--format", "markdown"])
    with pytest.raises(SystemExit) as stopped:
        main()
    said = capsys.readouterr()
    assert stopped.value.code == 2 and said.out == ""
    assert said.err == f"attn-doctor: {command[0]} has no markdown output: --format text, json, junit\n"


def test_check_renders_every_format(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    starts = {Format.text: "GPU", Format.json: "{", Format.markdown: "## ", Format.junit: "<?xml"}
    for output_format, start in starts.items():
        argv = ["attn-doctor", "check", "--facts", str(FIXTURES / "h100-check.json"), "--format", output_format.value]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit):
            main()
        assert capsys.readouterr().out.startswith(start), output_format
