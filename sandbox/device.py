"""What this node has: GPUs from NVML, toolchain versions, which tools can run here."""

from __future__ import annotations

import logging
import socket
from typing import Any

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.tools import TOOLS
from perfbox.tools.toolkit import toolchain

log = logging.getLogger(__name__)


def _nvml() -> Any | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception as e:  # no driver, no library, no device: all mean "no GPU here"
        log.debug("NVML unavailable: %s", e)
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _gpu(nvml: Any, index: int) -> pb.Gpu:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    gpu = pb.Gpu(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        compute_capability=f"{major}.{minor}",
        memory_total_bytes=int(memory.total),
        memory_used_bytes=int(memory.used),
    )
    for field, call in (
        ("sm_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
        ("memory_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
        ("max_sm_clock_mhz", lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)),
        ("temperature_c", lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        ("power_limit_w", lambda: nvml.nvmlDeviceGetPowerManagementLimit(handle) // 1000),
        ("sm_count", lambda: nvml.nvmlDeviceGetNumGpuCores(handle) // 128),
    ):
        try:
            setattr(gpu, field, int(call()))
        except Exception:  # older drivers lack some queries; leave the field 0
            pass
    return gpu


def gpu_count() -> int:
    nvml = _nvml()
    if nvml is None:
        return 0
    try:
        return int(nvml.nvmlDeviceGetCount())
    finally:
        nvml.nvmlShutdown()


def device_info() -> pb.DeviceInfoResponse:
    response = pb.DeviceInfoResponse(node=socket.gethostname())
    for tool in toolchain():
        response.toolchain.add(name=tool.name, version=tool.version, path=tool.path)
    nvml = _nvml()
    if nvml is not None:
        try:
            response.driver_version = _text(nvml.nvmlSystemGetDriverVersion())
            cuda = int(nvml.nvmlSystemGetCudaDriverVersion())
            response.cuda_driver_version = f"{cuda // 1000}.{cuda % 1000 // 10}"
            for index in range(int(nvml.nvmlDeviceGetCount())):
                response.gpus.append(_gpu(nvml, index))
        finally:
            nvml.nvmlShutdown()
    response.gpu_available = len(response.gpus) > 0
    usable = [t.name for t in TOOLS.values() if response.gpu_available or not t.needs_gpu]
    response.available_tools.extend(usable)
    if response.gpu_available:
        names = ", ".join(g.name for g in response.gpus)
        response.message = f"{len(response.gpus)} GPU(s): {names}. All tools can run."
    else:
        response.message = (
            "No NVIDIA GPU found (NVML unavailable or no devices). Still works here: "
            + ", ".join(usable) + " (any target arch, ahead of time). Tools that execute "
            "kernels on a GPU answer UNAVAILABLE_HERE."
        )
    return response
