"""The no-cgroup memory limit: a job's process tree measured by PSS, cheaply.

PSS (proportional set size, /proc/PID/smaps_rollup) counts the copy-on-write pages a job's
forked children share once in total, so a job that forks is measured by what it really uses;
plain RSS counts them once per process (17 GB "used" by a 1 GB parent and 16 children). But
smaps_rollup walks the page tables: 93 ms per poll for that tree against 1.6 ms for RSS
(benchmarks/bench_memory_watchdog.py), more than the 50 ms polling period. PSS never exceeds
RSS, so the watch sums RSS first and walks the page tables only when RSS says "over", and
then at most `max_share` of the time (a job may not buy itself a supervisor's core by forking).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def tree_pids(root: int) -> list[int]:
    """root and all its descendants (from /proc: no cgroup to ask)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    pids, stack = [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, []))
    return pids


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def pss_bytes(pid: int) -> int:
    """PSS from smaps_rollup; RSS where the kernel has no smaps_rollup."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss_bytes(pid)


@dataclass
class MemoryWatch:
    """Is a job's tree over its memory limit? Call over() at each poll."""

    root: int
    limit_bytes: int
    max_share: float = 0.1  # of one core spent walking page tables, at most
    pss_checks: int = 0
    _pss_not_before: float = 0.0

    def over(self) -> bool:
        pids = tree_pids(self.root)
        if sum(rss_bytes(p) for p in pids) <= self.limit_bytes:
            return False  # PSS <= RSS: under by RSS is under
        now = time.monotonic()
        if now < self._pss_not_before:
            return False  # a recent PSS check found it under; not again so soon
        pss = sum(pss_bytes(p) for p in pids)
        cost = time.monotonic() - now
        self.pss_checks += 1
        self._pss_not_before = now + cost / self.max_share
        return pss > self.limit_bytes
