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
from typing import Any


def _cpu_times(cpus: tuple[int, ...]) -> tuple[float, float]:
    """(busy, steal) seconds summed over `cpus`."""
    busy = steal = 0
    wanted = {f"cpu{c}" for c in cpus}
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name in wanted:
                    values = [int(x) for x in fields]
                    idle = values[3] + values[4]
                    guest = sum(values[8:10]) if len(values) > 9 else 0
                    steal += values[7] if len(values) > 7 else 0
                    busy += sum(values) - idle - guest - (values[7] if len(values) > 7 else 0)
    except OSError:
        return 0.0, 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return busy / ticks, steal / ticks


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
