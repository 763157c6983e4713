"""perfbox.v1.RolloutService: a training job asks the worker for trajectories and receives
tokens, tool calls and results as they happen, then a summary.

- `RunTasks`: the job's own tasks (perfbox.inference.task_service): prompts, tools bound to a
  problem, sampling settings, groups; results carry what training consumes. Calls from many
  clients share one engine.
- `Run`: the worker's bundled workload, replayed or free-run, for benchmarks. On the embedded
  engine one such rollout holds its engine at a time (a second call gets RESOURCE_EXHAUSTED);
  on vLLM rollouts share the engine.
A cancelled call stops its trajectories."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from perfbox.api import RETRY_DELAY_KEY
from perfbox.api.v1 import rollout_pb2 as rpb
from perfbox.api.v1 import rollout_pb2_grpc
from perfbox.inference import workload as W
from perfbox.inference.rollout_types import Mode, RolloutCancelled, RolloutConfig
from perfbox.inference.rollout_backends import RolloutBackend
from perfbox.inference.stream_events import END, drain, shared_field, summary
from perfbox.inference.task_service import TaskRejected, TaskRunner

log = logging.getLogger(__name__)
MAX_COUNT = 4096
MAX_KV_SLOTS = 64  # sequences one engine holds at once; more trajectories queue for a slot


@dataclass
class RolloutTotals:
    """Cumulative figures of every finished rollout (the worker's metrics read them)."""

    rollouts: int = 0
    generated_tokens: int = 0
    prefill_tokens: int = 0
    reprefill_tokens: int = 0
    spec_hits: int = 0
    spec_misses: int = 0
    spec_launched: int = 0
    wasted_tool_s: float = 0.0

    def add(self, stats: Any) -> None:
        self.rollouts += 1
        for name in ("generated_tokens", "prefill_tokens", "reprefill_tokens", "spec_hits",
                     "spec_misses", "spec_launched", "wasted_tool_s"):
            setattr(self, name, getattr(self, name) + getattr(stats, name))


class RolloutService(rollout_pb2_grpc.RolloutServiceServicer):
    def __init__(self, backend: RolloutBackend, workload: W.Workload | None = None,
                 tasks: TaskRunner | None = None) -> None:
        self.backend = backend
        self.tasks = tasks
        self.workload = workload or W.load()
        self._busy = threading.Lock()
        self.totals = RolloutTotals()  # since start, for metrics

    def _trajectories(self, request: rpb.RolloutRequest, context: grpc.ServicerContext
                      ) -> list[W.Trajectory]:
        known = {t.id: t for t in self.workload.trajectories}
        chosen = [known[i] for i in request.trajectory_ids if i in known]
        unknown = [i for i in request.trajectory_ids if i not in known]
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown trajectories "
                          f"{', '.join(unknown)}; known: {', '.join(known)}")
        base = W.Workload(chosen or self.workload.trajectories, self.workload.problems,
                          self.workload.start_tag, self.workload.end_tag)
        count = request.count or len(base.trajectories)
        if count > MAX_COUNT:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"count is at most {MAX_COUNT}")
        if request.group_size > MAX_COUNT:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"group_size is at most {MAX_COUNT}")
        if request.temperature < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "temperature must be 0 or more")
        return W.replicate(base, count, group_size=max(1, request.group_size),
                           shared_turns=request.shared_turns)

    def Run(self, request: rpb.RolloutRequest, context: grpc.ServicerContext
            ) -> Iterator[rpb.RolloutEvent]:
        try:
            mode = Mode(request.mode or "resident")
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"mode must be one of "
                          f"{', '.join(m.value for m in Mode)}")
        trajectories = self._trajectories(request, context)
        with self._hold_engine(context):
            yield from self._run(request, mode, trajectories, context)

    def RunTasks(self, request: rpb.TasksRequest, context: grpc.ServicerContext
                 ) -> Iterator[rpb.TaskEvent]:
        if self.tasks is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this worker was started without a "
                          "task runner (perfbox.inference.task_service.TaskRunner): it serves "
                          "only the bundled workload through Run")
        assert self.tasks is not None
        try:
            stream = self.tasks.run(request, context.add_callback)
            first = next(stream, None)
        except TaskRejected as e:
            if e.retry_delay_s:
                context.set_trailing_metadata(
                    ((RETRY_DELAY_KEY, str(max(1, round(e.retry_delay_s * 1000)))),))
            context.abort(getattr(grpc.StatusCode, e.code), str(e))
        except Exception as e:  # perfbox's own fault (the engine, the driver): say so
            log.exception("RunTasks")
            context.abort(grpc.StatusCode.INTERNAL, f"the rollout worker failed: "
                          f"{type(e).__name__}: {e}")
        if first is None:
            return
        yield first
        try:
            yield from stream
        except Exception as e:  # perfbox's own fault: INTERNAL with its name, logged in full
            log.exception("RunTasks")
            context.abort(grpc.StatusCode.INTERNAL, f"the rollout worker failed: "
                          f"{type(e).__name__}: {e}")

    @contextlib.contextmanager
    def _hold_engine(self, context: grpc.ServicerContext) -> Iterator[None]:
        if not self.backend.exclusive:
            yield
            return
        if not self._busy.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "another rollout holds the "
                          "engine; retry when it ends")
        try:
            yield
        finally:
            self._busy.release()

    def _run(self, request: rpb.RolloutRequest, mode: Mode, trajectories: list[W.Trajectory],
             context: grpc.ServicerContext) -> Iterator[rpb.RolloutEvent]:
        events: queue.Queue[Any] = queue.Queue()
        config = RolloutConfig(mode=mode, forced=not request.free_generation,
                               max_turn_tokens=request.max_turn_tokens or 256,
                               max_turns=request.max_turns or 8,
                               temperature=request.temperature, seed=request.seed)
        run = self.backend.start(trajectories, config,
                                 min(request.kv_slots or len(trajectories), MAX_KV_SLOTS),
                                 lambda kind, data: events.put((kind, data)))
        context.add_callback(run.cancel)
        with cf.ThreadPoolExecutor(1) as waiter:
            done = waiter.submit(run.result)
            done.add_done_callback(lambda _: events.put(END))
            yield from drain(events, _event)
        try:
            stats = done.result()
        except RolloutCancelled:
            return
        self.totals.add(stats)
        yield rpb.RolloutEvent(summary=summary(stats))


def _event(kind: str, data: dict[str, Any]) -> rpb.RolloutEvent | None:
    tid = str(data.get("id", ""))
    shared = shared_field(kind, data)
    if shared is not None:
        return rpb.RolloutEvent(trajectory_id=tid, **shared)
    if kind == "done":
        r = data.get("result")
        if r is None:
            return None
        return rpb.RolloutEvent(trajectory_id=tid, done=rpb.TrajectoryDone(
            generated_tokens=r.generated_tokens, prefill_tokens=r.prefill_tokens,
            reprefill_tokens=r.reprefill_tokens, wall_s=r.wall_s, text=r.text,
            group=r.group, forked_tokens=r.forked_tokens))
    return None


def create_server(service: RolloutService, address: str = "127.0.0.1:0"
                  ) -> tuple[grpc.Server, int]:
    server = grpc.server(cf.ThreadPoolExecutor(max_workers=8))
    rollout_pb2_grpc.add_RolloutServiceServicer_to_server(service, server)
    port = server.add_insecure_port(address)
    server.start()
    return server, port
