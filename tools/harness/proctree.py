"""Every process a side started, seen from outside: frozen, thawed, counted and killed.

The tool makes itself a child subreaper, so a process the submission forks and orphans (a
double-forked daemon, a spinner left behind) is re-parented to the tool, not to init, and stays
in view; the tool reaps nothing until the side is stopped, so an exited process's CPU time
stays readable too. A side's processes are its root's descendants plus the tool's children that
no side claims (orphans) and theirs. Freezing sends SIGSTOP (which nothing can block or
handle), walks the tree again for processes forked in between, and waits until every thread of
every process is stopped; nothing the submission runs can then run while the reference is
timed or while the tool reads outputs. Times are the kernel's accounting, not the side's word.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FREEZE_TIMEOUT_S = 2.0


class FreezeFailed(RuntimeError):
    """A side's processes did not all stop in time (a process stuck in the kernel)."""


def become_subreaper() -> None:
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except (OSError, ValueError):
            pass
    return out


def members(root: int, other_sides: tuple[int, ...] = ()) -> set[int]:
    """The root, its descendants, and orphans re-parented to this (subreaper) process."""
    seen: set[int] = set()
    orphans = [p for p in _children(os.getpid()) if p != root and p not in other_sides]
    stack = [root, *orphans]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack += _children(pid)
    return seen


def _states(pid: int) -> list[str]:
    """One state letter per thread of the process ("" when it is gone)."""
    states = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        states.append(text[text.rindex(")") + 2])
    return states


def freeze(root: int, other_sides: tuple[int, ...] = ()) -> set[int]:
    """Stops every process of the side and returns them; raises FreezeFailed if one keeps
    running past FREEZE_TIMEOUT_S."""
    stopped: set[int] = set()
    while True:  # stopped processes cannot fork: this ends once a walk finds nothing new
        new = members(root, other_sides) - stopped
        if not new:
            break
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        stopped |= new
    deadline = time.monotonic() + FREEZE_TIMEOUT_S
    pending = set(stopped)
    while pending:
        pending = {p for p in pending if any(s not in "TtZXx" for s in _states(p))}
        if not pending:
            break
        if time.monotonic() > deadline:
            raise FreezeFailed(f"{len(pending)} process(es) of the side did not stop")
        time.sleep(0.0001)
    return stopped


def thaw(pids: set[int]) -> None:
    for pid in pids:
        _signal(pid, signal.SIGCONT)


def cpu_seconds(pids: set[int]) -> float:
    """CPU time of the processes, from the kernel's accounting: nanosecond run time of every
    live thread (/proc/PID/task/TID/schedstat), plus, at clock-tick resolution, what exited
    threads and reaped children used (the stat file's totals less its live threads')."""
    total_ns = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        live_ns = 0
        live_ticks = 0
        for tid in tasks:
            try:
                live_ns += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
                task = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                live_ticks += sum(int(x) for x in task[task.rindex(")") + 2:].split()[11:13])
            except (OSError, ValueError, IndexError):
                continue
        fields = text[text.rindex(")") + 2:].split()
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        total_ns += live_ns + max(0, ticks - live_ticks) * 1_000_000_000 // CLOCK_TICKS
    return total_ns / 1e9


def kill_all(root: int, other_sides: tuple[int, ...] = ()) -> None:
    """SIGKILLs every process of the side (frozen first, so none forks away meanwhile) and
    reaps those that are this process's children."""
    try:
        pids = freeze(root, other_sides)
    except FreezeFailed:
        pids = members(root, other_sides)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    mine = set(_children(os.getpid()))
    for pid in pids & mine | ({root} & mine):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
