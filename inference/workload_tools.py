"""Tool calls from a trajectory to the tool service, through perfbox.client only.

Maps the agent's call syntax (tools that act on source, such as `compile` and `disasm`: file,
source and arch; tools that act on a problem, such as `check` and `bench`: a problem name and a
submission) to ToolRequests, and the ToolResult back to the text the model reads. The text
holds the status and the model-facing summary, never timings, so it is the same in every
rollout mode.
"""

from __future__ import annotations

import time
from typing import Any

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient, make_request
from perfbox.inference.rollout_types import ToolOutput
from perfbox.inference.tool_call_parser import ToolCall
from perfbox.reward import REFERENCE_FILE, judge_request
from perfbox.tools import TOOLS

MAX_OUTPUT_CHARS = 600


# the tools the bundled workloads' trajectories call: a model generating freely on them is
# offered these and nothing else (profile and sanitize need a GPU and their own budget)
WORKLOAD_TOOLS = ("compile", "disasm", "check", "bench")


class ToolBridge:
    def __init__(self, client: ToolClient, problems: dict[str, dict[str, Any]],
                 no_cache: bool = True, bench_budget_s: float = 2.0,
                 tools: tuple[str, ...] = WORKLOAD_TOOLS) -> None:
        unknown = [t for t in tools if t not in TOOLS]
        if unknown:
            raise ValueError(f"unknown tools {', '.join(unknown)}; choose from {', '.join(TOOLS)}")
        self.tools = tools
        self.client = client
        self.bench_budget_s = bench_budget_s  # a bench call's timing budget (seconds)
        self.problems = problems
        # each trajectory stands for a different kernel: the service's result cache would
        # make replicated trajectories' calls free, which is not what T should measure
        self.no_cache = no_cache

    def request(self, call: ToolCall) -> pb.ToolRequest | str:
        """The ToolRequest for a call, or why the call cannot be made."""
        args = call.arguments
        if call.name not in self.tools:
            return f"unknown tool {call.name!r}; tools: {', '.join(self.tools)}"
        spec = TOOLS[call.name]
        if "kernelbench" not in spec.languages:  # it acts on kernel source
            source, name = args.get("source"), str(args.get("file") or "kernel.cu")
            if not isinstance(source, str) or not source.strip():
                return f"{call.name} needs a non-empty 'source'"
            arch = str(args.get("arch") or "sm_90")
            return make_request(call.name, {name: source}, archs=[arch], no_cache=self.no_cache)
        problem = self.problems.get(str(args.get("problem")))  # it acts on a problem
        if problem is None:
            return f"unknown problem {args.get('problem')!r}; known: {', '.join(self.problems)}"
        submission = args.get("submission")
        if not isinstance(submission, str):
            return f"{call.name} needs the ModelNew source in 'submission'"
        options = {"time_budget_s": self.bench_budget_s} if call.name == "bench" else {}
        return judge_request(call.name, {REFERENCE_FILE: problem["reference"]}, submission,
                             no_cache=self.no_cache, **options)

    def run(self, call: ToolCall) -> ToolOutput:
        started = time.monotonic()
        request = self.request(call)
        if isinstance(request, str):
            return ToolOutput(f"BAD_CALL: {request}", "BAD_CALL", time.monotonic() - started)
        result = self.client.run(request)
        status = pb.Status.Name(result.status)
        text = f"{status}: {result.summary}"[:MAX_OUTPUT_CHARS]
        return ToolOutput(text, status, time.monotonic() - started)
