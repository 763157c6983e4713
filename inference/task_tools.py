"""A task's tool calls: checked against the tools' schemas, bound to the task's problem, run on
the tool service through perfbox.client, and put back into the context within a token budget.

What the model reads back (`model_text`), in order, each part whole while it fits the task's
`tool_output_tokens` and cut with a marker where it stops fitting (later parts dropped):
1. `STATUS: summary` — the tool's model-facing summary, always first (frameworks that cut a
   tool response to a few hundred characters keep the part that matters);
2. the error line, when the summary does not already say it;
3. stderr, then stdout (compiler diagnostics, the submission's prints), head first.
A call that cannot run (a tool the task does not allow, arguments that do not fit the schema,
the tool service failing) comes back as text the model can act on — `NOT_ALLOWED: ...`,
`BAD_CALL: ...`, `TOOL_ERROR: ...` — and never ends the trajectory by itself.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient, make_request
from perfbox.function_schema import check_arguments
from perfbox.inference.tasks import acts_on_problem
from perfbox.inference.tool_call_parser import ToolCall
from perfbox.inference.rollout_types import ToolOutput

REFERENCE_FILE = "reference.py"
TRUNCATED = "\n[... truncated to fit the tool output budget]"


@dataclass(frozen=True)
class Binding:
    """What one task's calls act on: shared by the task's samples."""

    scope: str  # the task's key in the worker (request and task id): tool cache scope
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)  # allowed tools
    # the problem's files the problem-bound tools run against (a KernelBench reference.py, or
    # a GPU MODE task's files) and the name the model's submission takes beside them
    files: dict[str, str] = field(default_factory=dict)
    submission_file: str = "new.py"
    output_tokens: int = 384  # budget of a call's output in the context


class TaskTools:
    """Runs a task's calls; thread-safe (tool calls run on the rollout's tool threads)."""

    def __init__(self, client: ToolClient, tokenize: Callable[[str], list[int]],
                 detokenize: Callable[[list[int]], str]) -> None:
        self.client, self.tokenize, self.detokenize = client, tokenize, detokenize
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._running: dict[str, set[str]] = {}  # binding scope -> request ids on the service

    def cancel(self, scopes: set[str]) -> int:
        """Cancels the tool service jobs these tasks' calls are waiting on (their caller went
        away: the jobs would only hold the service's workers). Returns how many."""
        with self._lock:
            ids = [rid for scope in scopes for rid in self._running.pop(scope, ())]
        for rid in ids:
            try:
                self.client.cancel(request_id=rid)
            except Exception:  # gone already, or the service is down: nothing to stop
                pass
        return len(ids)

    def request(self, call: ToolCall, binding: Binding) -> pb.ToolRequest | tuple[str, str]:
        """The ToolRequest for the call, or (status, why) when it cannot be made."""
        schema = binding.schemas.get(call.name)
        if schema is None:
            allowed = ", ".join(binding.schemas) or "none"
            return "NOT_ALLOWED", (f"tool {call.name!r} is not available in this task; "
                                   f"tools: {allowed}")
        wrong = check_arguments(schema, call.arguments)
        if wrong:
            return "BAD_CALL", "; ".join(wrong)
        args = call.arguments
        if acts_on_problem(schema):
            files = {**binding.files, binding.submission_file: args["submission"]}
            options = {k: v for k, v in args.items() if k != "submission"}
            if call.name == "sanitize" and "check" in options:
                options["checks"] = [options.pop("check")]
            return make_request(call.name, files, language="kernelbench",
                                reference_file=REFERENCE_FILE,
                                submission_file=binding.submission_file, **options)
        name = str(args.get("file") or "kernel.cu")
        try:
            return make_request(call.name, {name: args["source"]},
                                archs=[str(args.get("arch") or "sm_90")])
        except ValueError as e:  # a file name whose suffix names no language
            return "BAD_CALL", f"{call.name}: 'file' {name!r}: {e}"

    def run(self, call: ToolCall, binding: Binding) -> ToolOutput:
        started = time.monotonic()
        request = self.request(call, binding)
        if isinstance(request, tuple):
            status, why = request
            return ToolOutput(self.fit([f"{status}: {why}"], binding.output_tokens), status,
                              time.monotonic() - started)
        request.request_id = f"{binding.scope}#{next(self._ids)}"
        with self._lock:
            self._running.setdefault(binding.scope, set()).add(request.request_id)
        try:
            result = self.client.run(request)
        finally:
            with self._lock:
                self._running.get(binding.scope, set()).discard(request.request_id)
        status = pb.Status.Name(result.status)
        return ToolOutput(self.model_text(result, binding.output_tokens), status,
                          time.monotonic() - started)

    def model_text(self, result: pb.ToolResult, budget_tokens: int) -> str:
        status = pb.Status.Name(result.status)
        parts = [f"{status}: {result.summary}".rstrip()]
        if result.error and result.error not in result.summary:
            parts.append(f"error: {result.error}")
        for name in ("stderr", "stdout"):
            text = getattr(result, name).strip()
            if text:
                parts.append(f"{name}:\n{text}")
        return self.fit(parts, budget_tokens)

    def fit(self, parts: list[str], budget_tokens: int) -> str:
        """The parts joined by newlines, whole while they fit budget_tokens, the first that
        does not cut (with a marker) and the rest dropped."""
        out: list[str] = []
        left = budget_tokens
        marker = len(self.tokenize(TRUNCATED))
        for part in parts:
            tokens = self.tokenize(("\n" if out else "") + part)
            if len(tokens) <= left:
                out.append(part)
                left -= len(tokens)
                continue
            keep = max(0, left - marker)
            cut = self.detokenize(tokens[:keep]).lstrip("\n")
            out.append(cut + TRUNCATED)
            break
        return "\n".join(out)


def schemas_of(client: ToolClient) -> dict[str, dict[str, Any]]:
    """The tool service's function schemas by tool name (ListTools)."""
    return {t.name: json.loads(t.function_schema) for t in client.list_tools().tools
            if t.function_schema}
