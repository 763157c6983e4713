"""GPU timing pieces for bench: a CUDA-event timer bound before the submission's code loads, the
L2 flush, and the GPU's conditions (clocks, temperature, throttling) read through NVML.

Where the clock lives. A kernel runs in the submission's process, and CUDA events time only
work in their own process, so the per-call event times come from there. Everything the timer
calls (the event methods, the device-wide synchronise, the L2 flush, the host clock) is bound
here *before* the submission's module is imported: monkey-patching `torch.cuda`, `time` or this
module afterwards cannot reach the bound objects. That is defence in depth only (code in the
process can still write memory through ctypes); the guard out of its reach is the tool's own
clock, which times every batch of calls from the other side of the pipe and must agree with the
reported event times (see bench._check_gaps).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable

L2_FLUSH_FACTOR = 2  # the flush buffer is this many times the GPU's L2


class CudaTimer:
    """Per-call timing in the submission's process: flush L2, synchronise the whole device,
    time the call with CUDA events on the default stream, synchronise the whole device again
    (so work left on side streams is waited for and shows up in the host time)."""

    def __init__(self) -> None:
        import time

        import torch

        props = torch.cuda.get_device_properties(0)
        self.l2_bytes = int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)
        self.flush_bytes = L2_FLUSH_FACTOR * self.l2_bytes
        self._flush_buffer = torch.empty(self.flush_bytes, dtype=torch.int8, device="cuda")
        self._flush: Callable[[], Any] = self._flush_buffer.zero_
        self._sync: Callable[[], None] = torch._C._cuda_synchronize
        event_type = torch._C._CudaEventBase
        self._record: Callable[[Any, Any], None] = event_type.record
        self._elapsed: Callable[[Any, Any], float] = event_type.elapsed_time
        self._stream = torch.cuda.current_stream()
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)
        self._now: Callable[[], int] = time.perf_counter_ns
        self._no_grad = torch.no_grad

    def time_call(self, call: Callable[[], Any]) -> tuple[float, float, Any]:
        """(event microseconds, host microseconds from start to idle device, the output)."""
        self._flush()
        self._sync()
        with self._no_grad():
            begin = self._now()
            self._record(self._start, self._stream)
            out = call()
            self._record(self._end, self._stream)
            self._sync()
            host_us = (self._now() - begin) / 1e3
        return self._elapsed(self._start, self._end) * 1e3, host_us, out


def pack_times(pairs: list[tuple[float, float]]) -> bytes:
    return b"times:" + b"".join(struct.pack("<dd", e, h) for e, h in pairs)


def unpack_times(data: bytes) -> list[tuple[float, float]]:
    """Inverse of pack_times; raises ValueError on anything else (the bytes come from the
    submission's process and are not trusted)."""
    if not data.startswith(b"times:") or (len(data) - 6) % 16:
        raise ValueError("not a times message")
    body = data[6:]
    return [struct.unpack_from("<dd", body, i) for i in range(0, len(body), 16)]


# -- the GPU's conditions, read from the tool's process (NVML does not touch CUDA) -------------

_THROTTLE_NAMES = {
    "clocksEventReasonSwPowerCap": "sw_power_cap",
    "clocksEventReasonHwSlowdown": "hw_slowdown",
    "clocksEventReasonSwThermalSlowdown": "sw_thermal",
    "clocksEventReasonHwThermalSlowdown": "hw_thermal",
    "clocksEventReasonHwPowerBrakeSlowdown": "hw_power_brake",
    "clocksEventReasonSyncBoost": "sync_boost",
}
THROTTLING = {"sw_power_cap", "hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake"}


@dataclass
class GpuConditions:
    """Clocks, temperature and throttle reasons seen while timing; throttled when any reason
    that lowers clocks under load showed up."""

    gpu_name: str = ""
    sm_clock_mhz_min: int = 0
    sm_clock_mhz_max: int = 0
    mem_clock_mhz: int = 0
    temperature_c_max: int = 0
    throttle_reasons: list[str] = field(default_factory=list)
    samples: int = 0

    @property
    def throttled(self) -> bool:
        return bool(THROTTLING & set(self.throttle_reasons))

    def to_json(self) -> dict[str, Any]:
        return {"gpuName": self.gpu_name, "smClockMhzMin": self.sm_clock_mhz_min,
                "smClockMhzMax": self.sm_clock_mhz_max, "memClockMhz": self.mem_clock_mhz,
                "temperatureCMax": self.temperature_c_max,
                "throttleReasons": sorted(self.throttle_reasons), "throttled": self.throttled,
                "samples": self.samples}


class GpuMonitor:
    """Samples NVML for GPU 0 between timed batches; silent (empty conditions) without NVML."""

    def __init__(self) -> None:
        self.conditions = GpuConditions()
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            name = pynvml.nvmlDeviceGetName(self._handle)
            self.conditions.gpu_name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # no NVML: timing still works, conditions stay empty
            self._nvml = None

    def sample(self) -> None:
        if self._nvml is None:
            return
        nvml, handle, c = self._nvml, self._handle, self.conditions
        try:
            sm = int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))
            c.mem_clock_mhz = int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM))
            temp = int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
            query = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
                nvml.nvmlDeviceGetCurrentClocksThrottleReasons
            reasons = int(query(handle))
        except Exception:  # NVML missing or failing: the clock record stays empty
            return
        c.sm_clock_mhz_min = min(sm, c.sm_clock_mhz_min or sm)
        c.sm_clock_mhz_max = max(sm, c.sm_clock_mhz_max)
        c.temperature_c_max = max(temp, c.temperature_c_max)
        for attr, name in _THROTTLE_NAMES.items():
            if reasons & int(getattr(nvml, "nvmlC" + attr[1:], 0)) and \
                    name not in c.throttle_reasons:
                c.throttle_reasons.append(name)
        c.samples += 1

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # nothing to release when NVML failed already
                pass
