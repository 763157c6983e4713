"""The no-cgroup memory limit: a job's process tree measured by PSS, cheaply.

PSS (proportional set size, /proc/PID/smaps_rollup) counts the copy-on-write pages a job's
forked children share once in total, so a job that forks is measured by what it really uses;
plain RSS counts them once per process (17 GB "used" by a 1 GB parent and 16 children). But
smaps_rollup walks the page tables: 93 ms per poll for that tree against 1.6 ms for RSS
(benchmarks/bench_memory_watchdog.py), more than the 50 ms polling period. PSS never exceeds
RSS, so the watch sums RSS first and walks page tables only when RSS says "over", a few
processes per poll and at most `max_share` of the time (`sandbox/pss.py`).

Memory a job holds outside its processes' page tables is counted too: what its private tmpfs
mounts hold (workspace, /tmp, /dev/shm, deleted-but-open files included: statfs sees them), and
memfds, deduplicated by inode, that a process holds open or has mapped (the mapping's size
for a mapped one). Counted processes are the whole pid namespace when the worker is its pid 1
(the sandbox, a container), so a double-forked daemon is still counted; otherwise the job's
tree. SysV shared memory is refused by the job's seccomp filter where this watch is used.
What it cannot see: the part of a memfd beyond every window mapped of it once its descriptor
is closed (only a cgroup charges that). Where this watch is used on a node without an NVIDIA
GPU, submitted code cannot make one (its seccomp filter refuses memfd_create; the tool's own
memfds are the harness's input regions). The CUDA driver makes a memfd when it initialises, so
on GPU nodes the refusal would break every kernel: there the gap stays open, and cgroups (used
wherever the host allows them) are the bound.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from perfbox.sandbox.pss import PssEstimate
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


def namespace_pids() -> list[int]:
    """Every process of this pid namespace but its pid 1 (the worker reading this)."""
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and e != "1"]


_JOB_MOUNTS = ("/job", "/tmp", "/dev/shm")  # a job's private tmpfs mounts (jobns)


def tmpfs_mounts(pid: int) -> list[str]:
    """The job's private tmpfs mount points, as paths under /proc/PID/root."""
    try:
        lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        fstype = line.split(" - ", 1)[1].split()[0]
        if fstype == "tmpfs" and fields[4] in _JOB_MOUNTS:
            found.append(f"/proc/{pid}/root{fields[4]}")
    return found


def open_mounts(paths: list[str]) -> list[int]:
    """O_PATH descriptors of the mounts: statfs through them keeps working after the job's
    process turns undumpable (its /proc/PID/root is then closed to us)."""
    fds = []
    for path in paths:
        try:
            fds.append(os.open(path, os.O_PATH | os.O_DIRECTORY))
        except OSError:
            continue
    return fds


def job_mounts(pid: int, timeout_s: float = 5.0) -> list[int]:
    """Descriptors of a prepared job process's private tmpfs mounts, waiting up to
    `timeout_s` for it to have mounted them (a sandboxed job sets them up while the worker is
    busy; in a container they are the container's own, there from the start). Call before the
    job is handed over, while the job's /proc entries are still open to the worker."""
    deadline = time.monotonic() + timeout_s
    while True:
        paths = tmpfs_mounts(pid)
        if len(paths) >= 2 or time.monotonic() > deadline:  # /job and /tmp (/dev/shm if any)
            return open_mounts(paths)
        time.sleep(0.005)


def tmpfs_used_bytes(fds: list[int]) -> int:
    total = 0
    for fd in fds:
        try:
            st = os.fstatvfs(fd)
        except OSError:
            continue
        total += (st.f_blocks - st.f_bfree) * st.f_frsize
    return total


def memfds_of(pid: int) -> dict[int, int]:
    """{inode: bytes} of the memfds one process holds open (allocated bytes) or maps (the
    mapping's size)."""
    seen: dict[int, int] = {}
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        fds = []
    for fd in fds:
        try:
            if not os.readlink(f"{fd_dir}/{fd}").startswith("/memfd:"):
                continue
            st = os.stat(f"{fd_dir}/{fd}")
        except OSError:
            continue
        seen[st.st_ino] = max(seen.get(st.st_ino, 0), st.st_blocks * 512)
    for inode, size in _mapped_memfds(pid):
        seen[inode] = max(seen.get(inode, 0), size)
    return seen


def _union(per_pid: list[dict[int, int]]) -> int:
    seen: dict[int, int] = {}
    for files in per_pid:
        for inode, size in files.items():
            seen[inode] = max(seen.get(inode, 0), size)
    return sum(seen.values())


def _mapped_memfds(pid: int) -> list[tuple[int, int]]:
    """(inode, mapped bytes) of every memfd mapping of the process."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        if "/memfd:" not in line:
            continue
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        out.append((int(fields[4]), end - start))
    return out


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
    max_share: float = 0.1  # of the worker's time spent walking page tables, at most
    # the caller is pid 1 of a pid namespace holding only the job: count every process of it
    # (daemons included) and the job's private tmpfs mounts
    whole_namespace: bool = False
    # O_PATH descriptors of the job's tmpfs mounts (`job_mounts`), opened by the worker before
    # the job starts: the job's /proc entries close once its tool turns undumpable; owned here
    mount_fds: list[int] = field(default_factory=list)
    # time one poll may spend listing descriptors and mappings for memfds: a job of a thousand
    # processes with a thousand descriptors and mappings each must not stall the worker (its
    # heartbeat and the job's deadline wait on each poll); the scan resumes where it stopped
    scan_budget_s: float = 0.02
    _pss: PssEstimate | None = None
    _memfds: dict[int, dict[int, int]] = field(default_factory=dict)  # last scan, by pid
    _scan_order: list[int] = field(default_factory=list)  # pids still to scan this round

    def held_outside_processes(self, pids: list[int]) -> int:
        """tmpfs and memfd bytes: memory no process's RSS or PSS shows."""
        return tmpfs_used_bytes(self.mount_fds) + self._memfd_bytes(pids)

    def _memfd_bytes(self, pids: list[int]) -> int:
        """memfds, rescanning processes round-robin within the poll's budget (a process not
        rescanned this poll counts with its last scan; a dead one no longer counts)."""
        alive = set(pids)
        for pid in [p for p in self._memfds if p not in alive]:
            del self._memfds[pid]
        if not self._scan_order:
            self._scan_order = list(pids)
        deadline = time.monotonic() + self.scan_budget_s
        while self._scan_order:  # at least one process per poll, however short the budget
            pid = self._scan_order.pop()
            if pid in alive:
                self._memfds[pid] = memfds_of(pid)
            if time.monotonic() >= deadline:
                break
        return _union(list(self._memfds.values()))

    def close(self) -> None:
        for fd in self.mount_fds:
            os.close(fd)
        self.mount_fds = []

    @property
    def pss_checks(self) -> int:
        """Page-table walks (of one process each) so far."""
        return self._pss.walks if self._pss is not None else 0

    @property
    def pss_seconds(self) -> float:
        return self._pss.walk_s if self._pss is not None else 0.0

    def over(self) -> bool:
        pids = namespace_pids() if self.whole_namespace else tree_pids(self.root)
        outside = self.held_outside_processes(pids)
        rss = {p: rss_bytes(p) for p in pids}
        if sum(rss.values()) + outside <= self.limit_bytes:
            return False  # PSS <= RSS: under by RSS is under
        if self._pss is None:
            self._pss = PssEstimate(lambda pid: pss_bytes(pid), self.max_share)
        return self._pss.over(self.limit_bytes, rss, outside)
