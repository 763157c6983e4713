"""How busy the measuring CPUs were with somebody else's work while a bench ran.

From the kernel's per-CPU accounting (/proc/stat): busy time on the CPUs the sides and the
tool were pinned to, less what the sides and the tool themselves used, is other tenants' work
(`contention`, a fraction of those CPUs' time); the hypervisor's `steal` is reported apart; and
the load averages before and after. A noisy machine is a result a reward can refuse, not a
speedup.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CpuTicks:
    """One CPU's counters from /proc/stat, in clock ticks since boot."""

    total: int
    idle: int  # idle + iowait
    steal: int  # taken by the hypervisor
    guest: int  # running guests (already inside user time)


def cpu_ticks() -> dict[int, CpuTicks]:
    """Every CPU's counters (empty when /proc/stat cannot be read)."""
    out: dict[int, CpuTicks] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name != "cpu":
                    v = [int(x) for x in fields] + [0] * 10
                    out[int(name[3:])] = CpuTicks(sum(v), v[3] + v[4], v[7], v[8] + v[9])
    except OSError:
        pass
    return out


def busy_fraction(cpus: list[int], window_s: float = 0.05) -> dict[int, float]:
    """How busy each CPU was over a short window (0..1)."""
    before = cpu_ticks()
    time.sleep(window_s)
    after = cpu_ticks()
    result = {}
    for cpu in cpus:
        if cpu in before and cpu in after:
            total = after[cpu].total - before[cpu].total
            idle = after[cpu].idle - before[cpu].idle
            result[cpu] = 1.0 - idle / total if total else 0.0
    return result


def _cpu_times(cpus: tuple[int, ...]) -> tuple[float, float]:
    """(busy, steal) seconds summed over `cpus`."""
    ticks = cpu_ticks()
    chosen = [ticks[c] for c in cpus if c in ticks]
    busy = sum(t.total - t.idle - t.guest - t.steal for t in chosen)
    steal = sum(t.steal for t in chosen)
    per_s = os.sysconf("SC_CLK_TCK")
    return busy / per_s, steal / per_s


def _load() -> float:
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


class Watch:
    """Started before a bench's sampling, finished after it."""

    def __init__(self, cpus: tuple[int, ...], sides: list[Any]) -> None:
        self.cpus = cpus
        self.sides = sides  # harness Side objects: their processes' CPU time is not foreign
        self.sides_start = sum(s.cpu_seconds() for s in sides)
        self.load_before = _load()
        self.wall_start = time.monotonic()
        self.busy_start, self.steal_start = _cpu_times(cpus)
        times = os.times()
        self.tool_start = times.user + times.system

    def finish(self) -> dict[str, Any]:
        busy, steal = _cpu_times(self.cpus)
        sides_cpu_s = sum(s.cpu_seconds() for s in self.sides) - self.sides_start
        times = os.times()
        tool = times.user + times.system - self.tool_start
        capacity = max(1e-9, (time.monotonic() - self.wall_start) * len(self.cpus))
        foreign = max(0.0, busy - self.busy_start - sides_cpu_s - tool)
        return {"contention": min(1.0, foreign / capacity),
                "steal_fraction": min(1.0, (steal - self.steal_start) / capacity),
                "load_avg_before": self.load_before, "load_avg_after": _load(),
                "num_cpus_online": os.cpu_count() or 0}
