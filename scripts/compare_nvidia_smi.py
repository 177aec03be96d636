"""Compare `attn-doctor check --format json` with nvidia-smi's own reading of the same machine.

    nvidia-smi --query-gpu=index,name,compute_cap,driver_version,memory.total,uuid \
        --format=csv,noheader,nounits > smi.csv
    python scripts/compare_nvidia_smi.py smi.csv report.json

Prints one line per GPU and field; exits 1 on any disagreement.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def main() -> None:
    smi_rows = list(csv.reader(Path(sys.argv[1]).read_text().splitlines()))
    report = json.loads(Path(sys.argv[2]).read_text())
    gpus = {g["physical_index"]: g for g in report["gpus"] if g["vendor"] == "nvidia"}
    disagreements = 0
    for row in smi_rows:
        index, name, capability, driver, memory, uuid = (cell.strip() for cell in row)
        gpu = gpus.get(int(index), {})
        pairs = [
            ("name", name, gpu.get("name")),
            ("compute_capability", capability, gpu.get("compute_capability")),
            ("driver_version", driver, report["driver"]["driver_version"]),
            ("memory_mib", memory, str(gpu.get("memory_mib"))),
            ("uuid", uuid, gpu.get("uuid")),
        ]
        for field, smi, doctor in pairs:
            same = smi == doctor
            disagreements += not same
            verdict = "agree" if same else "DIFFER"
            print(f"GPU {index} {field:19} nvidia-smi={smi!r:32} attn-doctor={doctor!r:32} {verdict}")
    if len(smi_rows) != len(gpus):
        disagreements += 1
        print(f"GPU count: nvidia-smi {len(smi_rows)}, attn-doctor {len(gpus)}: DIFFER")
    print("attn-doctor agrees with nvidia-smi" if not disagreements else f"{disagreements} disagreement(s)")
    sys.exit(1 if disagreements else 0)


if __name__ == "__main__":
    main()
