"""verl: perfbox's tools as `BaseTool`s, their tool-config YAML, and an agent loop named
`perfbox` that hands whole multi-turn trajectories to perfbox's rollout worker.

Tools (verl's own ToolAgentLoop generates; perfbox runs the calls):

    python -m perfbox.integrations.verl --server HOST:PORT > perfbox_tools.yaml
    # actor_rollout_ref.rollout.multi_turn.tool_config_path=perfbox_tools.yaml
    # each row: extra_info.tools_kwargs = perfbox.integrations.verl.tools_kwargs(problem)

verl (0.9) creates, executes and releases a tool instance for *every call*, so nothing a
trajectory needs may live on the instance: the row's problem arrives again with each create
(`create_kwargs`), and what must survive between calls (the last submission, for
`calc_reward`) is kept on the trajectory itself (`agent_data.extra_fields["perfbox"]`, verl's
place for tool session state). verl cuts tool responses to `max_tool_response_length`
characters (256 by default): the text puts the status and summary first.

Agent loop (perfbox's worker generates, keeps sequences resident and speculates the calls):

    actor_rollout_ref.rollout.agent.agent_loop_config_path=<file with
      - name: perfbox
        _target_: perfbox.integrations.verl.PerfboxAgentLoop>
    # rows: agent_name=perfbox; PERFBOX_WORKER=host:port names the worker

The worker must serve the policy's current weights: syncing them is the trainer's job, as it is
for verl's own rollout servers.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import uuid
from typing import Any

import grpc
from verl.experimental.agent_loop.agent_loop import (AgentLoopBase, AgentLoopMetrics,
                                                     AgentLoopOutput, register)
from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from perfbox.api import MAX_MESSAGE_BYTES
from perfbox.api.v1 import rollout_pb2 as rpb
from perfbox.api.v1 import rollout_pb2_grpc
from perfbox.integrations.toolbox import DEFAULT_OUTPUT_CHARS, Problem, Toolbox, shared_toolbox

CLASS_NAME = "perfbox.integrations.verl.PerfboxTool"
WORKER_ENV = "PERFBOX_WORKER"
STATE_KEY = "perfbox"  # agent_data.extra_fields key of a trajectory's perfbox state

class PerfboxTool(BaseTool):
    """One perfbox tool. config: {"type": "native", "target": "host:port", "tool": name,
    "output_chars": 2000, "reward": preset, "require_custom_kernel": false}; the schema comes
    from the YAML or, when absent, from the service (ListTools)."""

    def __init__(self, config: dict[str, Any], tool_schema: OpenAIFunctionToolSchema | None):
        self.toolbox = shared_toolbox(config.get("target") or None,
                                      int(config.get("output_chars") or DEFAULT_OUTPUT_CHARS),
                                      bool(config.get("require_custom_kernel")))
        if tool_schema is None:
            name = config.get("tool")
            schemas = self.toolbox.schemas()
            if name not in schemas:
                raise ValueError(f"PerfboxTool: config.tool must name one of "
                                 f"{', '.join(schemas)} (got {name!r})")
            tool_schema = OpenAIFunctionToolSchema.model_validate(schemas[name])
        super().__init__(config, tool_schema)
        self.how = config.get("reward") or True
        self._problems: dict[str, Problem | None] = {}  # instance id -> the row's problem
        self._lock = threading.Lock()

    async def create(self, instance_id: str | None = None, create_kwargs: dict | None = None,
                     **kwargs: Any) -> tuple[str, ToolResponse]:
        instance_id = instance_id or str(uuid.uuid4())
        data = create_kwargs or {}
        problem = Problem.of(data) if ({"problem", "reference", "files"} & set(data)) else None
        with self._lock:
            self._problems[instance_id] = problem
        return instance_id, ToolResponse()

    async def execute(self, instance_id: str, parameters: dict[str, Any],
                      **kwargs: Any) -> tuple[ToolResponse, float, dict]:
        with self._lock:
            problem = self._problems.get(instance_id)
        state = _state(kwargs.get("agent_data"))
        if problem is None:
            problem = state.get("problem")
        state["problem"] = problem
        if isinstance(parameters, dict) and isinstance(parameters.get("submission"), str):
            state["submission"] = parameters["submission"]
        state["calls"] = state.get("calls", 0) + 1
        outcome = await self.toolbox.acall(self.name, parameters, problem,
                                           scope=_scope(kwargs.get("agent_data"), instance_id))
        return ToolResponse(text=outcome.text), 0.0, {"status": outcome.status}

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        """The reward of the trajectory's last submission (check, then bench): 0 when it has
        none. Needs the trajectory (`agent_data=`): verl keeps no state on instances."""
        state = _state(kwargs.get("agent_data"))
        problem, submission = state.get("problem"), state.get("submission")
        if problem is None or not submission:
            return 0.0
        scored = await self.toolbox.ascore_many([(problem, submission)], self.how)
        return scored[0].total

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        with self._lock:
            self._problems.pop(instance_id, None)


def _state(agent_data: Any) -> dict[str, Any]:
    if agent_data is None:
        return {}
    return agent_data.extra_fields.setdefault(STATE_KEY, {})


def _scope(agent_data: Any, instance_id: str) -> str:
    return str(getattr(agent_data, "request_id", "") or instance_id)


def tool_config(target: str, tools: list[str] | None = None, output_chars: int = 2000,
                toolbox: Toolbox | None = None) -> dict[str, Any]:
    """verl's tool config ({"tools": [{class_name, config, tool_schema}]}) for the service's
    tools (ListTools), or the named ones."""
    box = toolbox or Toolbox(target)
    schemas = box.schemas()
    unknown = [t for t in tools or () if t not in schemas]
    if unknown:
        raise ValueError(f"unknown tools {', '.join(unknown)}; {target} has "
                         f"{', '.join(schemas)}")
    return {"tools": [{"class_name": CLASS_NAME,
                       "config": {"type": "native", "target": target, "tool": name,
                                  "output_chars": output_chars},
                       "tool_schema": schema}
                      for name, schema in schemas.items() if not tools or name in tools]}


def tools_kwargs(problem: Any, tools: list[str] | tuple[str, ...] = (
        "check", "bench", "profile", "sanitize", "compile", "disasm")) -> dict[str, Any]:
    """A row's `extra_info.tools_kwargs`: the problem handed to every tool's create."""
    data = Problem.of(problem).to_json()
    return {name: {"create_kwargs": data} for name in tools}


@register("perfbox")
class PerfboxAgentLoop(AgentLoopBase):
    """A whole trajectory from perfbox's rollout worker (RunTasks): the model's turns, the
    tool calls (speculated, sequences kept resident), the tool outputs, the reward.

    Row fields read: raw_prompt (the messages), extra_info.problem (or tools_kwargs'), and
    extra_info.tools (default check, compile). The worker is $PERFBOX_WORKER, or
    actor_rollout_ref.rollout.custom.perfbox_worker."""

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        task = self.task(sampling_params, **kwargs)
        trajectory = await run_task(self.worker(), task)
        return output_of(trajectory)

    def worker(self) -> str:
        custom = self.rollout_config.get("custom", None) or {}
        target = os.environ.get(WORKER_ENV) or custom.get("perfbox_worker")
        if not target:
            raise ValueError(f"set ${WORKER_ENV} (or actor_rollout_ref.rollout.custom."
                             "perfbox_worker) to the perfbox rollout worker's host:port")
        return str(target)

    def task(self, sampling_params: dict[str, Any], **kwargs: Any) -> rpb.Task:
        extra = dict(kwargs.get("extra_info") or {})
        multi_turn = self.rollout_config.get("multi_turn", None) or {}
        return task_of(kwargs["raw_prompt"], extra, sampling_params,
                       response_length=int(self.rollout_config.response_length),
                       max_turns=int(multi_turn.get("max_assistant_turns") or 0))


def task_of(messages: list[dict[str, Any]], extra: dict[str, Any],
            sampling_params: dict[str, Any], response_length: int, max_turns: int = 0
            ) -> rpb.Task:
    """The RunTasks task for one verl row."""
    problem_data = extra.get("problem")
    if problem_data is None:
        for kw in (extra.get("tools_kwargs") or {}).values():
            problem_data = (kw or {}).get("create_kwargs")
            if problem_data:
                break
    task = rpb.Task(id=str(extra.get("index", "row")), group_size=1,
                    tools=list(extra.get("tools") or ("check", "compile")),
                    reward=str(extra.get("reward") or "default"))
    for m in messages:
        task.messages.add(role=str(m["role"]), content=str(m.get("content") or ""))
    if problem_data:
        p = Problem.of(problem_data)
        task.problem.reference, task.problem.name = p.reference, p.name
        task.problem.files.update(p.files)
    s = task.sampling
    s.temperature = float(sampling_params.get("temperature", 1.0))
    if sampling_params.get("top_p") is not None:
        s.top_p = float(sampling_params["top_p"])
    top_k = int(sampling_params.get("top_k") or 0)
    s.top_k = max(0, top_k)
    s.max_total_tokens = response_length
    s.max_new_tokens = min(response_length, 512)
    if max_turns:
        s.max_turns = max_turns
    return task


async def run_task(worker: str, task: rpb.Task) -> rpb.TaskTrajectory:
    """One task through RunTasks; raises with the worker's message when it refuses."""
    request = rpb.TasksRequest(tasks=[task])
    async with grpc.aio.insecure_channel(worker, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]) as channel:
        stub = rollout_pb2_grpc.RolloutServiceStub(channel)
        async for event in stub.RunTasks(request):
            if event.WhichOneof("event") == "result":
                return event.result
    raise RuntimeError(f"the rollout worker at {worker} ended the stream without a result "
                       f"for task {task.id!r}")


def output_of(t: rpb.TaskTrajectory) -> AgentLoopOutput:
    """verl's AgentLoopOutput from a perfbox trajectory (mask 1: sampled; 0: inserted)."""
    return AgentLoopOutput(
        prompt_ids=list(t.prompt_ids), response_ids=list(t.response_ids),
        response_mask=list(t.response_mask), response_logprobs=list(t.logprobs),
        reward_score=t.reward.total if t.has_reward else None,
        # verl counts user, assistant and tool turns: the prompt's user turn, one assistant
        # turn per call plus the last, one tool turn per call
        num_turns=2 + 2 * len(t.turns),
        metrics=AgentLoopMetrics(tool_calls=sum(x.tool_s for x in t.turns)),
        extra_fields={"perfbox_finish_reason": t.finish_reason,
                      "perfbox_statuses": [x.status for x in t.turns]})


def main(argv: list[str] | None = None) -> int:
    import yaml

    p = argparse.ArgumentParser(prog="python -m perfbox.integrations.verl",
                                description="print verl's tool config for a perfbox service")
    p.add_argument("--server", required=True, metavar="HOST:PORT")
    p.add_argument("--tool", action="append", help="only these tools (default: all)")
    p.add_argument("--output-chars", type=int, default=2000,
                   help="characters of a tool's output (verl cuts at its "
                        "max_tool_response_length too)")
    args = p.parse_args(argv)
    box = Toolbox(args.server)
    try:
        box.client.wait_ready(timeout_s=10)
        config = tool_config(args.server, args.tool, args.output_chars, toolbox=box)
    except grpc.FutureTimeoutError:
        print(f"error: cannot reach a perfbox service at {args.server}", file=sys.stderr)
        return 3
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        box.close()
    yaml.safe_dump(config, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
