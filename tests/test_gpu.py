"""GPU facts: NVML as recorded on a real H100 (replayed), the real NVML-less machine, AMD sysfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from attn_doctor.facts.gpu import read_amd, read_gpus, read_nvidia, visible_indices
from tests.conftest import FIXTURES, RecordedNvml, h100_recording

UUID = h100_recording()["devices"][0]["nvmlDeviceGetUUID"]  # the H100 the recording came from


def test_h100_reading_agrees_with_nvidia_smi(h100: RecordedNvml) -> None:
    driver, gpus = read_nvidia(h100, None)
    [gpu] = gpus
    # the same machine's nvidia-smi, recorded in the same run (scripts/device_check.sh)
    index, name, capability, driver_version, memory, uuid = (
        c.strip() for c in (FIXTURES / "nvidia-smi.csv").read_text().strip().split(",")
    )
    assert (gpu.name, gpu.compute_capability, gpu.memory_mib, gpu.uuid) == (
        name,
        capability,
        int(memory),
        uuid,
    )
    assert driver.driver_version == driver_version
    assert (gpu.index, gpu.physical_index) == (0, int(index))
    assert gpu.architecture == "Hopper" and gpu.sm == "sm_90" and not gpu.mig
    assert driver.cuda_driver_version == "13.0" and driver.nvidia_status == "ok"


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        (None, None),  # unset: every device
        ("", []),
        ("2,0", [2, 0]),
        ("1,7,2", [1]),  # CUDA stops at the first entry that names no device
        ("GPU-cc", [2]),  # a unique UUID prefix
        ("GPU-", []),  # an ambiguous prefix names no device
        ("0,0", [0]),  # a repeated device ends the list too
    ],
)
def test_cuda_visible_devices(variable: str | None, expected: list[int] | None) -> None:
    uuids = ["GPU-aa11", "GPU-bb22", "GPU-cc33", "GPU-dd44"]
    assert visible_indices(variable, uuids) == expected


@pytest.mark.parametrize(("variable", "shown", "hidden"), [("0", 1, 0), ("", 0, 1), ("1", 0, 1), (UUID[:12], 1, 0)])
def test_visibility_applied_to_the_h100(h100: RecordedNvml, variable: str, shown: int, hidden: int) -> None:
    driver, gpus = read_nvidia(h100, variable)
    assert len(gpus) == shown and driver.hidden_gpus == hidden
    assert driver.cuda_visible_devices == variable


@pytest.mark.parametrize(
    ("call", "code", "status"),
    [
        ("nvmlInit", 12, "nvml-library-missing"),
        ("nvmlInit", 9, "driver-not-loaded"),
        ("nvmlInit", 18, "driver-mismatch"),
        ("nvmlInit", 999, "nvml-error"),
        ("nvmlSystemGetDriverVersion", 999, "nvml-error"),
        ("nvmlSystemGetCudaDriverVersion_v2", 3, "nvml-error"),
        ("nvmlDeviceGetCount", 999, "nvml-error"),
        ("nvmlDeviceGetHandleByIndex", 15, "nvml-error"),  # GPU_IS_LOST
        ("nvmlDeviceGetName", 999, "nvml-error"),
        ("nvmlDeviceGetCudaComputeCapability", 999, "nvml-error"),
    ],
)
def test_nvml_error_at_any_call_is_a_status(call: str, code: int, status: str) -> None:
    driver, gpus = read_nvidia(RecordedNvml(h100_recording(), fail=(call, code)), None)
    assert driver.nvidia_status == status and gpus == ()
    assert driver.nvidia_detail.startswith(call)


def test_optional_calls_failing_cost_only_their_field() -> None:
    for call in ("nvmlDeviceGetMemoryInfo", "nvmlDeviceGetUUID", "nvmlDeviceGetMigMode", "nvmlShutdown"):
        driver, [gpu] = read_nvidia(RecordedNvml(h100_recording(), fail=(call, 999)), None)
        assert driver.nvidia_status == "ok" and gpu.name == "NVIDIA H100 80GB HBM3"


def test_a_binding_that_raises_something_else() -> None:
    class Broken(RecordedNvml):
        def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
            raise AttributeError("function nvmlSystemGetCudaDriverVersion_v2 not found")

    driver, _ = read_nvidia(Broken(h100_recording()), None)
    assert driver.nvidia_status == "nvml-error" and "not found" in driver.nvidia_detail


def test_this_machine_has_no_nvml(tmp_path: Path) -> None:
    """The real pynvml on a machine without the NVIDIA driver (CI's)."""
    driver, gpus = read_gpus(root=tmp_path)
    assert gpus == ()
    assert driver.nvidia_status == "nvml-library-missing", driver


def make_kfd(root: Path, target_version: int = 90402) -> None:
    """A KFD topology as the amdgpu driver lays it out: node 0 a CPU, node 1 an MI300X (gfx942)."""
    nodes = root / "sys/class/kfd/kfd/topology/nodes"
    (nodes / "0").mkdir(parents=True)
    (nodes / "0" / "properties").write_text("cpu_cores_count 96\nsimd_count 0\ngfx_target_version 0\n")
    gpu = nodes / "1"
    (gpu / "mem_banks" / "0").mkdir(parents=True)
    (gpu / "properties").write_text(
        f"cpu_cores_count 0\nsimd_count 1216\ngfx_target_version {target_version}\nvendor_id 4098\n"
    )
    (gpu / "name").write_text("ip discovery\n")
    (gpu / "mem_banks" / "0" / "properties").write_text("heap_type 1\nsize_in_bytes 206141652992\n")
    (root / "opt/rocm/.info").mkdir(parents=True)
    (root / "opt/rocm/.info/version").write_text("6.4.1-120\n")


def test_amd_from_sysfs(tmp_path: Path) -> None:
    make_kfd(tmp_path)
    gpus, rocm = read_amd(tmp_path)
    [gpu] = gpus
    assert (gpu.vendor, gpu.gfx_target, gpu.architecture, gpu.memory_mib) == (
        "amd",
        "gfx942",
        "CDNA3",
        196592,
    )
    assert rocm == "6.4.1-120"
    assert gpu.physical_index == 1 and gpu.index == 0


def test_gfx90a_target_version(tmp_path: Path) -> None:
    """gfx_target_version packs major*10000 + minor*100 + stepping; minor and stepping print in hex."""
    make_kfd(tmp_path, target_version=90010)
    [gpu], _ = read_amd(tmp_path)
    assert (gpu.gfx_target, gpu.architecture) == ("gfx90a", "CDNA2")


def test_no_kfd_no_amd(tmp_path: Path) -> None:
    assert read_amd(tmp_path) == ((), None)
