"""One RunBatch stream: many tool calls in, results out as they finish.

A batch keeps at most `window` of its calls in the scheduler at once and reads further requests
only as earlier ones finish, so a training job can stream thousands of calls without filling the
server's queue (gRPC flow control then slows the sender down) and without being refused.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Iterator, Union

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.sandbox.scheduler import Job

log = logging.getLogger(__name__)
_END = None
# A result, or a thunk that builds it with the job it answers: results of finished jobs are
# built in the stream's own thread, not in the scheduler's (which announces "finished" with its
# lock held).
Answer = Union[pb.ToolResult, tuple[Callable[[], pb.ToolResult], Job]]
# The answer for a call whose result could not be built: that call fails, the batch goes on.
OnBuildError = Callable[[Job, BaseException], pb.ToolResult]


class BatchStream:
    """Bookkeeping of one batch: in-flight jobs, the window, the outgoing results."""

    def __init__(self, window: int, cancel: Callable[[Job], object],
                 on_build_error: OnBuildError) -> None:
        self.results: queue.Queue[Answer | None] = queue.Queue()
        self._on_build_error = on_build_error
        self.window = threading.BoundedSemaphore(window)
        self._cancel = cancel
        self._lock = threading.Lock()
        self._in_flight: dict[str, Job] = {}
        self._reading = True
        self._closed = False
        self.interrupted = False  # calls left unanswered by a server shutdown

    def reserve(self) -> bool:
        """Blocks until the window has room; False once the stream has ended."""
        while not self.window.acquire(timeout=0.5):
            if self._closed:
                return False
        if self._closed:
            self.window.release()
            return False
        return True

    def started(self, job: Job) -> None:
        with self._lock:
            self._in_flight[job.job_id] = job

    def answer(self, result: pb.ToolResult | Callable[[], pb.ToolResult],
               job: Job | None = None, reserved: bool = False) -> None:
        """Queues a result (or a thunk building the job's result); frees the job's window slot
        when it held one."""
        if not isinstance(result, pb.ToolResult):
            assert job is not None, "a result built later needs its job"
            self.results.put((result, job))
        else:
            self.results.put(result)
        with self._lock:
            if job is not None:
                self._in_flight.pop(job.job_id, None)
            if reserved:
                self.window.release()
            self._maybe_end()

    def interrupt(self, job: Job | None, reserved: bool = True) -> None:
        """A call the stopping server will not answer: no result; the stream then ends with
        UNAVAILABLE so the client resends it (and only it) to another node."""
        with self._lock:
            self.interrupted = True
            if job is not None:
                self._in_flight.pop(job.job_id, None)
            if reserved:
                self.window.release()
            self._maybe_end()

    def done_reading(self) -> None:
        with self._lock:
            self._reading = False
            self._maybe_end()

    def _maybe_end(self) -> None:
        if not self._reading and not self._in_flight and not self._closed:
            self._closed = True
            self.results.put(_END)

    def close(self) -> None:
        """The RPC ended (client gone, deadline, shutdown): cancel what is still running and
        wake the stream's thread, which may be waiting for a result nobody will read."""
        with self._lock:
            already = self._closed
            self._closed = True
            jobs = list(self._in_flight.values())
        for job in jobs:
            self._cancel(job)
        if not already:
            self.results.put(_END)

    def stream(self) -> Iterator[pb.ToolResult]:
        while True:
            answer = self.results.get()
            if answer is _END:
                return
            yield answer if isinstance(answer, pb.ToolResult) else self._build(*answer)

    def _build(self, build: Callable[[], pb.ToolResult], job: Job) -> pb.ToolResult:
        try:
            return build()
        except Exception as e:  # one call's result, not the stream: it fails alone
            log.exception("building the result of job %s failed", job.job_id)
            return self._on_build_error(job, e)


def rejected(request: pb.ToolRequest, message: str, identity: pb.Identity) -> pb.ToolResult:
    """The result a batch sends for a request it cannot run (the batch goes on)."""
    return pb.ToolResult(request_id=request.request_id, tool=request.tool, status=pb.REJECTED,
                         error=message, summary=f"Request rejected: {message}",
                         identity=identity, timings=pb.Timings(total_ms=0))


def elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
