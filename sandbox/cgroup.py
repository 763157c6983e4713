"""Per-worker control groups: the memory and process-count limits of the jobs a worker runs.

cgroup v2 where the unified hierarchy is writable with the memory and pids controllers, else the
v1 memory and pids hierarchies, else none (the worker then falls back to an RSS watchdog and
RLIMIT_NPROC). Memory is limited here, never with RLIMIT_AS, which breaks CUDA's large virtual
reservations.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class CgroupCounters:
    """Snapshot taken before a job, compared after it to tell an OOM kill."""

    oom_kills: int


class WorkerCgroup:
    """One cgroup (v2) or a memory+pids pair (v1) holding one worker and its jobs."""

    def __init__(self, version: int, dirs: dict[str, Path]) -> None:
        self.version = version
        self.dirs = dirs  # controller ("memory", "pids", or "unified") -> directory

    @property
    def procs_files(self) -> list[str]:
        """Files a process writes its pid to, to join this cgroup."""
        return [str(d / "cgroup.procs") for d in dict.fromkeys(self.dirs.values())]

    def _file(self, controller: str, v1_name: str, v2_name: str) -> Path:
        if self.version == 2:
            return self.dirs["unified"] / v2_name
        return self.dirs[controller] / v1_name

    def set_memory_bytes(self, limit: int) -> None:
        """Memory (and, where accounted, memory+swap: no swapping past the limit) of the group."""
        if self.version == 2:
            files = [self.dirs["unified"] / "memory.max", self.dirs["unified"] / "memory.swap.max"]
            values = [str(limit), "0"]
        else:
            files = [self.dirs["memory"] / "memory.limit_in_bytes"]
            swap = self.dirs["memory"] / "memory.memsw.limit_in_bytes"
            files += [swap] if swap.exists() else []
            values = [str(limit)] * len(files)
        # v1 wants memory <= memsw at every step: raise memsw first when growing, last when
        # shrinking. Try one order, then the other.
        for order in (list(zip(files, values)), list(zip(files, values))[::-1]):
            try:
                for path, value in order:
                    path.write_text(value)
                return
            except OSError as e:
                error = e
        log.warning("cannot set memory limit %d on %s: %s", limit, files[0], error)

    def set_max_processes(self, limit: int) -> None:
        path = self._file("pids", "pids.max", "pids.max")
        try:
            path.write_text(str(limit))
        except OSError as e:
            log.warning("cannot set pids limit on %s: %s", path, e)

    def memory_usage_bytes(self) -> int:
        path = self._file("memory", "memory.usage_in_bytes", "memory.current")
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return 0

    def counters(self) -> CgroupCounters:
        path = self._file("memory", "memory.oom_control", "memory.events")
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return CgroupCounters(oom_kills=int(value))
        except (OSError, ValueError):
            pass
        return CgroupCounters(oom_kills=0)

    def kill_all(self) -> None:
        """SIGKILL to every process in the group (cgroup.kill where the kernel has it: atomic,
        so a forking process cannot outrun it), then waits until the group is empty."""
        for directory in dict.fromkeys(self.dirs.values()):
            kill_file = directory / "cgroup.kill"
            if self.version == 2 and kill_file.exists():
                try:
                    kill_file.write_text("1")
                except OSError as e:
                    log.debug("cgroup.kill on %s: %s", directory, e)
            _kill_all(directory)

    def remove(self) -> None:
        """Removes the cgroup directories (after every process in them has exited)."""
        for directory in dict.fromkeys(self.dirs.values()):
            _kill_all(directory)
            try:
                directory.rmdir()
            except OSError as e:
                log.warning("cannot remove cgroup %s: %s", directory, e)


def _kill_all(directory: Path, timeout_s: float = 5.0) -> None:
    """Kills every process in the group and waits until the group is empty."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pids = (directory / "cgroup.procs").read_text().split()
        except OSError:
            return
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError, PermissionError):
                pass
        time.sleep(0.02)


def _empty_children(parent: Path) -> None:
    """Kills the processes of every worker cgroup under `parent` and removes them."""
    for child in [c for c in parent.iterdir() if c.is_dir()] if parent.is_dir() else []:
        _kill_all(child)
        try:
            child.rmdir()
        except OSError:
            pass


def _remove_stale(base: Path, keep: str) -> None:
    """Removes the cgroups a perfbox server that no longer runs left under `base` (one killed
    before it could stop): their processes are killed, the directories removed."""
    for server in base.glob("perfbox-*-*"):
        if server.name == keep:
            continue
        try:
            pid = int(server.name.split("-")[1])
            os.kill(pid, 0)
            continue  # that server still runs
        except (ValueError, IndexError):
            continue
        except PermissionError:
            continue
        except ProcessLookupError:
            pass
        _empty_children(server)
        try:
            server.rmdir()
            log.warning("removed cgroup %s of a perfbox server that no longer runs", server)
        except OSError as e:
            log.debug("cannot remove stale cgroup %s: %s", server, e)


def _own_cgroup(controller: str) -> str | None:
    """This process's path in a v1 controller hierarchy (or the v2 one with controller "")."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller == "" and controllers == "":
            return path
        if controller and controller in controllers.split(","):
            return path
    return None


class CgroupManager:
    """Creates worker cgroups under a per-server parent; None-safe when cgroups are unusable."""

    def __init__(self, name: str) -> None:
        self.name = name  # e.g. "perfbox-1234": unique per server process
        self.version = 0
        self.parents: dict[str, Path] = {}
        self._detect()

    def _detect(self) -> None:
        try:
            self._detect_v2() or self._detect_v1()
        except OSError as e:
            log.info("cgroups unusable (%s); using rlimits and an RSS watchdog", e)
            self.version, self.parents = 0, {}
        for parent in self.parents.values():
            _remove_stale(parent.parent, keep=self.name)


    def _detect_v2(self) -> bool:
        own = _own_cgroup("")
        base = CGROUP_ROOT if (CGROUP_ROOT / "cgroup.controllers").exists() else None
        if own is None or base is None:
            return False
        parent = base / own.lstrip("/") / self.name
        parent.mkdir(exist_ok=True)
        controllers = (parent / "cgroup.controllers").read_text().split()
        if not {"memory", "pids"} <= set(controllers):
            parent.rmdir()
            return False
        (parent / "cgroup.subtree_control").write_text("+memory +pids")
        self.version, self.parents = 2, {"unified": parent}
        return True

    def _detect_v1(self) -> bool:
        parents = {}
        for controller in ("memory", "pids"):
            own = _own_cgroup(controller)
            base = CGROUP_ROOT / controller
            if own is None or not base.is_dir():
                return False
            parent = base / own.lstrip("/") / self.name
            parent.mkdir(exist_ok=True)
            parents[controller] = parent
        self.version, self.parents = 1, parents
        return True

    @property
    def available(self) -> bool:
        return self.version != 0

    def create(self, worker: str) -> WorkerCgroup | None:
        if not self.available:
            return None
        dirs = {}
        try:
            for controller, parent in self.parents.items():
                path = parent / worker
                path.mkdir(exist_ok=True)
                dirs[controller] = path
        except OSError as e:
            log.warning("cannot create cgroup for %s: %s", worker, e)
            return None
        return WorkerCgroup(self.version, dirs)

    def close(self) -> None:
        for parent in self.parents.values():
            _empty_children(parent)
            try:
                parent.rmdir()
            except OSError as e:
                log.warning("cannot remove cgroup %s: %s", parent, e)
