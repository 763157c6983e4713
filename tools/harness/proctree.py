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
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FREEZE_TIMEOUT_S = 2.0


class FreezeFailed(RuntimeError):
    """A side's processes did not all stop in time (a process stuck in the kernel)."""


def become_subreaper() -> None:
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def children(pid: int, main_thread_only: bool = False) -> list[int]:
    out: list[int] = []
    try:
        tasks = [str(pid)] if main_thread_only else os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except (OSError, ValueError):
            pass
    return out


def members(root: int, other_sides: tuple[int, ...] = (), claim_orphans: bool = True
            ) -> set[int]:
    """The root, its descendants, and (claim_orphans) the orphans re-parented to this
    (subreaper) process: the kernel hands them to the reaper's main thread while it lives, as
    this one does. Only the submission's side claims orphans: the reference's side is the
    tool's own code and forks nothing, so every child of the tool that is not a side's root
    was left behind by the submission, and must never be thawed with the reference."""
    seen: set[int] = set()
    # read for both sides, so freezing either costs the same (the freeze is inside the clock)
    mine = children(os.getpid(), main_thread_only=True)
    orphans = [p for p in mine if p != root and p not in other_sides] if claim_orphans else []
    stack = [root, *orphans]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack += children(pid)
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


class Tree:
    """One side's processes. Signals go through pidfds, so a pid that died and was reused by
    an unrelated process is never signalled; the side's direct children (the root, orphans
    re-parented here) are waited for with waitid, the rest polled through /proc."""

    def __init__(self, root: int, other_sides: tuple[int, ...] = (),
                 claim_orphans: bool = True) -> None:
        self.root = root
        self.other_sides = other_sides
        self.claim_orphans = claim_orphans  # the submission's side only (see members)
        self._pidfds: dict[int, int] = {}  # every process of the side seen so far

    def _fd(self, pid: int) -> int | None:
        if pid not in self._pidfds:
            try:
                self._pidfds[pid] = os.pidfd_open(pid)
            except OSError:
                return None  # already gone
        return self._pidfds[pid]

    def _send(self, pids: set[int], sig: int) -> None:
        for pid in pids:
            fd = self._fd(pid)
            if fd is not None:
                try:
                    signal.pidfd_send_signal(fd, sig)
                except ProcessLookupError:
                    pass

    def freeze(self) -> set[int]:
        """Stops every process of the side; raises FreezeFailed if one keeps running past
        FREEZE_TIMEOUT_S. A stopped process cannot fork, so once a walk of the tree made
        after every process found has stopped finds nothing new, the side is whole and
        still."""
        deadline = time.monotonic() + FREEZE_TIMEOUT_S
        stopped: set[int] = set()
        new = set(self._pidfds) or {self.root}
        while new:
            self._send(new, signal.SIGSTOP)
            self._wait_stopped(new, deadline)
            stopped |= new
            new = members(self.root, self.other_sides, self.claim_orphans) - stopped
        return stopped

    def thaw(self) -> None:
        self._send(set(self._pidfds), signal.SIGCONT)

    def _wait_stopped(self, pids: set[int], deadline: float) -> None:
        """Until every thread of `pids` is stopped (or gone): the CPU is yielded first (the
        stop needs the target to run, often on this very CPU), then slept between looks."""
        pending = set(pids)
        spins = 0
        while pending:
            pending = {p for p in pending if not self._stopped(p)}
            if not pending:
                return
            if time.monotonic() > deadline:
                raise FreezeFailed(f"{len(pending)} process(es) of the side did not stop")
            spins += 1
            if spins < 200:
                os.sched_yield()
            else:
                time.sleep(0.0002)

    @staticmethod
    def _stopped(pid: int) -> bool:
        """A child of this process (the root, an orphan) is asked with waitid, which sees the
        whole group stop without reading /proc; any other process (ECHILD) is read there."""
        try:
            if os.waitid(os.P_PID, pid, os.WSTOPPED | os.WNOWAIT | os.WNOHANG) is not None:
                return True
            return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None
        except ChildProcessError:  # not a child, or already reaped (then /proc has nothing)
            return all(s in "TtZXx" for s in _states(pid))

    def pids(self) -> set[int]:
        return members(self.root, self.other_sides, self.claim_orphans) | set(self._pidfds)

    def kill_all(self) -> None:
        """SIGKILLs every process of the side (frozen first, so none forks away meanwhile)
        and reaps those that are this process's children."""
        try:
            self.freeze()
        except FreezeFailed:
            pass
        pids = self.pids()
        self._send(pids, signal.SIGKILL)
        for pid in pids & set(children(os.getpid(), main_thread_only=True)) | {self.root}:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        for fd in self._pidfds.values():
            os.close(fd)
        self._pidfds.clear()


@dataclass(frozen=True)
class Usage:
    """What a set of processes has used so far, by the kernel's accounting."""

    cpu_s: float  # CPU time, all threads, reaped children included
    faults: int  # page faults (minor + major)


def usage(pids: set[int]) -> Usage:
    """CPU time of the processes: nanosecond run time of every live thread
    (/proc/PID/task/TID/schedstat), plus, at clock-tick resolution, what exited threads and
    reaped children used (the stat file's totals less its live threads'); and their faults."""
    total_ns = 0
    faults = 0
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
        faults += int(fields[7]) + int(fields[9])  # minflt majflt
    return Usage(total_ns / 1e9, faults)
