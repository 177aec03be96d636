"""The one renderer interface: a format, how a result is to be shown, and each result's renderers.

Every command that prints a result (check, verify, bench, fleet) looks its renderer up here, by
the one `Format` its `--format` takes. A format a result has no renderer for is refused in one
line before anything runs, never printed as text; a format added to the enum without a branch
below fails the type check (`assert_never`). Renderers show verdicts; they never judge.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

if sys.version_info >= (3, 11):
    from typing import assert_never
else:
    from typing_extensions import assert_never

from attn_doctor.registry.findings import Severity

R = TypeVar("R")


class Format(str, enum.Enum):
    text = "text"
    json = "json"
    markdown = "markdown"
    junit = "junit"


class UnsupportedFormat(Exception):
    """A format this result has no renderer for: one line, exit 2."""


@dataclass(frozen=True)
class View:
    """How a result is to be shown: what every renderer may read beside the result."""

    code: int = 0  # the exit code the command ends with (JSON carries it)
    verbose: bool = False
    fail_on: Severity | None = None  # JUnit: what fails a case
    about: str = ""  # what the result is of: the machine a trial ran on, the fleet's source


# writes the result on standard output (text through rich, the rest as it is)
Renderer = Callable[[R, View], None]


@dataclass(frozen=True)
class Renderers(Generic[R]):
    """One result type's renderer for each format; None where it has none."""

    what: str  # the command, for the refusal: "verify"
    text: Renderer[R]
    json: Renderer[R] | None = None
    markdown: Renderer[R] | None = None
    junit: Renderer[R] | None = None

    def offered(self) -> list[Format]:
        return [f for f in Format if self._get(f) is not None]

    def of(self, output_format: Format) -> Renderer[R]:
        found = self._get(output_format)
        if found is None:
            offered = ", ".join(f.value for f in self.offered())
            raise UnsupportedFormat(f"{self.what} has no {output_format.value} output: --format {offered}")
        return found

    def _get(self, output_format: Format) -> Renderer[R] | None:
        match output_format:
            case Format.text:
                return self.text
            case Format.json:
                return self.json
            case Format.markdown:
                return self.markdown
            case Format.junit:
                return self.junit
            case _:
                assert_never(output_format)
