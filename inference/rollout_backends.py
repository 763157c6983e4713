"""What RolloutService runs a rollout on: the embedded step engine (llama.cpp) or vLLM.

The two engines are driven differently (perfbox.inference.rollout steps a forward pass at a
time in a thread; perfbox.inference.session_rollout runs vLLM's streaming-input sessions in an
event loop), so the service asks a backend to *start* a rollout and gets back a handle it can
wait on or cancel. The step backend builds an engine per rollout (its KV slots are sized to
the request) and runs one rollout at a time; the vLLM backend loads its model once, at worker
start, keeps one event loop for it (AsyncLLM's output handler belongs to the loop it first ran
in) and lets rollouts share the engine, whose scheduler batches them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from collections.abc import Callable
from typing import Any, Protocol

from perfbox.inference.engine import Engine, SessionEngine
from perfbox.inference.rollout import BatchHandle, Rollout
from perfbox.inference.rollout_types import (FitPut, Mode, OnEvent, RolloutCancelled,
                                             RolloutConfig, RolloutStats, RunTaskTool,
                                             ToolOutput)
from perfbox.inference.tool_cache import ToolCache
from perfbox.inference.tool_call_parser import ToolCall
from perfbox.inference.workload import Trajectory

TOOL_THREADS = 64  # task tool calls in flight at once on the shared driver (all callers)
RunTool = Callable[[ToolCall], ToolOutput]


class RolloutRun(Protocol):
    def result(self) -> RolloutStats:
        """Waits for the rollout; raises RolloutCancelled if cancel() stopped it."""

    def cancel(self) -> None:
        """Stops the rollout from any thread; its sequences are dropped."""


class RolloutBackend(Protocol):
    name: str
    exclusive: bool  # one rollout at a time (the step engine) or shared (vLLM)

    def start(self, trajectories: list[Trajectory], config: RolloutConfig, kv_slots: int,
              on_event: OnEvent) -> RolloutRun: ...

    def close(self) -> None: ...


class _StepRun:
    def __init__(self, engine: Engine, rollout: Rollout, trajectories: list[Trajectory]
                 ) -> None:
        self._engine, self._rollout = engine, rollout
        self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="rollout")
        self._done = self._pool.submit(rollout.run, trajectories)

    def result(self) -> RolloutStats:
        try:
            return self._done.result()
        finally:
            self._pool.shutdown(wait=True)
            self._engine.close()

    def cancel(self) -> None:
        self._rollout.cancel()


class StepBackend:
    """The embedded engine: a fresh engine per rollout, sized to the request's KV slots."""

    exclusive = True

    def __init__(self, make_engine: Callable[[int], Engine], run_tool: RunTool,
                 name: str = "llama.cpp") -> None:
        self.make_engine, self.run_tool, self.name = make_engine, run_tool, name

    def start(self, trajectories: list[Trajectory], config: RolloutConfig, kv_slots: int,
              on_event: OnEvent) -> RolloutRun:
        engine = self.make_engine(kv_slots)
        return _StepRun(engine, Rollout(engine, self.run_tool, config, on_event=on_event),
                        trajectories)

    def close(self) -> None:
        pass


class _SessionRun:
    """A rollout task in the engine's loop. result() returns once the task has ended, its
    sessions closed, also after cancel() (a cancelled asyncio future reports "cancelled" at
    once, before the task's cleanup has run, so the task is awaited through its own callback)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[RolloutStats]
                 ) -> None:
        self._loop, self._task = loop, task
        self._done: cf.Future[RolloutStats] = cf.Future()
        loop.call_soon_threadsafe(task.add_done_callback, self._settle)

    def _settle(self, task: asyncio.Task[RolloutStats]) -> None:
        if task.cancelled():
            self._done.set_exception(RolloutCancelled("cancelled; its vLLM sessions were "
                                                      "closed"))
        elif task.exception() is not None:
            self._done.set_exception(task.exception())  # type: ignore[arg-type]
        else:
            self._done.set_result(task.result())

    def result(self) -> RolloutStats:
        return self._done.result()

    @property
    def future(self) -> cf.Future[RolloutStats]:
        return self._done

    def cancel(self) -> None:
        self._loop.call_soon_threadsafe(self._task.cancel)


class SessionBackend:
    """vLLM: one engine for the worker's life, in an event loop of its own thread."""

    exclusive = False

    def __init__(self, make_engine: Callable[[], SessionEngine], run_tool: RunTool,
                 name: str = "vllm") -> None:
        """make_engine runs inside the loop (AsyncLLM needs a running loop)."""
        self.run_tool, self.name = run_tool, name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-loop",
                                        daemon=True)
        self._thread.start()

        async def create() -> Any:
            return make_engine()

        try:
            self.engine = asyncio.run_coroutine_threadsafe(create(), self._loop).result()
        except BaseException:
            self._stop_loop()
            raise

    def start(self, trajectories: list[Trajectory], config: RolloutConfig, kv_slots: int,
              on_event: OnEvent) -> RolloutRun:
        from perfbox.inference.session_rollout import SessionRollout

        rollout = SessionRollout(self.engine, self.run_tool, config, on_event=on_event)

        async def launch() -> asyncio.Task[RolloutStats]:
            return asyncio.create_task(rollout.run(trajectories))

        return _SessionRun(self._loop,
                           asyncio.run_coroutine_threadsafe(launch(), self._loop).result())

    def start_tasks(self, trajectories: list[Trajectory], config: RolloutConfig,
                    on_event: OnEvent, cache: Any, run_task_tool: Any, template: Any,
                    fit_put: Any = None) -> _SessionRun:
        """A training job's task trajectories (perfbox.inference.task_service)."""
        from perfbox.inference.session_rollout import SessionRollout

        rollout = SessionRollout(self.engine, self.run_tool, config, template=template,
                                 on_event=on_event, cache=cache, run_task_tool=run_task_tool,
                                 fit_put=fit_put)

        async def launch() -> asyncio.Task[RolloutStats]:
            return asyncio.create_task(rollout.run(trajectories))

        return _SessionRun(self._loop,
                           asyncio.run_coroutine_threadsafe(launch(), self._loop).result())

    def close(self) -> None:
        """Stops the engine core, then the loop."""
        async def shutdown() -> None:
            self.engine.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=60)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


class StepDriver:
    """The embedded engine's driver: one Rollout serving every batch on a thread of its own."""

    def __init__(self, engine: Engine, run_task_tool: RunTaskTool, cache: ToolCache,
                 fit_put: FitPut | None = None) -> None:
        self.engine = engine
        self.chat = engine.chat_format()
        # tool calls wait on the tool service (its own queue and quotas bound the work): a
        # pool of many threads, so one caller's slow calls cannot queue another's behind them
        self.rollout = Rollout(engine, _no_workload_tool,
                               RolloutConfig(mode=Mode.SPECULATE, forced=False,
                                             tool_workers=TOOL_THREADS),
                               template=self.chat, cache=cache, run_task_tool=run_task_tool,
                               fit_put=fit_put)
        self._thread = threading.Thread(target=self.rollout.serve, name="rollout-driver",
                                        daemon=True)
        self._thread.start()

    def submit(self, trajectories: list[Trajectory], on_event: OnEvent, mode: Any
               ) -> BatchHandle:
        return self.rollout.submit(trajectories, on_event, mode)

    def cancel_batch(self, handle: BatchHandle) -> None:
        self.rollout.cancel_batch(handle)

    def close(self) -> None:
        self.rollout.cancel()
        self._thread.join(timeout=30)
        self.engine.close()


def _no_workload_tool(call: ToolCall) -> Any:
    raise RuntimeError("RunTasks trajectories run tools through their task's binding")


class SessionDriver:
    """RunTasks on vLLM (perfbox.inference.task_service.TaskDriver): every call's batch is a
    SessionRollout task in the backend's event loop, on the engine it loaded once; vLLM's
    scheduler batches them with each other and with `Run` rollouts."""

    def __init__(self, backend: SessionBackend, run_task_tool: Any, cache: Any,
                 fit_put: Any = None) -> None:
        self.backend, self.engine = backend, backend.engine
        self.chat = self.engine.chat_format()
        self.run_task_tool, self.cache, self.fit_put = run_task_tool, cache, fit_put

    def submit(self, trajectories: list[Trajectory], on_event: OnEvent, mode: Any) -> Any:
        config = RolloutConfig(mode=mode, forced=False)
        return self.backend.start_tasks(trajectories, config, on_event, self.cache,
                                        self.run_task_tool, self.chat, self.fit_put)

    def cancel_batch(self, handle: Any) -> None:
        handle.cancel()

    def close(self) -> None:
        """The backend (and its engine) belongs to the worker; it closes them."""


def make_backend(engine: str, model: str | None, run_tool: RunTool, threads: int = 1,
                 engine_args: dict[str, Any] | None = None) -> RolloutBackend:
    """RolloutService's backend for a registered engine (perfbox.inference.engines): a step
    engine built per rollout, or a session engine loaded once, now (which takes a while for a
    large model)."""
    from perfbox.inference import engines

    if engines.get(engine).kind == "session":
        return SessionBackend(lambda: engines.create(engine, model, engine_args=engine_args),
                              run_tool, name=engine)
    return StepBackend(lambda slots: engines.create(engine, model, num_slots=slots,
                                                    threads=threads, engine_args=engine_args),
                       run_tool, name=engine)


def make_task_driver(engine: str, model: str | None, backend: RolloutBackend, kv_slots: int,
                     threads: int = 1, engine_args: dict[str, Any] | None = None
                     ) -> Callable[[RunTaskTool, ToolCache, FitPut], Any]:
    """What RunTasks serves on (perfbox.inference.task_service.TaskRunner's make_driver): a
    step engine of its own with kv_slots streams, started on first use, or the session engine
    the backend loaded."""
    from perfbox.inference import engines

    if engines.get(engine).kind == "session":
        assert isinstance(backend, SessionBackend)
        return lambda run, cache, fit: SessionDriver(backend, run, cache, fit)
    return lambda run, cache, fit: StepDriver(
        engines.create(engine, model, num_slots=kv_slots, threads=threads,
                       engine_args=engine_args), run, cache, fit)
