"""The ptxas binaries Triton compiles its kernels with, by the CUDA release each one's own version
string names ("Cuda compilation tools, release 12.8, V12.8.93"). Read, never run: a ptxas that
hangs or crashes must not take `check` with it, as nvcc is never run either."""

from __future__ import annotations

import os
from collections.abc import Mapping

from attn_doctor.facts.model import Ptxas
from attn_doctor.facts.toolchain import release_of
from attn_doctor.registry.cuda import TRITON_PTXAS, TRITON_PTXAS_BLACKWELL

BUNDLED = os.path.join("triton", "backends", "nvidia", "bin")


# torch 2.11 and 2.12 ship a ptxas of their own, and their inductor sets TRITON_PTXAS_PATH to it
# where it is unset (torch/_inductor/runtime/compile_tasks.py, _set_triton_ptxas_path)
TORCH_SETS = f"{TRITON_PTXAS} (set by torch's inductor)"


def read_ptxas(site: str, torch_location: str | None, environment: Mapping[str, str]) -> tuple[Ptxas, ...]:
    """Triton's two bundled ptxas under `site` (its site-packages folder), and those its variables
    point it at instead."""
    found = []
    own = os.path.join(torch_location, "bin", "ptxas") if torch_location else None
    if own and os.path.exists(own) and not environment.get(TRITON_PTXAS):
        found.append(Ptxas(own, "ptxas", release_of(own), TORCH_SETS))
    for role, variable in (("ptxas", TRITON_PTXAS), ("ptxas-blackwell", TRITON_PTXAS_BLACKWELL)):
        bundled = os.path.join(site, BUNDLED, role)
        if os.path.exists(bundled):
            found.append(Ptxas(bundled, role, release_of(bundled)))
        chosen = environment.get(variable)
        if chosen:
            found.append(Ptxas(chosen, role, release_of(chosen), variable))
    return tuple(found)
