"""The ToolService gRPC servicer: validation, cache, scheduling, streaming."""

from __future__ import annotations

import contextvars
import json
import logging
import posixpath
import queue
import socket
import threading
import time
from typing import Any, Iterator

import grpc

from perfbox import __version__
from perfbox.api.v1 import tools_pb2 as pb
from perfbox.api.v1 import tools_pb2_grpc
from perfbox.sandbox.batch import BatchStream, elapsed_ms, rejected
from perfbox.sandbox.cache import CacheEntry, Origin, ResultCache, cache_key
from perfbox.sandbox.device import device_info, gpu_count
from perfbox.sandbox.gate import current_client, retry_delay_metadata
from perfbox.sandbox.limits import DEFAULT_LIMITS, GPU_DEFAULT_LIMITS, JobLimits
from perfbox.sandbox.metrics import Metrics
from perfbox.sandbox.results import build_result, failed_result
from perfbox.sandbox.scheduler import Job, QueueFull, Scheduler, ShuttingDown, new_job_id
from perfbox.sandbox.validate import LANGUAGE_NAMES, RequestError, ValidRequest, validate_request
from perfbox.sandbox.worker_protocol import JobFrame, SourceFile
from perfbox.tool_messages import compile_report
from perfbox.tools import TOOLS, function_schema
from perfbox.tools.toolkit import identity as toolkit_identity

log = logging.getLogger(__name__)
_LANGUAGE_VALUES = {name: value for value, name in LANGUAGE_NAMES.items()}
SHUTTING_DOWN = ("the server is shutting down and did not finish this call; retry on another "
                 "node (perfbox's clients do)")


class ToolService(tools_pb2_grpc.ToolServiceServicer):
    def __init__(self, scheduler: Scheduler, cache: ResultCache, backend: str,
                 default_limits: JobLimits = DEFAULT_LIMITS, batch_window: int = 256,
                 metrics: Metrics | None = None) -> None:
        self.scheduler = scheduler
        self.metrics = metrics
        self.batch_window = batch_window
        self.cache = cache
        self.backend = backend
        self.toolkit = toolkit_identity()
        self.num_gpus = gpu_count()
        # CUDA processes need more memory, threads and time than the CPU-sized defaults
        self.default_limits = GPU_DEFAULT_LIMITS if self.num_gpus and \
            default_limits == DEFAULT_LIMITS else default_limits
        self.identity = pb.Identity(
            perfbox_version=__version__, toolkit=self.toolkit,
            device="gpu" if self.num_gpus else "cpu", node=socket.gethostname(), backend=backend,
        )

    # -- shared steps ------------------------------------------------------------------------

    def _validate(self, request: pb.ToolRequest) -> ValidRequest:
        return validate_request(request, self.default_limits)

    def _unavailable(self, valid: ValidRequest) -> pb.ToolResult | None:
        if valid.spec.needs_gpu and not self.num_gpus:
            return pb.ToolResult(
                request_id=valid.request_id, tool=valid.spec.name, status=pb.UNAVAILABLE_HERE,
                error="this node has no GPU",
                summary=f"{valid.spec.name} needs a GPU and this node has none; "
                        f"{', '.join(t.name for t in TOOLS.values() if not t.needs_gpu)} "
                        "work here.",
                identity=self.identity,
            )
        return None

    def _key(self, valid: ValidRequest) -> str:
        """Everything that determines the result, the caller's limits and the sandbox included:
        a failure under one caller's tiny limits must never answer another caller."""
        return cache_key(valid.spec.name, valid.language, valid.files, valid.options,
                         self.toolkit, limits=valid.limits.to_json(), backend=self.backend)

    def _cached(self, request: pb.ToolRequest, valid: ValidRequest) -> pb.ToolResult | None:
        if not valid.spec.cacheable or request.no_cache:
            return None
        entry = self.cache.get(self._key(valid))
        if self.metrics is not None:
            self.metrics.observe_cache(entry is not None)
        if entry is None:
            return None
        result = pb.ToolResult()
        try:
            result.ParseFromString(entry.data)
        except Exception:  # checksummed, so only a format change lands here
            return None
        _log_hit(valid, entry)
        result.request_id = valid.request_id
        result.job_id = ""
        result.cache_hit = True
        # the producing job only: its client's id and request_id stay in the server's log
        result.cached_from_job_id = entry.origin.job_id
        result.timings.Clear()  # this call ran nothing; the report keeps the original compile_ms
        result.identity.CopyFrom(self.identity)
        return result

    def _storable(self, valid: ValidRequest, result: pb.ToolResult) -> bool:
        """Whether `result` is the source's own answer, fit to serve any caller: produced under
        limits no tighter than the defaults, and OK or a compiler's located verdict."""
        if not valid.spec.cacheable or _tighter(valid.limits, self.default_limits):
            return False
        if result.status == pb.OK:
            return True
        return result.status == pb.COMPILE_ERROR and _located_error(result, valid.files)

    def _job(self, valid: ValidRequest) -> Job:
        frame = JobFrame(
            job_id=new_job_id(), tool=valid.spec.name, language=valid.language,
            files=tuple(SourceFile(n, c) for n, c in valid.files), options=valid.options,
            limits=valid.limits, memory_watchdog=not any(s.cgroup for s in self.scheduler.slots))
        return Job(payload=frame, limits=valid.limits, request_id=valid.request_id,
                   client=current_client.get(), job_id=frame.job_id)

    def _submit(self, job: Job, context: grpc.ServicerContext | None) -> int:
        try:
            return self.scheduler.submit(job)
        except QueueFull as e:
            wait = self._queue_wait_s()
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"{e}; retry in {wait * 1000:.0f} ms", wait) from e
        except ShuttingDown as e:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, f"{e}; retry on another node") from e

    def _answered(self, result: pb.ToolResult) -> pb.ToolResult:
        """Every answer passes here once: metrics and the structured log line."""
        if self.metrics is not None:
            self.metrics.observe_result(result)
        log.info("answered", extra={"request_id": result.request_id, "job_id": result.job_id,
                                    "tool": result.tool, "status": pb.Status.Name(result.status),
                                    "total_ms": result.timings.total_ms,
                                    "cache_hit": result.cache_hit})
        return result

    def _result(self, job: Job, valid: ValidRequest, started: float) -> pb.ToolResult:
        result = build_result(job, valid.spec.name, self.identity)
        result.timings.total_ms = int((time.monotonic() - started) * 1000)
        self._answered(result)
        if self._storable(valid, result):
            stored = pb.ToolResult()
            stored.CopyFrom(result)
            stored.ClearField("request_id")
            origin = Origin(job_id=job.job_id, request_id=valid.request_id, client=job.client,
                            created_unix=time.time())
            self.cache.put(self._key(valid), stored.SerializeToString(), origin)
        return result

    def _failed_result(self, job: Job, error: BaseException) -> pb.ToolResult:
        return self._answered(failed_result(job, job.payload.tool, self.identity, error))

    def _cancel_on_rpc_end(self, job: Job, context: grpc.ServicerContext) -> None:
        def on_done() -> None:
            if not job.finished.is_set():
                log.info("client went away; cancelling job %s", job.job_id)
                self.scheduler.cancel(job)

        context.add_callback(on_done)

    def _queue_wait_s(self) -> float:
        """How long until a full queue has room, roughly: its depth over the workers times a
        second (tool calls take about that), within [0.1 s, 30 s]."""
        depth = self.scheduler.queue_depth
        return min(30.0, max(0.1, depth / max(1, len(self.scheduler.slots))))

    @staticmethod
    def _abort_if_interrupted(job: Job, context: grpc.ServicerContext) -> None:
        if job.interrupted:
            context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)

    @staticmethod
    def _abort(context: grpc.ServicerContext, error: RequestError) -> None:
        if error.retry_delay_s > 0:
            context.set_trailing_metadata(retry_delay_metadata(error.retry_delay_s))
        context.abort(error.code, error.message)

    def _prepare(self, request: pb.ToolRequest, context: grpc.ServicerContext
                 ) -> tuple[ValidRequest, pb.ToolResult | None]:
        try:
            valid = self._validate(request)
        except RequestError as e:
            self._abort(context, e)
            raise  # unreachable: abort raises
        early = self._unavailable(valid) or self._cached(request, valid)
        return valid, early

    # -- RPCs --------------------------------------------------------------------------------

    def Run(self, request: pb.ToolRequest, context: grpc.ServicerContext) -> pb.ToolResult:
        started = time.monotonic()
        valid, early = self._prepare(request, context)
        if early is not None:
            early.timings.total_ms = int((time.monotonic() - started) * 1000)
            return self._answered(early)
        job = self._job(valid)
        self._cancel_on_rpc_end(job, context)
        try:
            self._submit(job, context)
        except RequestError as e:
            self._abort(context, e)
        job.wait()
        self._abort_if_interrupted(job, context)
        return self._result(job, valid, started)

    def RunStream(self, request: pb.ToolRequest, context: grpc.ServicerContext
                  ) -> Iterator[pb.RunEvent]:
        started = time.monotonic()
        valid, early = self._prepare(request, context)
        if early is not None:
            early.timings.total_ms = int((time.monotonic() - started) * 1000)
            yield pb.RunEvent(request_id=valid.request_id, result=self._answered(early))
            return
        job = self._job(valid)
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        job.listeners.append(lambda _job, event: events.put(event))
        self._cancel_on_rpc_end(job, context)
        try:
            self._submit(job, context)
        except RequestError as e:
            self._abort(context, e)
        while True:
            event = events.get()
            kind = event.get("type")
            base = {"request_id": job.request_id, "job_id": job.job_id}
            if kind == "queued":
                yield pb.RunEvent(**base, queued=pb.RunEvent.Queued(position=event["position"]))
            elif kind == "started" and "worker" in event:
                yield pb.RunEvent(**base, started=pb.RunEvent.Started(worker=event["worker"]))
            elif kind == "log":
                yield pb.RunEvent(**base, log=pb.RunEvent.Log(stream=event["stream"],
                                                              text=event["text"]))
            elif kind == "finished":
                self._abort_if_interrupted(job, context)
                yield pb.RunEvent(**base, result=self._result(job, valid, started))
                return

    def RunBatch(self, request_iterator: Iterator[pb.ToolRequest],
                 context: grpc.ServicerContext) -> Iterator[pb.ToolResult]:
        batch = BatchStream(self.batch_window, self.scheduler.cancel, self._failed_result)

        def read() -> None:
            try:
                for request in request_iterator:
                    if not batch.reserve():
                        break
                    self._batch_one(batch, request)
            except Exception as e:  # the client hung up mid-stream
                log.info("batch stream ended: %s", e)
            batch.done_reading()

        context.add_callback(batch.close)
        # the reader runs in this call's context: its jobs belong to the calling client
        threading.Thread(target=contextvars.copy_context().run, args=(read,), daemon=True,
                         name="batch-reader").start()
        yield from batch.stream()
        if batch.interrupted:
            context.abort(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)

    def _batch_one(self, batch: BatchStream, request: pb.ToolRequest) -> None:
        """Validates and submits one call of a batch; holds one window slot until answered."""
        started = time.monotonic()
        try:
            valid = self._validate(request)
        except RequestError as e:
            batch.answer(rejected(request, e.message, self.identity), reserved=True)
            return
        early = self._unavailable(valid) or self._cached(request, valid)
        if early is not None:
            early.timings.total_ms = elapsed_ms(started)
            batch.answer(self._answered(early), reserved=True)
            return
        job = self._job(valid)

        def finished(j: Job, event: dict[str, Any]) -> None:
            if event.get("type") != "finished":
                return
            if j.interrupted:
                batch.interrupt(j)
            else:
                batch.answer(lambda: self._result(j, valid, started), j, reserved=True)

        job.listeners.append(finished)
        batch.started(job)
        try:
            self._submit(job, None)
        except RequestError as e:
            if e.code == grpc.StatusCode.UNAVAILABLE:  # shutting down: another node runs it
                batch.interrupt(job)
            else:
                batch.answer(rejected(request, e.message, self.identity), job, reserved=True)

    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext
               ) -> pb.CancelResponse:
        if not request.request_id and not request.job_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give a request_id or a job_id")
        # only the caller's own jobs: another client's ids answer exactly like unknown ones
        job = self.scheduler.find(job_id=request.job_id, request_id=request.request_id,
                                  client=current_client.get())
        if job is None:
            return pb.CancelResponse(cancelled=False, state="unknown")
        state = self.scheduler.cancel(job)
        names = {0: "queued", 1: "running"}
        return pb.CancelResponse(cancelled=state.value in names,
                                 state=names.get(state.value, "finished"))

    def DeviceInfo(self, request: pb.DeviceInfoRequest, context: grpc.ServicerContext
                   ) -> pb.DeviceInfoResponse:
        return device_info()

    def ListTools(self, request: pb.ListToolsRequest, context: grpc.ServicerContext
                  ) -> pb.ListToolsResponse:
        response = pb.ListToolsResponse()
        for spec in TOOLS.values():
            available = self.num_gpus > 0 or not spec.needs_gpu
            response.tools.add(
                name=spec.name, description=spec.description,
                languages=[_LANGUAGE_VALUES[lang] for lang in spec.languages],
                needs_gpu=spec.needs_gpu, cacheable=spec.cacheable, available=available,
                unavailable_reason="" if available else "this node has no GPU",
                function_schema=json.dumps(function_schema(spec)),
            )
        return response


def _tighter(limits: JobLimits, defaults: JobLimits) -> bool:
    """Whether any limit is below the server's default for it (a starved run may fail where
    the source itself is fine)."""
    mine, base = limits.to_json(), defaults.to_json()
    return any(mine[name] < base[name] for name in base)


def _located_error(result: pb.ToolResult, files: list[tuple[str, str]]) -> bool:
    """Whether a compile (or a disasm's compile) reports an error in a submitted file: the
    compiler's verdict on the source, not a crashed or starved compiler."""
    report = compile_report(result)
    if report is None:
        return False
    names = {posixpath.normpath(name) for name, _ in files}
    return any(d.severity == "error" and d.file and posixpath.normpath(d.file) in names
               for d in report.diagnostics)


def _log_hit(valid: ValidRequest, entry: CacheEntry) -> None:
    """The full origin of a served entry goes to the server's log only."""
    o = entry.origin
    log.info("cache hit for request %s: entry of job %s (request %s, client %s, stored at %.0f)",
             valid.request_id, o.job_id, o.request_id, o.client, o.created_unix,
             extra={"request_id": valid.request_id, "cached_from_job_id": o.job_id,
                    "cached_from_request_id": o.request_id, "cached_from_client": o.client,
                    "cached_at_unix": o.created_unix})
