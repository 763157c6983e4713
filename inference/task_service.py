"""RunTasks: a training job's own tasks on the worker's shared engine, results for training.

One engine and one driver thread (perfbox.inference.rollout.Rollout.serve) serve every caller:
each RunTasks call is a batch in the same forward passes (continuous batching across requests),
admitted round-robin with the others, and bounded in all by `max_live` trajectories (more gets
RESOURCE_EXHAUSTED with a retry delay). The engine starts with the first call.

Per task the service renders the prompt with the model's own chat template and the tool
schemas of the task's tools (perfbox.inference.chat_format), binds the tools to the task's
problem (perfbox.inference.task_tools), and per finished trajectory computes the reward the
task asked for (perfbox.reward: check and bench of its final kernel on the tool service, never
a cached or Put output) before streaming it back.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from perfbox import reward as rewards
from perfbox.api.v1 import rollout_pb2 as rpb
from perfbox.client import ToolClient
from perfbox.inference import tasks as T
from perfbox.inference.chat_format import ChatFormat
from perfbox.inference.engine import Engine, SessionEngine
from perfbox.inference.final_kernel import final_candidate
from perfbox.inference.rollout import Rollout
from perfbox.inference.rollout_backends import StepDriver
from perfbox.inference.rollout_types import (FitPut, Mode, RolloutCancelled, RunTaskTool,
                                             TaskSample, TrajectoryResult)
from perfbox.inference.stream_events import END, drain, shared_field, summary
from perfbox.inference.task_tools import Binding, TaskTools, schemas_of
from perfbox.inference.tool_cache import ToolCache
from perfbox.inference.tool_call_parser import PARSERS
from perfbox.inference.workload import Trajectory

log = logging.getLogger(__name__)
DEFAULT_MAX_LIVE = 256  # trajectories queued or running at once, all callers together
DEFAULT_MAX_CALLS = 32  # RunTasks calls streaming at once (each holds a server thread)
RETRY_DELAY_S = 5.0
MIN_PUT_SCOPE = 16


class TaskRejected(Exception):
    """A request the worker will not run: (status code name, message for the caller)."""

    def __init__(self, code: str, message: str, retry_delay_s: float = 0.0) -> None:
        super().__init__(message)
        self.code, self.retry_delay_s = code, retry_delay_s


class TaskDriver(Protocol):
    """What runs task trajectories on an engine: the step driver (perfbox.inference.rollout,
    the embedded engine) or the session driver (vLLM, perfbox.inference.rollout_backends)."""

    engine: Engine | SessionEngine
    chat: ChatFormat  # the model's template

    def submit(self, trajectories: list[Trajectory], on_event: Callable[[str, dict[str, Any]],
                                                                          None],
               mode: Mode) -> Any:
        """Starts a batch; returns a handle whose `future` resolves to its RolloutStats (or
        RolloutCancelled)."""

    def cancel_batch(self, handle: Any) -> None: ...

    def close(self) -> None: ...


MakeDriver = Callable[[RunTaskTool, ToolCache, FitPut], TaskDriver]


def step_driver(make_engine: Callable[[], Engine]) -> MakeDriver:
    return lambda run_task_tool, cache, fit_put: StepDriver(make_engine(), run_task_tool, cache,
                                                            fit_put)


class TaskRunner:
    """Runs TasksRequests on one shared engine; thread-safe. `make_engine` builds the embedded
    engine; `make_driver` (instead) any TaskDriver, e.g. vLLM's session driver."""

    def __init__(self, make_engine: Callable[[], Engine] | None, client: ToolClient,
                 max_live: int = DEFAULT_MAX_LIVE, cache: ToolCache | None = None,
                 reward_bench_s: float = 2.0, make_driver: MakeDriver | None = None,
                 max_calls: int = DEFAULT_MAX_CALLS) -> None:
        if make_driver is None:
            assert make_engine is not None, "give make_engine or make_driver"
            make_driver = step_driver(make_engine)
        self.make_driver, self.client, self.max_live = make_driver, client, max_live
        self.max_calls = max_calls
        self.cache = cache if cache is not None else ToolCache()
        self.reward_bench_s = reward_bench_s
        self._lock = threading.Lock()
        self._live = 0  # trajectories admitted and not finished (the max_live bound)
        self._calls = 0  # RunTasks calls streaming (the max_calls bound)
        self._driver: TaskDriver | None = None
        self._schemas: dict[str, dict[str, Any]] | None = None
        self._ids = itertools.count(1)
        self._reward_pool = cf.ThreadPoolExecutor(4, thread_name_prefix="reward")

    # -- the shared engine -------------------------------------------------------------------

    def driver(self) -> TaskDriver:
        """The serving driver, started on first use."""
        with self._lock:
            if self._driver is None:
                driver = self.make_driver(lambda call, binding: self.tools.run(call, binding),
                                          self.cache,
                                          lambda text, budget: self.tools.fit([text], budget))
                engine = driver.engine
                self.tools = TaskTools(self.client,
                                       lambda text: engine.tokenize(text, special=False),
                                       engine.detokenize)
                self.chat = driver.chat
                self._driver = driver
            return self._driver

    def rollout(self) -> Rollout:
        """The step driver's Rollout (the embedded engine), for inspection."""
        driver = self.driver()
        if not isinstance(driver, StepDriver):
            raise TypeError("only the embedded engine's driver has a Rollout to inspect")
        return driver.rollout

    def schemas(self) -> dict[str, dict[str, Any]]:
        """The tool service's schemas (ListTools, asked once)."""
        if self._schemas is None:
            import grpc

            try:
                self._schemas = schemas_of(self.client)
            except grpc.RpcError as e:
                raise TaskRejected("UNAVAILABLE", "the tool service did not answer ListTools "
                                   f"({e.code().name}: {e.details()}); retry when it is up",
                                   RETRY_DELAY_S) from None
        return self._schemas

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
        self._reward_pool.shutdown(wait=False, cancel_futures=True)

    # -- a request ---------------------------------------------------------------------------

    def prepare(self, request: rpb.TasksRequest) -> tuple[Mode, list[Trajectory],
                                                          dict[str, T.TaskSpec]]:
        """Checks the request and builds its trajectories; raises TaskRejected."""
        try:
            mode = Mode(request.mode or Mode.SPECULATE.value)
        except ValueError:
            raise TaskRejected("INVALID_ARGUMENT", "mode must be one of "
                               f"{', '.join(m.value for m in Mode)}") from None
        parser = request.parser or "hermes"
        if parser not in PARSERS:
            raise TaskRejected("INVALID_ARGUMENT", f"parser {parser!r} is not one of "
                               f"{', '.join(PARSERS)}")
        if not request.tasks:
            raise TaskRejected("INVALID_ARGUMENT", "tasks: the request holds no task")
        if request.put_scope and len(request.put_scope) < MIN_PUT_SCOPE:
            raise TaskRejected("INVALID_ARGUMENT", f"put_scope: at least {MIN_PUT_SCOPE} "
                               "characters (a secret of yours, e.g. a random token: whoever "
                               "knows it can answer your tasks' calls)")
        specs = [T.from_proto(t) for t in request.tasks]
        wrong = T.batch_problems(specs)
        for spec in specs:
            wrong += [f"task {spec.id!r}: {p}" for p in
                      T.problems(spec, self.schemas(), tuple(rewards.PRESETS))]
        if wrong:
            raise TaskRejected("INVALID_ARGUMENT", "; ".join(wrong[:20]))
        key = f"r{next(self._ids)}"
        engine = self.driver().engine
        trajectories = [t for spec in specs
                        for t in self._trajectories(spec, key, engine, parser,
                                                    request.put_scope)]
        return mode, trajectories, {s.id: s for s in specs}

    def _reserve(self, count: int) -> None:
        """Admits one more call of count live trajectories or refuses with a retry delay;
        atomic, so two calls at once cannot both pass a bound. Calls are bounded apart from
        trajectories: each holds one of the server's threads while it streams."""
        with self._lock:
            if self._calls >= self.max_calls:
                raise TaskRejected("RESOURCE_EXHAUSTED", f"the worker streams {self._calls} "
                                   f"RunTasks calls, its most at once; retry later or send "
                                   "more tasks per call", RETRY_DELAY_S)
            if self._live + count <= self.max_live:
                self._live += count
                self._calls += 1
                return
            live = self._live
        raise TaskRejected("RESOURCE_EXHAUSTED", (
            f"the batch has {count} trajectories and the worker holds {live} of at most "
            f"{self.max_live}; retry later" + ("" if count <= self.max_live else
                                               f", in batches of at most {self.max_live}")),
            RETRY_DELAY_S)

    def _release(self, count: int) -> None:
        with self._lock:
            self._live -= count

    def live_sequences(self) -> int:
        """Trajectories admitted and not finished, all callers together."""
        with self._lock:
            return self._live

    def _trajectories(self, spec: T.TaskSpec, key: str, engine: Engine | SessionEngine,
                      parser: str,
                      put_scope: str) -> list[Trajectory]:
        schemas = self.schemas()
        tools = [schemas[t] for t in spec.tools]
        if spec.prompt_ids:
            prompt = list(spec.prompt_ids)
            vocab = engine.n_vocab
            if max(prompt) >= vocab:
                raise TaskRejected("INVALID_ARGUMENT", f"task {spec.id!r}: prompt_ids: token "
                                   f"{max(prompt)} is outside the vocabulary of {vocab}")
        else:
            try:
                segments = self.chat.render_segments(spec.chat(), tools=tools or None)
            except ValueError as e:
                raise TaskRejected("INVALID_ARGUMENT", f"task {spec.id!r}: messages: {e}"
                                   ) from None
            # message contents as plain text: a marker written in one (a tool output in the
            # history) stays text, only the template's own markers are markers
            prompt = [t for text, content in segments
                      for t in engine.tokenize(text, special=not content)]
        if len(prompt) + 1 >= engine.max_tokens_per_seq:
            raise TaskRejected("INVALID_ARGUMENT", f"task {spec.id!r}: the prompt is "
                               f"{len(prompt)} tokens; the engine's context holds "
                               f"{engine.max_tokens_per_seq} per sequence")
        scope = f"{key}:{spec.id}"
        files, submission_file = spec.problem()
        binding = Binding(scope, {t: schemas[t] for t in spec.tools}, files, submission_file,
                          spec.tool_output_tokens)
        s = spec.sampling
        out = []
        for k in range(spec.group_size):
            sample = TaskSample(
                public_id=f"{spec.id}/{k}", prompt_ids=prompt, binding=binding,
                temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                seed=(spec.seed() + k) & 0xFFFFFFFF, max_new_tokens=s.max_new_tokens,
                max_total_tokens=s.max_total_tokens, max_turns=s.max_turns, stop=s.stop,
                put_owners=((f"{put_scope}/{spec.id}", f"{put_scope}/{spec.id}/{k}")
                            if put_scope else ()), call_format=PARSERS[parser])
            out.append(Trajectory(f"{scope}/{k}", "", [], spec.problem_name,
                                  group=scope if spec.group_size > 1 else "", task=sample))
        return out

    def run(self, request: rpb.TasksRequest,
            on_cancel: Callable[[Callable[[], None]], Any]) -> Iterator[rpb.TaskEvent]:
        """The request's event stream; on_cancel registers what stops it (gRPC's
        context.add_callback)."""
        mode, trajectories, specs = self.prepare(request)
        driver = self.driver()
        self._reserve(len(trajectories))
        try:
            yield from self._stream(driver, mode, trajectories, specs, on_cancel)
        finally:
            with self._lock:
                self._calls -= 1

    def _stream(self, driver: TaskDriver, mode: Mode, trajectories: list[Trajectory],
                specs: dict[str, T.TaskSpec], on_cancel: Callable[[Callable[[], None]], Any]
                ) -> Iterator[rpb.TaskEvent]:
        events: queue.Queue[Any] = queue.Queue()
        pending: list[cf.Future[Any]] = []

        def on_event(kind: str, data: dict[str, Any]) -> None:
            if kind == "done":
                result: TrajectoryResult = data["result"]
                pending.append(self._reward_pool.submit(self._finished, result, specs, events))
            else:
                events.put((kind, data))

        try:
            handle = driver.submit(trajectories, on_event, mode)
        except BaseException:
            self._release(len(trajectories))
            raise
        handle.future.add_done_callback(lambda _: self._release(len(trajectories)))
        scopes = {t.task.binding.scope for t in trajectories}
        on_cancel(lambda: self._cancel(driver, handle, pending, scopes))
        handle.future.add_done_callback(lambda _: events.put(END))
        results = 0
        for event in drain(events, _safe_event):
            results += event.WhichOneof("event") == "result"
            yield event
        try:
            stats = handle.future.result()
        except RolloutCancelled:
            return
        while results < len(pending):  # each result as its reward finishes
            event = _safe_event(*events.get())
            if event is not None:
                results += event.WhichOneof("event") == "result"
                yield event
        yield rpb.TaskEvent(summary=summary(stats))

    def _cancel(self, driver: TaskDriver, handle: Any, pending: list[cf.Future[Any]],
                scopes: set[str]) -> None:
        for future in list(pending):
            future.cancel()
        if not handle.future.done():
            driver.cancel_batch(handle)
            self.tools.cancel(scopes)
        for future in list(pending):
            future.cancel()

    def _finished(self, result: TrajectoryResult, specs: dict[str, T.TaskSpec],
                  events: queue.Queue[Any]) -> None:
        assert result.task is not None
        task_id = result.task.public_id.rsplit("/", 1)[0]
        spec = specs[task_id]
        reward = None
        try:
            reward = self._reward(spec, result) if spec.reward else None
        finally:  # the stream counts on one result per trajectory
            events.put(("result", {"id": result.id, "result": result, "reward": reward}))

    def _reward(self, spec: T.TaskSpec, result: TrajectoryResult) -> rewards.Reward:
        how = True if spec.reward == "default" else spec.reward
        candidate = final_candidate(result)
        if candidate is None:
            return rewards.Reward(total=0.0, correct=False,
                                  preset=rewards.preset(how).name,
                                  refused=["no kernel: the trajectory never submitted a "
                                           "ModelNew to a tool nor wrote one in a code block"])
        try:
            files, submission_file = spec.problem()
            reward, _, _ = rewards.evaluate(self.client, spec.reference, candidate.source, how,
                                            candidate.turn, time_budget_s=self.reward_bench_s,
                                            problem_files=files,
                                            submission_file=submission_file)
        except Exception as e:  # the tool service failed: no reward rather than a wrong one
            log.warning("reward of %s: %s", result.id, e)
            return rewards.Reward(total=0.0, correct=False, preset=rewards.preset(how).name,
                                  refused=[f"the tool service failed: {type(e).__name__}: "
                                           f"{e}"[:300]])
        return reward


def _safe_event(kind: str, data: dict[str, Any]) -> rpb.TaskEvent | None:
    """The event, or (when the model's output cannot be put in a message) a logged skip; a
    trajectory's result always comes back, with finish_reason "error" if need be, so its
    caller is never left waiting for it."""
    try:
        return _event(kind, data)
    except Exception:  # a result must reach its caller even when rendering it fails
        log.exception("event %s of %s", kind, data.get("id"))
        if kind != "result":
            return None
        task_id, _, sample = str(data.get("id", "")).rpartition("/")
        return rpb.TaskEvent(trajectory_id=str(data.get("id", "")), result=rpb.TaskTrajectory(
            task_id=task_id, sample=int(sample) if sample.isdigit() else 0,
            finish_reason="error"))


def _event(kind: str, data: dict[str, Any]) -> rpb.TaskEvent | None:
    tid = str(data.get("id", ""))
    shared = shared_field(kind, data)
    if shared is not None:
        return rpb.TaskEvent(trajectory_id=tid, **shared)
    if kind == "result":
        return rpb.TaskEvent(trajectory_id=tid, result=trajectory_message(data["result"],
                                                                          data["reward"]))
    return None


def trajectory_message(r: TrajectoryResult, reward: rewards.Reward | None
                       ) -> rpb.TaskTrajectory:
    assert r.task is not None
    task_id, sample = r.task.public_id.rsplit("/", 1)
    message = rpb.TaskTrajectory(
        task_id=task_id, sample=int(sample), prompt_ids=r.prompt_ids,
        response_ids=r.response_ids, response_mask=r.response_mask, logprobs=r.logprobs,
        finish_reason=r.finish_reason, response_text=r.text,
        wall_s=r.wall_s, has_reward=reward is not None)
    for call in r.calls:
        message.turns.add(tool=call.name, arguments_json=json.dumps(call.arguments),
                          status=call.status, inserted_text=call.inserted, tool_s=call.tool_s,
                          speculative_hit=call.speculative_hit)
    if reward is not None:
        message.reward.total = reward.total
        message.reward.breakdown_json = json.dumps(reward.to_json())
    return message
