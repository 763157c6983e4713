"""GPU timing helpers that run without a GPU: the times message from the submission's process
(untrusted bytes) and the throttle flags read from NVML. NVML cannot be made to report a
throttled GPU on demand, so the throttle test feeds GpuMonitor a stand-in NVML module (a fault
injection fake; the real NVML path runs in the GPU tests)."""

from __future__ import annotations

import types

import pynvml
import pytest

from perfbox.tools import gpu_timing


def test_times_round_trip_and_malformed_replies_are_refused() -> None:
    pairs = [(1.5, 2.5), (3.25, 4.0)]
    assert gpu_timing.unpack_times(gpu_timing.pack_times(pairs)) == pairs
    for bad in (b"ok", b"times:" + b"\0" * 15, b"time:" + b"\0" * 16):
        with pytest.raises(ValueError):
            gpu_timing.unpack_times(bad)


def _fake_nvml(reasons: int) -> types.SimpleNamespace:
    flags = {k: getattr(pynvml, k) for k in dir(pynvml) if k.startswith("nvmlClocksEventReason")}
    return types.SimpleNamespace(
        NVML_CLOCK_SM=0, NVML_CLOCK_MEM=1, NVML_TEMPERATURE_GPU=0,
        nvmlDeviceGetClockInfo=lambda h, k: 1755 if k == 0 else 2619,
        nvmlDeviceGetTemperature=lambda h, k: 71,
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: reasons, **flags)


@pytest.mark.parametrize("reasons, throttled, names", [
    (pynvml.nvmlClocksEventReasonGpuIdle, False, []),
    (pynvml.nvmlClocksEventReasonHwThermalSlowdown | pynvml.nvmlClocksEventReasonGpuIdle, True,
     ["hw_thermal"]),
    (pynvml.nvmlClocksEventReasonSwPowerCap, True, ["sw_power_cap"]),
])
def test_throttle_reasons_flag_the_run(reasons: int, throttled: bool, names: list[str]) -> None:
    monitor = gpu_timing.GpuMonitor()
    monitor._nvml, monitor._handle = _fake_nvml(reasons), None
    monitor.sample()
    monitor.sample()
    c = monitor.conditions.to_json()
    assert c["throttled"] is throttled and c["throttleReasons"] == names
    assert c["smClockMhzMax"] == 1755 and c["temperatureCMax"] == 71 and c["samples"] == 2
