"""The tool side of a rollout, one for both loops (perfbox.inference.rollout and
perfbox.inference.session_rollout): where a call's output comes from, and what is launched
before the model asks for it.

A call's output is, in order: what the task's caller Put for it (the client-side flow, any
mode), a speculative launch already in the cache (when speculating), or a run started now.
Speculating launches a call as soon as its arguments are complete in the stream (early
launch), the follow-on calls `FOLLOW_ONS` names when a call closes, and an emulated draft's
guess at the start of a turn. A tool that raises becomes a TOOL_ERROR output the model reads:
the service failing never ends a trajectory.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Mapping
from typing import Any

from perfbox.inference.rollout_types import FitPut, RunTaskTool, ToolOutput
from perfbox.inference.tool_cache import ToolCache, owned_key
from perfbox.inference.tool_call_parser import ToolCall
from perfbox.inference.workload import Trajectory

# a call to the key is likely followed by calls to these, with the same arguments: launched
# when it closes (after a compile the model usually asks for its disassembly)
FOLLOW_ONS: dict[str, tuple[str, ...]] = {"compile": ("disasm",)}
MAX_ERROR_CHARS = 600  # of a failed tool call's error, as the model reads it

Submit = Callable[[Callable[[], ToolOutput]], "cf.Future[Any]"]  # a thread pool's submit


class Speculator:
    """The tool cache, the launcher and the follow-on table of one rollout. `submit` is the
    rollout's tool pool (set by the loop while its pool runs)."""

    def __init__(self, cache: ToolCache, run_tool: Callable[[ToolCall], ToolOutput],
                 run_task_tool: RunTaskTool | None = None, fit_put: FitPut | None = None,
                 follow_ons: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.cache, self.run_tool = cache, run_tool
        self.run_task_tool, self.fit_put = run_task_tool, fit_put
        self.follow_ons = dict(FOLLOW_ONS if follow_ons is None else follow_ons)
        self.submit: Submit | None = None

    def key(self, call: ToolCall, traj: Trajectory) -> str:
        """The cache key of a trajectory's call. A task's calls are scoped to their task (its
        samples share launches, tasks never do: the same submission against another problem
        is another result)."""
        return call.key if traj.task is None else f"{traj.task.binding.scope}\n{call.key}"

    def runner(self, call: ToolCall, traj: Trajectory) -> Callable[[], ToolOutput]:
        """What runs the call: a task's through its binding, the workload's as it is."""
        if traj.task is None:
            return lambda: self.run_tool(call)
        assert self.run_task_tool is not None, "task trajectories need run_task_tool"
        binding = traj.task.binding
        return lambda: self.run_task_tool(call, binding)  # type: ignore[misc]

    def launch(self, call: ToolCall, traj: Trajectory) -> bool:
        """Starts the call ahead of its claim; False when the caller Put it already or it is
        in flight."""
        if self._has_put(call, traj):
            return False
        return self.cache.launch(self.key(call, traj), self.runner(call, traj),
                                 self._submit(), response_id=traj.id)

    def launch_follow_ons(self, call: ToolCall, traj: Trajectory) -> int:
        """Launches what usually follows `call` (and the trajectory may call); how many."""
        launched = 0
        for name in self.follow_ons.get(call.name, ()):
            if traj.task is None or name in traj.task.binding.schemas:
                launched += self.launch(ToolCall(name, dict(call.arguments), call.raw), traj)
        return launched

    def start(self, call: ToolCall, traj: Trajectory, speculating: bool
              ) -> tuple[cf.Future[Any], bool]:
        """The call's output to come, and whether it was there before the call closed (a Put,
        or a launch when speculating)."""
        future = self._claim_put(call, traj)
        if future is None and speculating:
            future = self.cache.claim(self.key(call, traj))
        if future is not None:
            return future, True
        return self._submit()(self.runner(call, traj)), False

    def output(self, future: cf.Future[Any], traj: Trajectory) -> ToolOutput:
        """A finished call's output as the model reads it: a tool's own, a caller's Put cut
        to the task's output budget, or the error that stopped it."""
        try:
            output = future.result()
        except Exception as e:  # the service failed: the model reads the error
            return ToolOutput(f"TOOL_ERROR: {type(e).__name__}: {e}"[:MAX_ERROR_CHARS],
                              "TOOL_ERROR", 0.0)
        if isinstance(output, ToolOutput):
            return output
        text = str(getattr(output, "text", output))  # a client's Put
        if traj.task is not None and self.fit_put is not None:
            text = self.fit_put(text, traj.task.binding.output_tokens)
        return ToolOutput(text, "PUT", 0.0)

    def _submit(self) -> Submit:
        if self.submit is None:
            raise RuntimeError("the rollout's tool pool is not running")
        return self.submit

    def _claim_put(self, call: ToolCall, traj: Trajectory) -> cf.Future[Any] | None:
        """What the task's caller Put for this call, under one of the owners its put scope
        gives (none without one)."""
        for owner in traj.task.put_owners if traj.task is not None else ():
            future = self.cache.claim(owned_key(owner, call.key), count_miss=False)
            if future is not None:
                return future
        return None

    def _has_put(self, call: ToolCall, traj: Trajectory) -> bool:
        return any(self.cache.lookup(owned_key(owner, call.key)) is not None
                   for owner in (traj.task.put_owners if traj.task is not None else ()))


def draft_guess(call: ToolCall, right: bool, turn: int) -> ToolCall:
    """An emulated draft model's guess at a turn's call: the call itself when right, else one
    that will never be claimed (its tool time is wasted, as a wrong draft's is)."""
    if right:
        return call
    return ToolCall(call.name, {**call.arguments, "draft_guess": turn}, call.raw)
