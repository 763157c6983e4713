"""What the no-cgroup memory watchdog costs per poll, for job trees of different sizes: PSS on
every poll (/proc/PID/smaps_rollup: copy-on-write pages shared by a job's children count once,
but the kernel walks the page tables), RSS (/proc/PID/statm: a counter read, but shared pages
count once per process), and the zygote's MemoryWatch (RSS first, PSS only when RSS says over,
at most 10% of a core) with a limit of 1.5x what the tree really uses, so that the forked trees
are over by RSS and under by PSS. Polled at the watchdog's cadence (every 50 ms while a job runs); the
share of a core is CPU time (user + kernel) over wall time.

    python benchmarks/bench_memory_watchdog.py [--out benchmarks/results/memory_watchdog.json]

Both variants measured side by side on the same live process trees (a parent that touched
MB megabytes, then forked CHILDREN sleeping children that share them copy-on-write).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perfbox.sandbox import memory_watch as M  # noqa: E402

CASES = [(64, 0), (1024, 0), (1024, 16), (4096, 4)]  # (MB touched, forked children)
POLLS = 100
POLL_INTERVAL_S = 0.05  # the zygote's watchdog cadence

TREE = """
import os, sys, time
mb, children = int(sys.argv[1]), int(sys.argv[2])
data = bytearray(mb << 20)
for i in range(0, len(data), 4096):
    data[i] = 1
for _ in range(children):
    if os.fork() == 0:
        time.sleep(3600)
print("ready", flush=True)
time.sleep(3600)
"""


def _time_polls(measure: Callable[[], object]) -> tuple[float, float]:
    """POLLS polls at the watchdog's cadence (every 50 ms, back to back when a poll takes
    longer): CPU seconds per poll, and the share of one core they took."""
    cpu0, wall0 = time.thread_time(), time.monotonic()
    next_at = wall0
    for _ in range(POLLS):
        measure()
        next_at += POLL_INTERVAL_S
        time.sleep(max(0.0, next_at - time.monotonic()))
    cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
    return cpu / POLLS, cpu / wall


def run_case(mb: int, children: int) -> dict[str, float | int]:
    proc = subprocess.Popen([sys.executable, "-c", TREE, str(mb), str(children)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        pids = M.tree_pids(proc.pid)
        pss = sum(M.pss_bytes(p) for p in pids)
        rss = sum(M.rss_bytes(p) for p in pids)
        watch = M.MemoryWatch(proc.pid, int(pss * 1.5))
        times = {
            "pss": _time_polls(lambda: sum(M.pss_bytes(p) for p in M.tree_pids(proc.pid))),
            "rss": _time_polls(lambda: sum(M.rss_bytes(p) for p in M.tree_pids(proc.pid))),
            "watch": _time_polls(watch.over)}
        assert not watch.over()  # under its limit: nothing to kill
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    row: dict[str, float | int] = {"mb": mb, "children": children, "pss_mb": pss >> 20,
                                   "rss_mb": rss >> 20, "watch_pss_checks": watch.pss_checks}
    for name, (seconds, share) in times.items():
        row[f"{name}_poll_ms"] = seconds * 1e3
        row[f"{name}_core_share"] = share
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/memory_watchdog.json"))
    args = parser.parse_args()
    rows = []
    for mb, children in CASES:
        row = run_case(mb, children)
        rows.append(row)
        print(f"{mb:5d} MB, {children:2d} children ({row['pss_mb']} MB by PSS, "
              f"{row['rss_mb']} MB by RSS): CPU ms per poll (share of a core): PSS "
              f"{row['pss_poll_ms']:.2f} ({row['pss_core_share']:.0%}), RSS "
              f"{row['rss_poll_ms']:.2f} ({row['rss_core_share']:.0%}), MemoryWatch "
              f"{row['watch_poll_ms']:.2f} ({row['watch_core_share']:.0%}, "
              f"{row['watch_pss_checks']} PSS walks in {POLLS + 1} polls)")
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "machine": {"cpus": os.cpu_count(), "host": platform.node(),
                       "kernel": platform.release(), "python": platform.python_version()},
           "command": "python benchmarks/bench_memory_watchdog.py", "polls": POLLS,
           "poll_interval_s": POLL_INTERVAL_S, "processes_on_machine": len(
               [e for e in os.listdir("/proc") if e.isdigit()]), "cases": rows}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
