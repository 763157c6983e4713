"""Running submitted code perfbox must load (a Triton module, to compile its kernel) where it
cannot forge what the tool reports.

The tool's process holds the channel its answer leaves by. Code it does not trust therefore
runs in a forked child: confined by the same seccomp filter as a check/bench submission (no
signals, tracing or memory access to other processes), with the tool's process made undumpable
first (the child cannot open its descriptors or memory through /proc), and with every
descriptor closed but stdio and its report pipe. The child reports on a pipe of its own, in a bounded JSON object
the tool checks field by field; everything else the tool reports it observes itself: files on
disk, which it reads and hands to trusted programs (ptxas), and how the child ended.

A child that dies by a signal is the call's answer (`how_it_ended`): SIGXFSZ and SIGXCPU are
limits the job hit (a file too large, CPU time), anything else the submission's runtime error.
(A SIGKILL from the memory cgroup is named by the sandbox, which sees the cgroup's OOM count.)
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from perfbox.tools.types import Status

MAX_REPORT_BYTES = 1 << 20  # the child's JSON report
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


class UntrustedReportError(ValueError):
    """The child's report is not what the tool asked for."""


class SubmissionEnded(Exception):
    """The submitted code ended its process, broke its report or hit a limit: the call's
    answer is `status` (RUNTIME_ERROR unless a limit), the message says how it ended."""

    def __init__(self, message: str, status: Status = Status.RUNTIME_ERROR) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ChildEnd:
    """How the confined child ended and what it reported."""

    exit_code: int  # its exit status when it exited (0 when killed)
    signal: int  # the signal that killed it, 0 when it exited
    report: dict[str, Any] | None  # its JSON report, None when it wrote none (or a bad one)
    report_error: str = ""  # why the report was unusable, "" when fine or absent


def _set_dumpable(on: bool) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1 if on else 0, 0, 0, 0)


def run_confined(body: Callable[[], dict[str, Any]]) -> ChildEnd:
    """Runs `body` in a confined child and returns how it ended; its returned dict is the
    report (JSON-serialisable, at most MAX_REPORT_BYTES)."""
    from perfbox.tools.harness.confine import confine_process

    read_fd, write_fd = os.pipe()
    _set_dumpable(False)
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # its orphans come to us
    before = _children()
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: confined, then the untrusted body; never returns
        os.close(read_fd)
        code = 0
        try:
            # nothing of the tool's but stdio and its own report pipe: above all not the
            # channel the tool's answer leaves by
            os.closerange(3, write_fd)
            os.closerange(write_fd + 1, 1 << 16)
            _set_dumpable(True)  # the sandbox's memory watch reads it; the tool stays closed
            confine_process()  # memfds refused where the sandbox says (no cgroup, no GPU)
            data = json.dumps(body()).encode()
            os.write(write_fd, data[:MAX_REPORT_BYTES + 1])
        except SystemExit as e:  # the module called sys.exit(): keep its code
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - the child must always exit here
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    data, status = _collect(read_fd, pid)
    _kill_leftovers(before)
    code = os.waitstatus_to_exitcode(status)
    report, error = _parse(data)
    return ChildEnd(max(code, 0), -code if code < 0 else 0, report, error)


def _collect(fd: int, pid: int) -> tuple[bytes, int]:
    """The child's report (bounded) and its wait status. Reading stops when the child has
    exited, not at EOF (processes it forked may hold the pipe open forever), or when the report
    passes its bound: the pipe is closed then, and a child still writing gets EPIPE."""
    chunks: list[bytes] = []
    total = 0
    status = None
    open_fd: int | None = fd
    try:
        while status is None:
            if open_fd is not None and select.select([open_fd], [], [], 0.05)[0]:
                chunk = os.read(open_fd, 65536)
                chunks.append(chunk)
                total += len(chunk)
                if total > MAX_REPORT_BYTES or not chunk:
                    os.close(open_fd)
                    open_fd = None
            elif open_fd is None:
                time.sleep(0.05)
            waited, raw = os.waitpid(pid, os.WNOHANG)
            status = raw if waited else None
        if open_fd is not None:
            total += _drain(open_fd, chunks, MAX_REPORT_BYTES + 1 - total)
    finally:
        if open_fd is not None:
            os.close(open_fd)
    return b"".join(chunks), status


def _drain(fd: int, chunks: list[bytes], room: int) -> int:
    """What the child wrote just before it exited (without blocking), up to `room` bytes."""
    os.set_blocking(fd, False)
    read = 0
    while read < room:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        read += len(chunk)
    return read


def _children() -> set[int]:
    """This process's children (the kernel hands orphans to its main thread)."""
    from perfbox.tools.harness.proctree import children

    return set(children(os.getpid(), main_thread_only=True))


def _kill_leftovers(before: set[int]) -> None:
    """Kills what the child left running (re-parented to this subreaper), so nothing of the
    submission's outlives its step of the tool."""
    for _ in range(100):
        leftovers = _children() - before
        if not leftovers:
            return
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def _parse(data: bytes) -> tuple[dict[str, Any] | None, str]:
    if not data:
        return None, ""
    if len(data) > MAX_REPORT_BYTES:
        return None, f"the report exceeds {MAX_REPORT_BYTES} bytes"
    try:
        report = json.loads(data)
    except (ValueError, RecursionError) as e:
        return None, f"the report is not JSON: {e}"
    if not isinstance(report, dict):
        return None, "the report is not a JSON object"
    return report, ""


def how_it_ended(end: ChildEnd, what: str) -> SubmissionEnded:
    """The answer for a child that did not finish `what`: a limit's status for the signals the
    kernel sends for limits, else the submission's RUNTIME_ERROR saying how it ended."""
    if end.signal == signal.SIGXFSZ:
        return SubmissionEnded(f"{what}: a file grew past the job's file-size limit "
                               "(limits.max_file_bytes)", Status.OUTPUT_LIMIT)
    if end.signal == signal.SIGXCPU:
        return SubmissionEnded(f"{what}: the job's CPU-time limit was reached", Status.TIMEOUT)
    if end.signal:
        return SubmissionEnded(f"{what}: the process was killed by "
                               f"{signal.Signals(end.signal).name}")
    why = f" ({end.report_error})" if end.report_error else ""
    return SubmissionEnded(f"{what}: the process exited with code {end.exit_code} before it "
                           f"finished{why}")


def text(report: dict[str, Any], key: str, limit: int = 4000) -> str:
    """A string field of the report, checked and bounded."""
    value = report.get(key, "")
    if not isinstance(value, str):
        raise UntrustedReportError(f"{key} is not a string")
    return value[:limit]


def integer(report: dict[str, Any], key: str, low: int = 0, high: int = 1 << 31) -> int:
    """An integer field of the report within [low, high]."""
    value = report.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UntrustedReportError(f"{key} is not an integer in [{low}, {high}]")
    return value
