"""The job queue and the worker slots that drain it.

One dispatcher thread per worker slot takes the oldest queued job, runs it on the slot's warm
worker (or, with warm workers off, on a worker started for that job alone) and publishes the
outcome. A job is cancellable while queued (it never starts) and while running (the worker kills
its process tree). The queue is bounded: past `max_queue` a submission is refused, so a flood of
calls gets RESOURCE_EXHAUSTED instead of unbounded memory.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable

from perfbox.sandbox.cgroup import CgroupCounters, CgroupManager, WorkerCgroup
from perfbox.sandbox.gate import ANONYMOUS
from perfbox.sandbox.limits import JobLimits
from perfbox.sandbox.worker import WorkerDied, WorkerProcess
from perfbox.sandbox.worker_protocol import DoneFrame, JobFrame

log = logging.getLogger(__name__)
_PROCESS_SLACK = 8  # pids a worker needs besides its job's (bwrap, zygote, fork intermediates)


class JobState(IntEnum):
    """Ordered: anything at or after FINISHED is finished."""

    QUEUED = 0
    RUNNING = 1
    FINISHED = 2


class QueueFull(RuntimeError):
    """The queue holds `max_queue` jobs already."""


class ShuttingDown(RuntimeError):
    """The scheduler no longer accepts jobs."""


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class JobRun:
    """What running a job produced, before it becomes a ToolResult."""

    done: DoneFrame | None  # the worker's done frame; None when the job never ran
    oom_killed: bool = False  # the cgroup's OOM killer fired during the job
    cancelled_before_start: bool = False
    worker_error: str = ""  # the worker died or misbehaved
    worker: str = ""
    queue_ms: int | None = None  # None until known; set when the job leaves the queue


@dataclass
class Job:
    """One submitted tool call."""

    payload: JobFrame  # what the worker gets (its job_id is this job's)
    limits: JobLimits
    request_id: str = ""  # the client's own id of the call, unique per client at most
    # who submitted it (the gate's client id): request ids are looked up within it, and only
    # it may cancel the job
    client: str = ANONYMOUS
    job_id: str = field(default_factory=new_job_id)
    state: JobState = JobState.QUEUED
    submitted_at: float = field(default_factory=time.monotonic)
    cancel_requested: bool = False
    # cancelled because the server is stopping, not by anyone's request: such a job has no
    # answer of its own; the caller is told UNAVAILABLE and retries on another node
    interrupted: bool = False
    run: JobRun | None = None
    listeners: list[Callable[["Job", dict[str, Any]], None]] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)
    worker: WorkerProcess | None = None

    def emit(self, event: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            try:
                listener(self, event)
            except Exception:  # a broken listener must not break the job
                log.exception("job %s listener failed", self.job_id)

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)


class WorkerSlot:
    """One concurrent job's worth of capacity: a worker, its cgroup, its respawns."""

    def __init__(self, index: int,
                 make_worker: Callable[[int, WorkerCgroup | None], WorkerProcess],
                 cgroups: CgroupManager | None, warm: bool,
                 one_job_per_worker: bool = False) -> None:
        self.make_worker = make_worker  # the backend's (perfbox.sandbox.backends)
        # a worker serves one job (a container): the slot starts the next one as soon as a
        # job ends, so the next job rarely waits for it
        self.one_job_per_worker = one_job_per_worker
        self._lock = threading.Lock()
        self._closed = False
        self.index = index
        self.cgroups = cgroups
        self.warm = warm
        self.cgroup: WorkerCgroup | None = cgroups.create(f"w{index}") if cgroups else None
        self.worker: WorkerProcess | None = None

    def ensure_worker(self) -> WorkerProcess:
        with self._lock:
            if self._closed:
                raise WorkerDied(f"worker slot {self.index} is closed")
            if self.worker is not None and self.worker.alive:
                return self.worker
            if self.worker is not None:
                self.worker.kill()
            worker = self.make_worker(self.index, self.cgroup)
            self.worker = worker
            try:
                worker.start()
            except BaseException:
                worker.kill()
                self.worker = None
                raise
            return worker

    def _prestart(self) -> None:
        def start() -> None:
            try:
                self.ensure_worker()
            except Exception as e:  # the next job retries, and says why if it fails too
                log.warning("worker slot %d: starting the next worker failed: %s", self.index, e)

        threading.Thread(target=start, daemon=True, name=f"prestart-{self.index}").start()

    def run(self, job: Job) -> JobRun:
        worker = self.ensure_worker()
        job.worker = worker
        if job.cancel_requested:  # cancelled while the worker was (re)starting
            job.worker = None
            return JobRun(None, cancelled_before_start=True, worker=worker.name)
        before = self._prepare_cgroup(job.limits, worker)
        try:
            done = worker.run(job.payload, lambda e: job.emit(e))
        except WorkerDied as e:
            log.warning("%s died running job %s: %s", worker.name, job.job_id, e)
            worker.kill()
            return JobRun(None, oom_killed=self._oom_since(before), worker_error=str(e),
                          worker=worker.name)
        finally:
            job.worker = None
            if not self.warm or self.one_job_per_worker:
                worker.kill()
            if self.one_job_per_worker:
                self._prestart()
        return JobRun(done, oom_killed=self._oom_since(before), worker=worker.name)

    def _prepare_cgroup(self, limits: JobLimits, worker: WorkerProcess) -> CgroupCounters | None:
        if self.cgroup is None:
            return None
        self.cgroup.set_memory_bytes(worker.idle_memory_bytes + limits.memory_bytes)
        self.cgroup.set_max_processes(limits.max_processes + _PROCESS_SLACK)
        return self.cgroup.counters()

    def _oom_since(self, before: CgroupCounters | None) -> bool:
        if self.cgroup is None or before is None:
            return False
        return self.cgroup.counters().oom_kills > before.oom_kills

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self.worker is not None:
                self.worker.kill()
                self.worker = None


class Scheduler:
    """Bounded FIFO of jobs drained by one dispatcher thread per slot."""

    def __init__(self, slots: list[WorkerSlot], max_queue: int) -> None:
        self.slots = slots
        self.max_queue = max_queue
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}  # unfinished jobs by job_id
        self._by_request: dict[tuple[str, str], Job] = {}  # by (client, request_id)
        self._cond = threading.Condition()
        self._accepting = True
        self._stopping = False
        self._prestart = False
        self._ready: list[threading.Event] = []
        self._threads = [threading.Thread(target=self._dispatch, args=(slot,), daemon=True,
                                          name=f"dispatch-{slot.index}") for slot in slots]

    def start(self, prestart: bool) -> None:
        """Starts the dispatchers; with `prestart`, waits until every warm worker is ready.

        Workers are started by their dispatcher thread, never by a short-lived one: bubblewrap's
        parent-death signal fires when the *thread* that spawned it exits.
        """
        self._prestart = prestart
        self._ready = [threading.Event() for _ in self.slots]
        for thread in self._threads:
            thread.start()
        if prestart:
            for event in self._ready:
                event.wait()

    @property
    def queue_depth(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(self, job: Job) -> int:
        """Queues a job; returns how many jobs are ahead of it."""
        with self._cond:
            if not self._accepting:
                raise ShuttingDown("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} jobs are queued (limit {self.max_queue})")
            position = len(self._queue)
            self._queue.append(job)
            self._jobs[job.job_id] = job
            if job.request_id:
                self._by_request[(job.client, job.request_id)] = job
            self._cond.notify()
        job.emit({"type": "queued", "position": position})
        return position

    def find(self, job_id: str = "", request_id: str = "", client: str = ANONYMOUS
             ) -> Job | None:
        """`client`'s unfinished job by job_id or request_id; another client's job is not
        found, so its ids cannot even be probed."""
        with self._cond:
            if job_id:
                job = self._jobs.get(job_id)
                return job if job is not None and job.client == client else None
            return self._by_request.get((client, request_id))

    def cancel(self, job: Job) -> JobState:
        """Cancels a queued job (it never runs) or a running one (its tree is killed)."""
        with self._cond:
            state = job.state
            if state >= JobState.FINISHED:
                return state
            job.cancel_requested = True
            if state == JobState.QUEUED:
                self._queue.remove(job)
                self._finish(job, JobRun(None, cancelled_before_start=True))
                return state
            worker = job.worker
        if worker is not None:
            worker.cancel(job.job_id)
        return state

    def _finish(self, job: Job, run: JobRun) -> None:
        """Records a job's end. Call with self._cond held."""
        if run.queue_ms is None:
            run.queue_ms = int((time.monotonic() - job.submitted_at) * 1000)
        job.run = run
        job.state = JobState.FINISHED
        self._jobs.pop(job.job_id, None)
        key = (job.client, job.request_id)
        if job.request_id and self._by_request.get(key) is job:
            del self._by_request[key]
        job.finished.set()
        job.emit({"type": "finished"})  # listeners must not block: the queue lock is held

    def _dispatch(self, slot: WorkerSlot) -> None:
        if self._prestart:
            try:
                slot.ensure_worker()
            except Exception:  # the slot's first job starts it again and reports why
                log.exception("worker slot %d failed to start; retrying on its first job",
                              slot.index)
        self._ready[slot.index].set()
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._queue:
                    return
                job = self._queue.popleft()
                job.state = JobState.RUNNING
                queue_ms = int((time.monotonic() - job.submitted_at) * 1000)
            job.emit({"type": "started", "worker": f"worker-{slot.index}"})
            try:
                run = slot.run(job)
            except Exception as e:  # the slot could not even start a worker
                log.exception("slot %d failed job %s", slot.index, job.job_id)
                run = JobRun(None, worker_error=f"worker start failed: {e}")
            run.queue_ms = queue_ms
            with self._cond:
                self._finish(job, run)

    def stop_accepting(self) -> None:
        with self._cond:
            self._accepting = False

    def running_jobs(self) -> list[Job]:
        with self._cond:
            return [j for j in self._jobs.values() if j.state == JobState.RUNNING]

    def shutdown(self, grace_s: float) -> None:
        """Refuses new jobs, cancels queued ones, gives running ones `grace_s`, kills the rest,
        then stops every worker."""
        self.stop_accepting()
        with self._cond:
            queued = list(self._queue)
        for job in queued:
            job.interrupted = True
            self.cancel(job)
        deadline = time.monotonic() + grace_s
        for job in self.running_jobs():
            job.wait(max(0.0, deadline - time.monotonic()))
        for job in self.running_jobs():
            job.interrupted = True
            self.cancel(job)
        for job in self.running_jobs():
            job.wait(10)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for slot in self.slots:
            slot.close()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=10)
