"""Record what NVML answers on this machine, in the form tests/conftest.py's RecordedNvml replays.

Run on a real GPU machine (scripts/device_check.sh does):  python scripts/record_nvml.py > nvml.json
An NVML error is recorded as {"error": <NVML return code>}, so that it is replayed too.
"""

from __future__ import annotations

import datetime
import json
import socket
from collections.abc import Callable
from typing import Any

import pynvml


def answer(call: Callable[..., Any], *args: Any) -> Any:
    try:
        value = call(*args)
    except pynvml.NVMLError as error:
        return {"error": error.value}
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "total"):
        return {"total": value.total}
    if isinstance(value, tuple | list):
        return list(value)
    return value


def main() -> None:
    pynvml.nvmlInit()
    devices = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        devices.append(
            {
                name: answer(getattr(pynvml, name), handle)
                for name in (
                    "nvmlDeviceGetName",
                    "nvmlDeviceGetUUID",
                    "nvmlDeviceGetCudaComputeCapability",
                    "nvmlDeviceGetMemoryInfo",
                    "nvmlDeviceGetMigMode",
                )
            }
        )
    recording = {
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "nvmlSystemGetDriverVersion": answer(pynvml.nvmlSystemGetDriverVersion),
        "nvmlSystemGetCudaDriverVersion_v2": answer(pynvml.nvmlSystemGetCudaDriverVersion_v2),
        "devices": devices,
    }
    pynvml.nvmlShutdown()
    print(json.dumps(recording, indent=2))


if __name__ == "__main__":
    main()
