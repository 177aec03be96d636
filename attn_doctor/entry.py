"""The `attn-doctor` command: `check` gets a head start, then the CLI runs.

Before the doctor's imports (typer, the registry: about a third of `check`'s time), the probe of
the target is started for a `check` whose command line names its target plainly, and given its
request as soon as the registry is imported (`facts/head_start.py`); the GPUs are read beside it,
in a process of their own (`facts/gpu_child.py`). Anything this reading of the
command line gets wrong costs only the head start: the CLI parses the command line as always, and
`collect` uses what was started only when it was started for the same target and request.
"""

from __future__ import annotations

import sys


def main() -> None:
    _head_start(sys.argv[1:])
    from attn_doctor.cli import main as cli_main

    cli_main()


def _head_start(argv: list[str]) -> None:
    if not argv or argv[0] != "check":
        return
    python: str | None = None
    rest = argv[1:]
    deep = "--deep" in rest
    for index, argument in enumerate(rest):
        if argument in ("--help", "--facts") or argument.startswith("--facts="):
            return  # nothing to probe
        if argument == "--python":
            if index + 1 == len(rest):
                return
            python = rest[index + 1]
        elif argument.startswith("--python="):
            python = argument.partition("=")[2]
    from attn_doctor.facts import head_start

    head_start.start(python, deep)
