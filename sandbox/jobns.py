"""A fresh sandbox for one job, entered by a process forked from a warm worker.

The warm worker (the zygote) already lives in a bubblewrap sandbox: read-only root, no network,
no capabilities, an unprivileged uid, its own pid namespace of which it is pid 1. Each job it
forks additionally gets its own user, mount, network, IPC and UTS namespaces, fresh tmpfs mounts
on the workspace, /tmp and /dev/shm, rlimits and no capabilities, so nothing one job leaves behind
is visible to the next.

Python 3.11 has no os.unshare/os.mount, hence ctypes.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import socket
from pathlib import Path

from perfbox.sandbox.limits import JOB_NOFILE, WORKSPACE_BYTES, JobLimits

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_LAST_CAP = 63

_libc = ctypes.CDLL(None, use_errno=True)


class SandboxSetupError(RuntimeError):
    """The job's namespaces or mounts could not be created."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SandboxSetupError(f"{what}: {os.strerror(err)}")


def die_with_parent() -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                    flags, data.encode() if data else None),
        f"mount {target}",
    )


def enter_namespaces() -> None:
    """Unshares the user, mount, network, IPC and UTS namespaces for the calling job process.

    The pid namespace is the worker's own (the worker is its pid 1): a nested one would need a
    fresh /proc, which the kernel refuses to mount under bubblewrap's masked /proc, and tools such
    as cuobjdump crash when /proc does not match their pid. As pid 1 the worker cannot be
    signalled by its jobs, and after each job it kills every other process in the namespace.
    """
    uid, gid = os.getuid(), os.getgid()
    die_with_parent()
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC
                         | CLONE_NEWUTS), "unshare")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def mount_fresh_filesystems(workdir: str, keep_under_tmp: list[str]) -> None:
    """Private tmpfs for the workspace, /tmp and /dev/shm: empty for every job.

    `keep_under_tmp` are read-only code paths (a checkout or virtualenv living under /tmp) that
    the fresh /tmp would hide; they are bound back, read-only, from descriptors opened before.
    """
    _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    size = f"size={WORKSPACE_BYTES},mode=0755"
    _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, size)
    kept = [(path, os.open(path, os.O_PATH)) for path in keep_under_tmp if os.path.exists(path)]
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={WORKSPACE_BYTES},mode=1777")
    for path, fd in kept:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(path, mode=0o755, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            Path(path).touch()
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC, None)
        os.close(fd)
        # The source was bound read-only by bubblewrap and that flag is locked into the copy;
        # check rather than trust it.
        if not os.statvfs(path).f_flag & os.ST_RDONLY:
            raise SandboxSetupError(f"{path} would be writable inside the job")
    if os.path.isdir("/dev/shm"):
        _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777")
    socket.sethostname("job")


def apply_rlimits(limits: JobLimits, limit_processes: bool) -> None:
    """Per-process limits; memory is the cgroup's (RLIMIT_AS would break CUDA)."""
    cpu_s = max(1, -(-limits.cpu_time_ms // 1000))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (JOB_NOFILE, JOB_NOFILE))
    if limit_processes:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    # Python ignores SIGXFSZ; restore the default so an oversized write kills the writer and
    # the zygote can report OUTPUT_LIMIT instead of a confusing EFBIG traceback.
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)


def prefer_as_oom_victim() -> None:
    """Under memory pressure the job, not the warm worker, is killed."""
    try:
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Drops the capabilities the new user namespace granted (bounding set, then all sets)."""
    for cap in range(_LAST_CAP + 1):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last cap
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")
