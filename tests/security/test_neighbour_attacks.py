"""The submission's process must not reach the reference, the tool or its clock: no signal,
renice, re-affinity, ptrace, cross-process memory, pidfd or SIGIO ownership of anything but
itself, and nothing it leaves running runs while the reference is timed.

Each attack runs in ModelNew's constructor (after the submission's process is confined, as
all of a submission's code is) and raises "ESCAPED" if the system call was *not* refused, so a
check that ends OK proves every attempt was refused; the bench attacks also assert that the
attack bought no speedup against an identical reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfbox.tools.types import Status
from tests.security.problems import honest, run

REFUSED = """
import ctypes, errno, fcntl, os, resource, signal
def _refused(what, attempt):
    try:
        result = attempt()
    except PermissionError:
        return
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            return
        raise
    if result is not None and result == -1 and ctypes.get_errno() in (errno.EPERM, errno.EACCES):
        return
    raise RuntimeError("ESCAPED: " + what)
_libc = ctypes.CDLL(None, use_errno=True)
"""

ATTEMPTS = {
    "SIGSTOP the parent (the tool, holder of the clock)":
        "os.kill(os.getppid(), signal.SIGSTOP)",
    "SIGSTOP the process group": "os.kill(0, signal.SIGSTOP)",
    "SIGSTOP every process": "os.kill(-1, signal.SIGSTOP)",
    "tgkill a thread of the parent": "_libc.syscall(234, os.getppid(), os.getppid(), 19)",
    "renice the parent": "os.setpriority(os.PRIO_PROCESS, os.getppid(), 19)",
    "renice every process of the uid": "os.setpriority(os.PRIO_USER, 0, 19)",
    "renice the process group": "os.setpriority(os.PRIO_PGRP, 0, 19)",
    "re-affine the parent": "os.sched_setaffinity(os.getppid(), {0})",
    "widen its own affinity": "os.sched_setaffinity(0, set(range(os.cpu_count())))",
    "SCHED_IDLE the parent": "os.sched_setscheduler(os.getppid(), os.SCHED_IDLE, "
                             "os.sched_param(0))",
    "lower the parent's CPU limit": "resource.prlimit(os.getppid(), resource.RLIMIT_CPU, (1, 1))",
    "ptrace the parent": "_libc.ptrace(16, os.getppid(), 0, 0)",
    "read the parent's memory": "_libc.process_vm_readv(os.getppid(), 0, 0, 0, 0, 0)",
    "pidfd of the parent": "os.pidfd_open(os.getppid())",
    "make the kernel SIGIO the parent later": "fcntl.fcntl(0, fcntl.F_SETOWN, os.getppid())",
    "SIGCONT itself (a frozen sibling would wake)": "os.kill(os.getpid(), signal.SIGCONT)",
    "a POSIX timer (it could deliver SIGCONT while frozen)":
        "_libc.timer_create(1, None, ctypes.byref(ctypes.c_void_p()))",
    "a message-queue notification signal": "_libc.mq_notify(0, None)",
    "SIGCONT as its parent-death signal": "_libc.prctl(1, signal.SIGCONT, 0, 0, 0)",
    "SIGSTOP every pid it can see in /proc": "[os.kill(int(p), signal.SIGSTOP) for p in "
                                             "os.listdir('/proc') if p.isdigit() and "
                                             "int(p) != os.getpid()] and None",
}


@pytest.mark.parametrize("what, code", ATTEMPTS.items(), ids=list(ATTEMPTS))
def test_system_call_on_another_process_is_refused(tmp_path: Path, what: str, code: str
                                                   ) -> None:
    init = f"_refused({what!r}, lambda: {code})"
    out = run(tmp_path, "check", "relu.py", honest("relu.py", REFUSED, init_body=init),
              num_input_sets=1)
    assert out.status == Status.OK, (what, out.summary)


SPINNERS = """
import os
def _spin_forever():
    for _ in range(2):
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:  # double fork: re-parented away from the submission
                while True:
                    pass
            os._exit(0)
"""


def test_processes_left_spinning_do_not_slow_the_reference(tmp_path: Path) -> None:
    """Spinners the submission leaves behind (double-forked, own session) are frozen with it
    while the reference is timed: against an identical reference they buy nothing."""
    out = run(tmp_path, "bench", "relu.py", honest("relu.py", SPINNERS, init_body="_spin_forever()"))
    assert out.status == Status.OK, out.summary
    assert out.report["speedup"] < 1.3, out.summary


def test_renicing_everything_buys_nothing(tmp_path: Path) -> None:
    attack = ("for _p in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
              "    try:\n        os.setpriority(os.PRIO_PROCESS, int(_p), 19)\n"
              "    except OSError:\n        pass\n"
              "torch.set_num_threads(os.cpu_count())")
    out = run(tmp_path, "bench", "relu.py", honest("relu.py", "import os", init_body=attack))
    assert out.status == Status.OK, out.summary
    assert out.report["speedup"] < 1.3 and out.report["threads"] == 1, out.summary
