"""Server-side handle of one worker process (a zygote in its sandbox, or a bare one).

The worker is trusted code, but a wedged or misbehaving one must cost its slot, never the
server: a frame that does not parse, or no frame at all for HEARTBEAT_TIMEOUT_S while a job
runs, raises WorkerDied, and the slot kills the worker with every process of its sandbox
before starting a fresh one (the read buffer goes with it, so nothing bad is read twice).
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from perfbox.sandbox import bwrap, framing
from perfbox.sandbox.cgroup import WorkerCgroup
from perfbox.sandbox.limits import HEARTBEAT_TIMEOUT_S, WORKER_START_TIMEOUT_S
from perfbox.sandbox.memory_watch import tree_pids
from perfbox.sandbox.worker_protocol import (CancelFrame, DoneFrame, Frame, HeartbeatFrame,
                                             JobFrame, LogFrame, ReadyFrame, StartedFrame,
                                             encode, parse)

log = logging.getLogger(__name__)
# Extra time a worker gets past a job's wall limit before the server stops trusting it.
SUPERVISION_SLACK_S = 15.0
# Joins the cgroups before exec'ing bwrap, so the sandbox and all it starts are accounted.
_CGROUP_JOIN = 'for f in $PERFBOX_CGROUP_PROCS; do echo $$ > "$f" || exit 111; done; exec "$@"'


class WorkerDied(RuntimeError):
    """The worker process exited or stopped answering; its job has no result."""


class WorkerSilent(WorkerDied):
    """The worker sent nothing for as long as a read waited."""


class WorkerProcess:
    """Starts a worker, hands it one job at a time and relays its frames."""

    def __init__(self, slot: int, isolate: bool, layout: bwrap.BwrapLayout | None,
                 cgroup: WorkerCgroup | None, preload: list[str], warm_up: bool = True,
                 nice: int = 0) -> None:
        self.slot = slot
        self.name = f"worker-{slot}"
        self.isolate = isolate
        self.layout = layout
        self.cgroup = cgroup
        self.preload = preload
        self.warm_up = warm_up  # worth it only for a worker that serves many jobs
        self.nice = nice  # > 0: the worker and its jobs yield the CPU to a colocated engine
        self.proc: subprocess.Popen[bytes] | None = None
        self.reader = framing.FrameReader()
        self.pending: list[dict[str, Any]] = []
        self.idle_memory_bytes = 0  # cgroup usage once ready: what the worker itself holds
        self.import_ms = 0
        self._write_lock = threading.Lock()
        self._stderr_thread: threading.Thread | None = None

    def _command(self) -> list[str]:
        command = [sys.executable, "-I", "-B", "-m", "perfbox.sandbox.zygote",
                   "--preload", ",".join(self.preload)]
        if self.warm_up:
            command.append("--warm-up")
        if not self.isolate:
            return self._niced(command)
        assert self.layout is not None
        command.append("--isolate")
        argv = bwrap.worker_argv(self.layout, command, self.slot)
        if self.cgroup is not None:
            argv = ["/bin/sh", "-c", _CGROUP_JOIN, "perfbox-worker", *argv]
        return self._niced(argv)

    def _niced(self, argv: list[str]) -> list[str]:
        return ["nice", "-n", str(self.nice), *argv] if self.nice else argv

    def _env(self) -> dict[str, str]:
        """The only environment the worker (or bwrap) inherits: nothing of the server's."""
        if self.isolate:
            env = {"PATH": "/usr/bin:/bin"}
            if self.cgroup is not None:
                env["PERFBOX_CGROUP_PROCS"] = " ".join(self.cgroup.procs_files)
            return env
        layout = bwrap.default_layout()
        env = dict(layout.env)
        env["HOME"] = env["TMPDIR"] = tempfile.gettempdir()
        return env

    def start(self) -> None:
        """Spawns the worker and waits until its imports are done."""
        self.proc = subprocess.Popen(
            self._command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=self._env(), cwd="/", start_new_session=True,
        )
        self._stderr_thread = threading.Thread(target=self._pump_stderr, daemon=True,
                                               name=f"{self.name}-stderr")
        self._stderr_thread.start()
        ready = self.read_frame(timeout_s=WORKER_START_TIMEOUT_S)
        if not isinstance(ready, ReadyFrame):
            raise WorkerDied(f"{self.name} sent {ready.KIND!r} instead of ready")
        self.import_ms = ready.import_ms
        if self.cgroup is not None:
            self.idle_memory_bytes = self.cgroup.memory_usage_bytes()
        log.info("%s ready (preloaded %s in %d ms)", self.name, ready.preloaded, self.import_ms)

    def _pump_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        try:
            for line in self.proc.stderr:
                log.debug("%s: %s", self.name, line.decode(errors="replace").rstrip())
        except (OSError, ValueError):  # the pipe was closed under us at shutdown
            pass

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _fd_in(self) -> int:
        """Where the worker's frames arrive (its stdout here; a socket for containers)."""
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def _fd_out(self) -> int:
        assert self.proc is not None and self.proc.stdin is not None
        return self.proc.stdin.fileno()

    def _exit_description(self) -> str:
        assert self.proc is not None
        return f"status {self.proc.wait()}"

    def _read(self, timeout_s: float) -> dict[str, Any]:
        fd = self._fd_in()
        deadline = time.monotonic() + timeout_s
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerSilent(f"{self.name} did not answer within {timeout_s:.0f} s")
            if not select.select([fd], [], [], remaining)[0]:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WorkerDied(f"{self.name} exited ({self._exit_description()})")
            try:
                self.pending.extend(self.reader.feed(chunk))
            except framing.FrameError as e:
                self.reader = framing.FrameReader()  # the stream is lost: never read on
                raise WorkerDied(f"{self.name} sent a bad frame: {e}") from e
        return self.pending.pop(0)

    def read_frame(self, timeout_s: float) -> Frame:
        """The next frame, typed; a malformed one is the worker's death (the stream is lost)."""
        message = self._read(timeout_s)
        try:
            return parse(message)
        except framing.FrameError as e:
            self.reader = framing.FrameReader()
            self.pending.clear()
            raise WorkerDied(f"{self.name} sent a bad frame: {e}") from e

    def send(self, frame: Frame) -> None:
        with self._write_lock:
            try:
                framing.write_frame(self._fd_out(), encode(frame))
            except (BrokenPipeError, OSError) as e:
                raise WorkerDied(f"{self.name} is gone: {e}") from e

    def run(self, job: JobFrame, on_event: Callable[[dict[str, Any]], None]) -> DoneFrame:
        """Runs one job; relays its started and log frames to `on_event` (as their JSON
        objects); returns its done frame.

        A worker that goes quiet (no heartbeat) for HEARTBEAT_TIMEOUT_S, or outlives the job's
        wall limit by SUPERVISION_SLACK_S, is wedged: WorkerDied, and the slot kills it."""
        deadline = time.monotonic() + job.limits.wall_time_ms / 1000 + SUPERVISION_SLACK_S
        self.send(job)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerDied(f"{self.name} did not finish the job within its wall limit "
                                 f"plus {SUPERVISION_SLACK_S:.0f} s")
            try:
                frame = self.read_frame(timeout_s=min(remaining, HEARTBEAT_TIMEOUT_S))
            except WorkerSilent as e:
                raise WorkerDied(f"{self.name} stopped answering (no heartbeat for "
                                 f"{HEARTBEAT_TIMEOUT_S:.0f} s)") from e
            if not isinstance(frame, (StartedFrame, LogFrame, HeartbeatFrame, DoneFrame)):
                raise WorkerDied(f"{self.name} sent a {frame.KIND} frame during a job")
            if frame.job_id != job.job_id or isinstance(frame, HeartbeatFrame):
                continue  # a late frame of a job it was told to drop, or a heartbeat
            if isinstance(frame, DoneFrame):
                return frame
            on_event(encode(frame))

    def cancel(self, job_id: str) -> None:
        try:
            self.send(CancelFrame(job_id))
        except WorkerDied:
            pass

    def _kill_tree(self) -> None:
        """SIGKILL to every process descended from the worker's, found on the host's /proc
        before any dies (so none is re-parented out of reach first), then its process group and
        its cgroup. The sandbox's pid-1 (the zygote, in a session of its own) is among them,
        and its death ends every process of its namespace: daemons included, whether or not
        cgroups exist and whether or not the parent-death signal fires."""
        assert self.proc is not None
        pids = tree_pids(self.proc.pid) if self.proc.poll() is None else []
        for pid in reversed(pids):  # deepest first: the zygote before bwrap
            try:
                os.kill(pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(self.proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        if self.cgroup is not None:
            self.cgroup.kill_all()

    def kill(self) -> None:
        """Stops the worker and everything in its sandbox."""
        if self.proc is None:
            return
        # EOF on its control pipe makes the worker kill its job and exit; as pid 1 of its
        # namespace its exit takes every process of the sandbox with it.
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        self._kill_tree()
        self.proc.wait()
        # The stderr pump sees EOF once every process of the sandbox is gone; join it before
        # closing the pipe under it.
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=5)
        for stream in (self.proc.stdout,):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if self._stderr_thread is None or not self._stderr_thread.is_alive():
            if self.proc.stderr is not None:
                self.proc.stderr.close()
