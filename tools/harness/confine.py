"""What the submission's process can no longer do to anybody else, set before its code loads.

The tool, the reference side and the submission share a uid and (inside a sandbox job) a pid
namespace, so without this the submission could `kill(SIGSTOP)` the reference, renice it,
re-affine it, ptrace the tool, or arrange for the kernel to signal them later (`F_SETOWN` on a
pipe). A seccomp filter (libseccomp through `pyseccomp`) answers EPERM to every system call
that acts on *another* process: signals to any pid but its own, `setpriority`/`sched_*`/
`prlimit`/`ioprio_set`/`migrate_pages` on any pid but itself (0), ptrace, cross-process memory,
pidfds, `perf_event_open`, io_uring, and signal ownership of file descriptors. It also pins the
process to the CPUs the tool chose and forbids changing that, so the submission cannot win by
spreading over more cores than the reference gets: thread counts and CPUs are the tool's.

Filters are inherited by every process and thread the submission creates and cannot be
removed. The filter is a deny-list on purpose: the submission runs PyTorch, Triton and CUDA,
whose system calls we do not enumerate; what is denied is exactly "act on another process".
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
from dataclasses import dataclass

from perfbox.tools.harness import host_load

PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
PR_SET_PDEATHSIG = 1
PRIO_PROCESS, IOPRIO_WHO_PROCESS = 0, 1
SCMP_FLTATR_CTL_SSB = 7  # libseccomp's enum scmp_filter_attr
F_SETOWN, F_SETSIG, F_SETOWN_EX = 8, 10, 15
FIOSETOWN, SIOCSPGRP = 0x8901, 0x8902
# system calls refused whatever their arguments
_ALWAYS_DENIED = ("tkill", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
                  "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "process_madvise",
                  "process_mrelease", "perf_event_open", "io_uring_setup", "io_uring_enter",
                  "io_uring_register", "sched_setaffinity", "move_pages", "migrate_pages")
# (system call, index of the pid argument): refused unless that argument is 0 (the caller)
_SELF_ONLY = (("setpriority", 1), ("sched_setscheduler", 0), ("sched_setparam", 0),
              ("sched_setattr", 0), ("prlimit64", 0), ("ioprio_set", 1))


class ConfinementUnavailable(RuntimeError):
    """The node cannot confine a submission (no libseccomp): measuring would be unsound."""


@dataclass(frozen=True)
class Placement:
    """Where and how wide both sides of a measurement run: the tool's choice, never theirs."""

    cpus: tuple[int, ...]  # CPU ids the side is pinned to
    threads: int  # intra-op threads (torch.set_num_threads), equal to len(cpus)


def available() -> str:
    """"" when confinement works here, else why not (a node problem, said to the caller)."""
    try:
        import pyseccomp  # noqa: F401  (imported to see that it loads here)
    except (ImportError, RuntimeError) as e:
        return f"the submission cannot be confined on this node: {e} (pip install pyseccomp; " \
               "libseccomp2 from the OS)"
    return ""


def choose_placement(threads: int) -> Placement:
    """The `threads` least busy CPUs this process may use, measured over a short window, so a
    core hogged by another tenant is avoided when there is a choice. Both sides get the same
    CPUs: they never run at once (the one not being timed is frozen), so they see the same
    caches and the same outside load."""
    allowed = sorted(os.sched_getaffinity(0))
    threads = max(1, min(threads, len(allowed)))
    if threads == len(allowed):
        return Placement(tuple(allowed), threads)
    busy = host_load.busy_fraction(allowed)
    chosen = sorted(sorted(allowed, key=lambda c: (busy.get(c, 0.0), -c))[:threads])
    return Placement(tuple(chosen), threads)


M_MMAP_THRESHOLD = -3  # mallopt parameter
MMAP_THRESHOLD_BYTES = 128 << 10  # glibc's default, fixed (setting it stops the adaptation)


def place(placement: Placement) -> None:
    """Pins the calling process, sets torch's thread count and fixes glibc's mmap threshold
    (both sides, before any code of theirs runs). glibc adapts the threshold to what a process
    freed before, so two sides forked at different moments would allocate a call's output
    differently (fresh pages per call in one, a reused heap block in the other); and a reused
    block keeps one physical placement for the process's life, whose cache conflicts made an
    identical memory-bound kernel 10-25% faster or slower depending on the process. Large
    buffers on fresh pages every call average that out, in both sides alike."""
    ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    os.sched_setaffinity(0, placement.cpus)
    try:
        import torch

        torch.set_num_threads(placement.threads)
    except ImportError:
        pass


def confine_side(placement: Placement) -> None:
    """Called in a side's process after it is forked and before any code of the problem's or
    the submission's loads. Raises ConfinementUnavailable when the filter cannot be installed:
    the caller reports it and never runs the submission unconfined. Both sides get the same
    filter, so both run under the same kernel conditions (a filtered task's system calls pay
    for the filter; and without SCMP_FLTATR_CTL_SSB the kernel would also turn on speculative
    store bypass mitigation for a filtered task only, slowing it by tens of percent)."""
    place(placement)
    confine_process()


# Set (to "1") by the sandbox where memory is watched without a cgroup on a node without an
# NVIDIA GPU: the sides may not make memfds there (see _seccomp_filter).
DENY_MEMFD_ENV = "PERFBOX_DENY_MEMFD"


def confine_process(deny_memfd: bool | None = None) -> None:
    """The filter alone (no placement), for any process running code perfbox does not trust
    (a Triton module being imported for a compile, for one): no_new_privs, then the filter.
    `deny_memfd` None: as the sandbox said in DENY_MEMFD_ENV. Raises ConfinementUnavailable
    when it cannot be installed."""
    if deny_memfd is None:
        deny_memfd = os.environ.get(DENY_MEMFD_ENV) == "1"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise ConfinementUnavailable("prctl(NO_NEW_PRIVS) failed: "
                                     f"{os.strerror(ctypes.get_errno())}")
    try:
        _seccomp_filter(os.getpid(), deny_memfd).load()
    except (ImportError, RuntimeError, OSError) as e:
        raise ConfinementUnavailable(f"cannot install the seccomp filter: {e}") from e


def _seccomp_filter(self_pid: int, deny_memfd: bool):  # -> pyseccomp.SyscallFilter
    import pyseccomp as sc

    deny = sc.ERRNO(errno.EPERM)
    f = sc.SyscallFilter(defaction=sc.ALLOW)
    try:
        f.set_attr(SCMP_FLTATR_CTL_SSB, 1)  # SECCOMP_FILTER_FLAG_SPEC_ALLOW
    except (OSError, ValueError, RuntimeError):
        pass  # an old libseccomp: both sides are filtered alike anyway
    for name in _ALWAYS_DENIED:
        add_rule(f, deny, name)
    # signals: only to itself (the process the filter was installed in), and never SIGCONT:
    # one of its processes must not wake another that the tool has just frozen
    for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        add_rule(f, deny, name, sc.Arg(0, sc.NE, self_pid))
    for name, sig_index in (("kill", 1), ("tgkill", 2), ("rt_sigqueueinfo", 1),
                            ("rt_tgsigqueueinfo", 2)):
        add_rule(f, deny, name, sc.Arg(sig_index, sc.EQ, signal.SIGCONT))
    # nor have the kernel send one later: POSIX timers and message queue notifications can
    # name any signal in a struct the filter cannot read (refused outright), a child's exit
    # signal and the parent-death signal can be SIGCONT; clone3 takes its flags in a struct
    # (ENOSYS: the C library falls back to clone, whose flags the filter reads)
    for name in ("timer_create", "mq_notify"):
        add_rule(f, deny, name)
    # memory the sandbox's no-cgroup watchdog cannot follow once its descriptor is closed (an
    # anonymous file kept alive by a small mapping); a CPU side needs none (the tool makes the
    # input region and hands it over), but the CUDA driver makes one when it initialises, so
    # it is refused only where no cgroup counts memory and no GPU is used
    if deny_memfd:
        add_rule(f, deny, "memfd_create")
    add_rule(f, sc.ERRNO(errno.ENOSYS), "clone3")
    add_rule(f, deny, "clone", sc.Arg(0, sc.MASKED_EQ, 0xFF, signal.SIGCONT))
    add_rule(f, deny, "prctl", sc.Arg(0, sc.EQ, PR_SET_PDEATHSIG), sc.Arg(1, sc.EQ, signal.SIGCONT))
    # it stays readable by the tool, which reads its outputs from its memory
    add_rule(f, deny, "prctl", sc.Arg(0, sc.EQ, PR_SET_DUMPABLE))
    for name, index in _SELF_ONLY:
        add_rule(f, deny, name, sc.Arg(index, sc.NE, 0))
    # who=0 means "the caller" only with PRIO_PROCESS / IOPRIO_WHO_PROCESS; with a group or
    # user selector it reaches every process of the uid, the reference's included
    add_rule(f, deny, "setpriority", sc.Arg(0, sc.NE, PRIO_PROCESS))
    add_rule(f, deny, "ioprio_set", sc.Arg(0, sc.NE, IOPRIO_WHO_PROCESS))
    # the kernel signalling someone else on the submission's behalf, later (SIGIO owners)
    for cmd in (F_SETOWN, F_SETSIG, F_SETOWN_EX):
        add_rule(f, deny, "fcntl", sc.Arg(1, sc.EQ, cmd))
    for cmd in (FIOSETOWN, SIOCSPGRP):
        add_rule(f, deny, "ioctl", sc.Arg(1, sc.EQ, cmd))
    return f


def add_rule(f, action: int, name: str, *args) -> None:  # noqa: ANN001 - pyseccomp types
    try:
        f.add_rule(action, name, *args)
    except (ValueError, OSError):
        pass  # a system call this kernel/architecture does not have cannot be used either
