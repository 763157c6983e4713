"""The seccomp filter every job runs under: system calls no kernel tool needs are refused.

A job already lives in its own user, mount, network, IPC and UTS namespaces with no
capabilities, so most of what is refused here would fail anyway; the filter removes the kernel
attack surface that stays reachable from an unprivileged user namespace (and is where sandbox
escapes have come from): nested namespaces (a new user namespace grants capabilities inside it,
and with them fresh mounts that no memory limit counts), new mount APIs, keyrings, BPF,
userfaultfd, io_uring, module loading, clocks, and cross-process tracing. Signals to pid 1 (the
worker, or the host's init on the development backend) are refused too, so a job cannot even
try to wedge its worker.

Deny-list by design: jobs run nvcc, ptxas, Triton, PyTorch and CUDA, whose system calls are not
enumerated here. Exceptions by tool:
- `profile` keeps `perf_event_open`: Nsight Systems samples CPU backtraces with it (Nsight
  Compute does not need it; it talks to the driver).
- SysV shared memory (`shmget`) is refused only where memory is watched without a cgroup: a
  segment is owned by no process and would escape the watchdog's count; under a cgroup it is
  charged like any page.
Filters are inherited by every process a job starts and cannot be removed; check and bench
stack their own, stricter filter on the submission's process (`perfbox.tools.harness.confine`).
"""

from __future__ import annotations

import ctypes
import errno
import os

from perfbox.tools.harness.confine import add_rule

PR_SET_NO_NEW_PRIVS = 38
# refused whatever their arguments
_ALWAYS_DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "keyctl", "add_key", "request_key", "bpf", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "swapon", "swapoff", "reboot", "acct", "syslog", "quotactl", "vhangup",
    "iopl", "ioperm", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "fanotify_init",
)
# clone flags that would make a nested namespace
_NAMESPACE_FLAGS = (0x10000000, 0x00020000, 0x20000000, 0x40000000, 0x08000000, 0x04000000,
                    0x02000000)  # NEWUSER, NEWNS, NEWPID, NEWNET, NEWIPC, NEWUTS, NEWCGROUP
# (system call, index of its pid argument): refused when that pid is 1 (the worker)
_NOT_TO_PID_1 = (("kill", 0), ("tgkill", 0), ("rt_sigqueueinfo", 0), ("rt_tgsigqueueinfo", 0),
                 ("pidfd_open", 0))


class JobFilterUnavailable(RuntimeError):
    """The filter cannot be installed here (no libseccomp): the node cannot run jobs safely."""


def install(tool: str, watchdog: bool) -> None:
    """Installs the job filter in the calling process (before any tool code runs)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise JobFilterUnavailable(f"prctl(NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    try:
        build(tool, watchdog).load()
    except (ImportError, RuntimeError, OSError) as e:
        raise JobFilterUnavailable(f"cannot install the job's seccomp filter: {e}") from e


def build(tool: str, watchdog: bool):  # -> pyseccomp.SyscallFilter
    import pyseccomp as sc

    deny = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(defaction=sc.ALLOW)
    denied = list(_ALWAYS_DENIED)
    if tool != "profile":
        denied.append("perf_event_open")
    if watchdog:
        denied.append("shmget")
    for name in denied:
        add_rule(f, deny, name)
    for flag in _NAMESPACE_FLAGS:
        add_rule(f, deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    add_rule(f, sc.ERRNO(errno.ENOSYS), "clone3")  # flags in a struct: the C library falls back
    for name, index in _NOT_TO_PID_1:
        add_rule(f, deny, name, sc.Arg(index, sc.EQ, 1))
    return f
