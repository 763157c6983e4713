"""The warm worker: imports the heavy modules once, then forks one fresh sandbox per job.

Run as `python -m perfbox.sandbox.zygote` by the server, inside a bubblewrap sandbox (or bare,
for the development-only `process` backend). It reads job and cancel frames on stdin and
answers on stdout with ready, started, log, heartbeat (every HEARTBEAT_PERIOD_S during a job)
and done frames (perfbox.sandbox.worker_protocol).

The worker itself never runs submitted code: each job is a forked child that enters new
namespaces (`jobns`, `job_process`), so it starts from the worker's pristine memory with the
imports done and from empty filesystems, and everything it starts dies when its pid-1 dies.

Nothing a job does reaches the worker's control: after the imports the worker resets every
signal handler a library installed (as pid 1 of its namespace, a signal whose action is the
default is then dropped by the kernel, whoever sends it), the job's seccomp filter refuses
signals to pid 1 anyway, the job's result frame is bounded and checked against the outcome
schema before it is relayed, and the server hears a heartbeat while a job runs: a worker that
stops answering is killed with everything in its sandbox.
"""

from __future__ import annotations

import argparse
import gc
import os
import selectors
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from perfbox.sandbox import framing, job_process, jobns, worker_setup
from perfbox.sandbox.worker_protocol import (CancelFrame, DoneFrame, Frame, HeartbeatFrame,
                                             JobFrame, KillReason, LogFrame, OUTCOME_KIND,
                                             ReadyFrame, StartedFrame, encode, parse)
from perfbox.sandbox.limits import (HEARTBEAT_PERIOD_S, MAX_LOG_EVENT_BYTES, MAX_RESULT_BYTES,
                                    MAX_STREAM_KEEP_BYTES, JobLimits)
from perfbox.sandbox.memory_watch import MemoryWatch, job_mounts
from perfbox.tools.text import HeadTailBuffer
from perfbox.tools.types import OutcomeError, ToolOutcome

WATCHDOG_PERIOD_S = 0.05


@dataclass
class _Spare:
    """A forked job process waiting for its job on `job_w`, and the pipes it reports on."""

    pid: int
    job_w: int
    out_r: int
    err_r: int
    res_r: int
    workspace: str  # the process backend's workspace (the worker made it); "" when isolated


@dataclass
class _RunningJob:
    """Bookkeeping of the one job a worker runs at a time."""

    job_id: str
    pid: int
    limits: JobLimits
    started: float
    stdout: HeadTailBuffer = field(default_factory=lambda: HeadTailBuffer(MAX_STREAM_KEEP_BYTES))
    stderr: HeadTailBuffer = field(default_factory=lambda: HeadTailBuffer(MAX_STREAM_KEEP_BYTES))
    result_chunks: list[bytes] = field(default_factory=list)
    result_bytes: int = 0  # read from the result pipe so far (bounded by MAX_RESULT_BYTES)
    logged_bytes: int = 0
    killed: KillReason = KillReason.NONE


class Zygote:
    def __init__(self, isolate: bool, ctrl_in: int, ctrl_out: int) -> None:
        self.isolate = isolate
        self.ctrl_in = ctrl_in
        self.ctrl_out = ctrl_out
        self.reader = framing.FrameReader()
        self.pending: list[dict[str, Any]] = []  # frames read ahead, not yet parsed
        # pid 1 of a pid namespace (the bubblewrap sandbox's, or a container's): kill(-1) is
        # then confined to that namespace. Never true for the process backend, where kill(-1)
        # would hit the whole host.
        self.init = os.getpid() == 1
        self.spare: _Spare | None = None
        # code paths a job's fresh /tmp would hide; the same for every job, so found once
        self.keep_under_tmp = _code_paths_under_tmp() if isolate else []
        self.cancelled: list[str] = []  # ids cancelled before their job arrived

    # -- control channel -------------------------------------------------------------------

    def send(self, frame: Frame) -> None:
        framing.write_frame(self.ctrl_out, encode(frame))

    def serve(self) -> None:
        while True:
            message = framing.read_frame(self.ctrl_in, self.reader, self.pending)
            if message is None:
                return  # the server closed the pipe: exit (and our jobs with us)
            frame = parse(message)
            if isinstance(frame, CancelFrame):
                # may overtake its job on the way in: remember it (a few, bounded)
                self._remember_cancel(frame.job_id)
            elif isinstance(frame, JobFrame):
                self.send(self.run_job(frame))
                if not self.pending:
                    self.prefork()  # while the server is busy with the result
            # a cancel for a job that already finished needs no answer

    def _remember_cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)
        del self.cancelled[:-64]

    # -- one job ---------------------------------------------------------------------------

    def prefork(self) -> None:
        """Forks the next job's process ahead of time, already inside its fresh namespaces and
        filesystems, so a job's latency does not include fork and sandbox setup. No job has
        run in it: it is a copy of the pristine worker waiting for its one job."""
        if self.spare is not None:
            return
        job_r, job_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        workspace = "" if self.isolate else job_process.make_workspace()
        pid = os.fork()
        if pid == 0:
            for fd in (job_w, out_r, err_r, res_r, self.ctrl_in, self.ctrl_out):
                os.close(fd)
            job_process.run(job_r, self.isolate, self.keep_under_tmp, workspace, out_w, err_w,
                            res_w)
        for fd in (job_r, out_w, err_w, res_w):
            os.close(fd)
        self.spare = _Spare(pid, job_w, out_r, err_r, res_r, workspace)

    def _absorb_pending_cancels(self) -> None:
        """Moves cancel frames that arrived in the same read as a job into `cancelled`: the
        job loop only watches the pipe, so they must not stay behind in `pending`."""
        for message in [m for m in self.pending if m.get("type") == CancelFrame.KIND]:
            self.pending.remove(message)
            self._remember_cancel(parse(message).job_id)  # type: ignore[union-attr]

    def run_job(self, job: JobFrame) -> DoneFrame:
        self._absorb_pending_cancels()
        if job.job_id in self.cancelled:
            self.cancelled.remove(job.job_id)
            return DoneFrame.cancelled_before_start(job.job_id)
        limits = job.limits
        self.prefork()
        spare, self.spare = self.spare, None
        assert spare is not None
        memory = self._memory_watch(spare.pid, limits) if job.memory_watchdog else None
        running = _RunningJob(job.job_id, spare.pid, limits, time.monotonic())
        try:
            framing.write_frame(spare.job_w, encode(job))
        except OSError:
            pass  # the spare died; its exit status tells the server what happened
        os.close(spare.job_w)
        self.send(StartedFrame(running.job_id))
        self._supervise(running, spare.out_r, spare.err_r, spare.res_r, memory)
        _, status, rusage = os.wait4(spare.pid, 0)
        wall_ms = int((time.monotonic() - running.started) * 1000)
        self._sweep(running)
        self._reap_orphans()
        if spare.workspace:
            shutil.rmtree(spare.workspace, ignore_errors=True)
        return self._done(running, status, rusage, wall_ms)

    def _memory_watch(self, pid: int, limits: JobLimits) -> MemoryWatch:
        """The no-cgroup memory limit of the job about to run in `pid`. As pid 1 the worker
        counts its whole namespace and the job's tmpfs mounts, opened now: once the job's tool
        turns undumpable its /proc entries close to us."""
        mounts = job_mounts(pid, 5.0 if self.isolate else 0.0) if self.init else []
        return MemoryWatch(pid, limits.memory_bytes, whole_namespace=self.init,
                           mount_fds=mounts)

    def _supervise(self, job: _RunningJob, out_r: int, err_r: int, res_r: int,
                   memory: MemoryWatch | None) -> None:
        """Pumps the job's pipes until the job has exited and its pipes are drained, enforcing
        the limits and sending heartbeats. A job that closes its pipes early is still
        supervised (its deadline still holds) until its process exits."""
        selector = selectors.DefaultSelector()
        streams = {out_r: ("stdout", job.stdout), err_r: ("stderr", job.stderr)}
        for fd in (out_r, err_r, res_r, self.ctrl_in):
            selector.register(fd, selectors.EVENT_READ)
        open_fds = {out_r, err_r, res_r}
        deadline = job.started + job.limits.wall_time_ms / 1000
        exited_at: float | None = None
        next_beat = 0.0
        while open_fds or exited_at is None:
            now = time.monotonic()
            if now >= next_beat:
                self.send(HeartbeatFrame(job.job_id))
                next_beat = now + HEARTBEAT_PERIOD_S
            if not job.killed and now >= deadline:
                self._kill(job, KillReason.TIMEOUT)
            if exited_at is None and _reaped(job.pid):
                exited_at = now
                self._sweep(job)  # leftovers holding our pipes die with the job
            if exited_at is not None and now - exited_at > 1.0:
                break  # a leftover holder of our pipes that escaped the sweep: stop waiting
            if memory is not None and not job.killed and memory.over():
                self._kill(job, KillReason.MEMORY)
            period = WATCHDOG_PERIOD_S if memory is not None else 0.25
            # past the deadline the job is killed already: wait for its end, do not spin
            timeout = period if job.killed else max(0.0, min(deadline - now, period))
            for key, _ in selector.select(timeout):
                self._on_readable(job, key.fd, selector, open_fds, streams, res_r)
        selector.close()
        if memory is not None:
            memory.close()
        for fd in (out_r, err_r, res_r):
            os.close(fd)

    def _on_readable(self, job: _RunningJob, fd: int, selector: selectors.BaseSelector,
                     open_fds: set[int], streams: dict[int, tuple[str, HeadTailBuffer]],
                     res_r: int) -> None:
        if fd == self.ctrl_in:
            self._on_control(job)
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            selector.unregister(fd)
            open_fds.discard(fd)
            return
        if fd == res_r:
            job.result_bytes += len(chunk)
            if job.result_bytes > MAX_RESULT_BYTES:
                self._kill(job, KillReason.RESULT)  # never buffered past the bound
            else:
                job.result_chunks.append(chunk)
            return
        name, buffer = streams[fd]
        buffer.write(chunk)
        self._log(job, name, chunk)
        if job.stdout.total_bytes + job.stderr.total_bytes > job.limits.max_output_bytes:
            self._kill(job, KillReason.OUTPUT)

    def _on_control(self, job: _RunningJob) -> None:
        chunk = os.read(self.ctrl_in, 65536)
        if not chunk:
            self._kill(job, KillReason.CANCEL)  # the server went away: stop the job, then exit
            return
        try:
            messages = [(m, parse(m)) for m in self.reader.feed(chunk)]
        except framing.FrameError:
            self._kill(job, KillReason.CANCEL)  # the channel is lost: the job dies with us
            raise
        for message, frame in messages:
            if isinstance(frame, CancelFrame) and frame.job_id == job.job_id:
                self._kill(job, KillReason.CANCEL)
            elif isinstance(frame, CancelFrame):
                self._remember_cancel(frame.job_id)
            elif isinstance(frame, JobFrame):
                self.pending.append(message)  # the server queued ahead; run it next

    def _log(self, job: _RunningJob, stream: str, chunk: bytes) -> None:
        room = MAX_LOG_EVENT_BYTES - job.logged_bytes
        if room <= 0:
            return
        text = chunk[:room].decode("utf-8", errors="replace")
        job.logged_bytes += min(room, len(chunk))
        self.send(LogFrame(job.job_id, stream, text))

    def _kill(self, job: _RunningJob, reason: KillReason) -> None:
        if job.killed:
            return
        job.killed = reason
        self._sweep(job)

    def _sweep(self, job: _RunningJob) -> None:
        """Kills the job's whole process tree, daemons and double-forks included."""
        if self.init:
            try:
                os.kill(-1, signal.SIGKILL)  # as pid 1: every other process of the namespace
            except ProcessLookupError:
                pass  # nothing left to kill
            return
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap_orphans(self, timeout_s: float = 2.0) -> None:
        """As pid 1 the worker inherits the job's orphans: collect them all, including those
        still dying from the sweep, so none lingers as a zombie into the next job."""
        if not self.init:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return  # no children left (the next spare is forked after this)
            if pid == 0:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.002)

    def _done(self, job: _RunningJob, status: int, rusage: Any, wall_ms: int) -> DoneFrame:
        code = os.waitstatus_to_exitcode(status)
        outcome, outcome_error = (None, "") if job.killed else _parse_outcome(job.result_chunks)
        return DoneFrame(
            job_id=job.job_id, outcome=outcome, outcome_error=outcome_error, exit_code=code,
            signal=-code if code < 0 else 0, killed=job.killed, wall_ms=wall_ms,
            cpu_ms=int((rusage.ru_utime + rusage.ru_stime) * 1000),
            stdout=job.stdout.text(), stderr=job.stderr.text(),
            stdout_bytes=job.stdout.total_bytes, stderr_bytes=job.stderr.total_bytes)


def _code_paths_under_tmp() -> list[str]:
    """Bound code paths (see bwrap.default_layout) that a job's fresh /tmp would hide."""
    from perfbox.sandbox.bwrap import default_layout

    return [p for p in default_layout().ro_paths if p.startswith("/tmp/")]


def _reaped(pid: int) -> bool:
    """True once the child has exited (without reaping it: wait4 collects it later)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _parse_outcome(chunks: list[bytes]) -> tuple[dict[str, Any] | None, str]:
    """(outcome, "") from the job's result pipe, or (None, why it is unusable): one frame,
    bounded, of the outcome schema. A job that wrote nothing has no outcome and no error (the
    exit status tells what happened)."""
    data = b"".join(chunks)
    if not data:
        return None, ""
    try:
        messages = framing.FrameReader(MAX_RESULT_BYTES).feed(data)
    except framing.FrameError as e:
        return None, f"the result frame is unusable: {e}"
    outcomes = [m for m in messages if m.get("type") == OUTCOME_KIND]
    if len(outcomes) != 1 or len(messages) != 1:
        return None, f"expected one outcome frame, got {len(messages)} frame(s)"
    try:
        return ToolOutcome.parse(outcomes[0].get("outcome")).to_json(), ""
    except OutcomeError as e:
        return None, f"the outcome does not match the schema: {e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="perfbox warm worker (started by the server)")
    parser.add_argument("--isolate", action="store_true", help="give each job its own namespaces")
    parser.add_argument("--preload", default="", help="comma-separated modules to import now")
    parser.add_argument("--warm-up", action="store_true",
                        help="compile a sample kernel so jobs inherit an initialised compiler")
    parser.add_argument("--connect", metavar="SOCKET",
                        help="speak the frames over this unix socket instead of stdin/stdout "
                             "(a container worker: the server listens on it)")
    args = parser.parse_args(argv)
    if args.connect:
        import socket

        channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        channel.connect(args.connect)
        os.dup2(channel.fileno(), 0)
        os.dup2(channel.fileno(), 1)
        channel.close()
    # The control channel gets private descriptors; fd 1 then points at stderr so that stray
    # prints (ours or an imported library's) cannot corrupt the frames.
    ctrl_in, ctrl_out = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    started = time.monotonic()
    preloaded = worker_setup.preload([m for m in args.preload.split(",") if m])
    import perfbox.tools.compile  # noqa: F401 - the tool modules themselves are light but warm them
    import perfbox.tools.disasm  # noqa: F401

    if args.warm_up:
        worker_setup.warm_up(preloaded)
    # Move everything imported so far out of the collector's reach: a forked job's GC would
    # otherwise walk (and so copy-on-write) every page of the worker's heap.
    gc.collect()
    gc.freeze()

    job_process.set_dumpable(False)  # jobs cannot open /proc/<worker>/mem or ptrace it
    if args.isolate:
        # setpriv's uid change cleared bwrap's parent-death signal: arm it again.
        jobns.die_with_parent()
    worker_setup.reset_signal_handlers()
    zygote = Zygote(args.isolate, ctrl_in, ctrl_out)
    zygote.prefork()
    zygote.send(ReadyFrame(list(preloaded), int((time.monotonic() - started) * 1000)))
    zygote.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
