"""What every RL framework adapter shares: a problem bound to a trajectory, one tool call by
name and arguments, and the reward of a submission — over `perfbox.client` only.

The adapters (verl, TRL, OpenRLHF, SkyRL, MCP) differ only in the shape their framework wants;
the calls, the model-facing text and the reward are the same everywhere because they are made
here. The model-facing text is the rollout worker's (`TaskTools.model_text`): the status and
the tool's summary first, so a framework that cuts tool responses to a few hundred characters
(verl: 256 by default) keeps what matters; the budget here is in characters because frameworks
cut in characters.

Nothing here trusts the model: arguments are checked against the service's own schemas
(ListTools), a problem-bound tool runs only against the problem the *dataset row* bound (the
model passes only its submission), and rewards come from `perfbox.reward`, which refuses what
check and bench flag.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format

from perfbox import reward as rewards
from perfbox.api.v1 import tools_pb2 as pb
from perfbox.client import ToolClient, server_retry_delay_s
from perfbox.inference.task_tools import Binding, TaskTools, schemas_of
from perfbox.inference.tasks import KERNELBENCH_SUBMISSION, acts_on_problem, problem_layout
from perfbox.inference.tool_call_parser import ToolCall

TARGET_ENV = "PERFBOX_TARGET"  # the tool service's host:port when an adapter is built bare
TOKEN_ENV = "PERFBOX_TOKEN"
DEFAULT_TARGET = "127.0.0.1:50051"
# verl cuts a tool response to 256 characters unless configured; the summary comes first, the
# rest (compiler diagnostics) fits in what a framework allows
DEFAULT_OUTPUT_CHARS = 2000
DEFAULT_TIME_BUDGET_S = 5.0  # bench's measuring time per reward


# Chat-template control tokens and tool-call tags, in a tool's output: a submission can print
# them, and the frameworks tokenise tool responses with special tokens parsed (HF tokenizers do
# by default), so a printed "<|im_end|>\n<|im_start|>assistant" would become real turn
# boundaries in the training sequence. The families: <|...|> (ChatML, Llama 3, Phi), DeepSeek's
# fullwidth <｜...｜>, Mistral's [INST]/[TOOL_CALLS]-style upper-case brackets, and the named
# tags of Llama 2, Gemma, Qwen3/GLM thinking, GLM and FunctionGemma calls, Hermes calls. A
# zero-width space after the opening bracket keeps the text readable and matches none; a
# tokenizer's own extra tokens can be added (Toolbox(special_tokens=...)).
_TAGS = (r"s|eos|bos|pad|unk|think|(?:start|end)_of_turn|tool_(?:call|calls|response|"
         r"responses|output|outputs|result|results)|arg_(?:key|value)|"
         r"(?:start|end)_function_(?:call|response|declaration)|function_calls?")
_MARKERS = re.compile(r"<(?=\|[^<>|\s]{1,64}\|>|\uff5c[^<>\s]{1,64}\uff5c>|/?(?:" + _TAGS +
                      r")>)|\[(?=/?[A-Z][A-Z_]{1,40}\])")


def neutralise_markers(text: str, extra: Sequence[str] = ()) -> str:
    """The text with every control-token look-alike broken (see _MARKERS), and every one of
    `extra` (a tokenizer's special tokens)."""
    text = _MARKERS.sub(lambda m: m.group(0) + "\u200b", text)
    for token in extra:
        if len(token) > 1:
            text = text.replace(token, token[0] + "\u200b" + token[1:])
    return text


def _neutralised(value: Any, extra: Sequence[str]) -> Any:
    if isinstance(value, str):
        return neutralise_markers(value, extra)
    if isinstance(value, list):
        return [_neutralised(v, extra) for v in value]
    if isinstance(value, dict):
        return {k: _neutralised(v, extra) for k, v in value.items()}
    return value


def default_target() -> str:
    return os.environ.get(TARGET_ENV) or DEFAULT_TARGET


@dataclass(frozen=True)
class Problem:
    """What a trajectory's check/bench/profile/sanitize calls act on, from the dataset row:
    a KernelBench `reference` (its Model), or a GPU MODE task's `files`."""

    reference: str = ""  # KernelBench reference.py source
    files: Mapping[str, str] = field(default_factory=dict)  # GPU MODE task files by name
    name: str = ""  # for logs and metrics only

    @classmethod
    def of(cls, data: Any) -> Problem:
        """From what a dataset row carries: a Problem, a dict with `reference` or `files`
        (optionally under a `problem` key, optionally as JSON text), or the reference source
        itself. Raises ValueError saying what to give."""
        if isinstance(data, Problem):
            return data
        if isinstance(data, str):
            text = data.strip()
            if text.startswith("{"):
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ValueError(f"problem: not valid JSON ({e})") from None
            else:
                data = {"reference": data}
        if not isinstance(data, Mapping):
            raise ValueError("problem: give the KernelBench reference source, or a dict with "
                             "'reference' (source) or 'files' ({name: content}, a GPU MODE task)")
        if "problem" in data and not ({"reference", "files"} & set(data)):
            return cls.of(data["problem"])
        reference, files = data.get("reference") or "", data.get("files") or {}
        if not isinstance(reference, str) or not isinstance(files, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ValueError("problem: 'reference' must be source text and 'files' a "
                             "{name: content} map of strings")
        if bool(reference.strip()) == bool(files):
            raise ValueError("problem: give exactly one of 'reference' (a KernelBench "
                             "reference source) or 'files' (a GPU MODE task's files)")
        return cls(reference=reference, files=dict(files), name=str(data.get("name") or ""))

    def layout(self) -> tuple[dict[str, str], str]:
        """(the files the tools run against, the name the submission takes beside them)."""
        return problem_layout(self.reference, dict(self.files))

    @property
    def submission_file(self) -> str:
        return self.layout()[1]

    def to_json(self) -> dict[str, Any]:
        """The row form `Problem.of` reads back (dataset columns, tools_kwargs)."""
        out: dict[str, Any] = {"files": dict(self.files)} if self.files else {
            "reference": self.reference}
        return {**out, "name": self.name} if self.name else out


@dataclass
class CallOutcome:
    """One tool call's outcome, in every form an adapter hands back."""

    text: str  # what the model reads: "STATUS: summary", then diagnostics, within the budget
    status: str  # the tool's status name, or NOT_ALLOWED / BAD_CALL / TOOL_ERROR
    result: pb.ToolResult | None = None  # the full report (None when the call did not run)

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    def judged(self, arguments: Mapping[str, Any]) -> str | None:
        """The submission this call put up for judging: a non-blank `submission` of a call
        that was not refused (a refused call's arguments are not the model's kernel)."""
        submission = arguments.get("submission")
        if self.status == "BAD_CALL" or not isinstance(submission, str) or not submission.strip():
            return None
        return submission

    def structured(self, special_tokens: Sequence[str] = ()) -> dict[str, Any]:
        """The report as JSON-ready data (proto field names), for structured results; its
        text (stdout, stderr, summaries) with control tokens broken, like `text`."""
        if self.result is None:
            return {"status": self.status, "summary": self.text}
        return _neutralised(json_format.MessageToDict(self.result,
                                                      preserving_proto_field_name=True),
                            special_tokens)


def _chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def _text(ids: list[int]) -> str:
    return "".join(map(chr, ids))


class Toolbox:
    """A tool service seen as function calls. Thread-safe; one per process is enough (the
    gRPC channel is shared), and the async methods run the blocking calls on threads."""

    def __init__(self, target: str | None = None, *, token: str | None = None,
                 client: ToolClient | None = None, output_chars: int = DEFAULT_OUTPUT_CHARS,
                 time_budget_s: float = DEFAULT_TIME_BUDGET_S, timeout_s: float = 600.0,
                 tools: Sequence[str] | None = None, require_custom_kernel: bool = False,
                 special_tokens: Sequence[str] = ()) -> None:
        self.target = target or default_target()
        self.client = client or ToolClient(self.target, timeout_s=timeout_s,
                                           token=token or os.environ.get(TOKEN_ENV) or None)
        self.output_chars = output_chars
        self.time_budget_s = time_budget_s
        # rewards: a ModelNew that only calls PyTorch is flagged (no reward) when the task
        # demands a custom kernel; off by default, as in the rollout worker's RunTasks
        self.require_custom_kernel = require_custom_kernel
        self.special_tokens = tuple(special_tokens)  # a tokenizer's, broken in outputs too
        self._only = list(tools) if tools else None
        self._calls = TaskTools(self.client, _chars, _text)
        self._schemas: dict[str, dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.client.close()

    def schemas(self) -> dict[str, dict[str, Any]]:
        """The tools' OpenAI function schemas by name, from the service (ListTools, once)."""
        with self._lock:
            if self._schemas is None:
                found = schemas_of(self.client)
                unknown = [t for t in self._only or () if t not in found]
                if unknown:
                    raise ValueError(f"tools: unknown {', '.join(map(repr, unknown))}; the tool "
                                     f"service at {self.target} has {', '.join(found)}")
                self._schemas = {k: v for k, v in found.items()
                                 if self._only is None or k in self._only}
            return dict(self._schemas)

    def call(self, name: str, arguments: Mapping[str, Any] | str,
             problem: Problem | None = None, scope: str = "") -> CallOutcome:
        """Runs one call as the model made it; never raises for what the model got wrong (an
        unknown tool, bad arguments, text that is not UTF-8, no problem bound): those come
        back as text it can act on. `scope` groups a trajectory's calls (for cancellation and
        logs)."""
        outcome = self._call(name, arguments, problem, scope)
        outcome.text = neutralise_markers(outcome.text, self.special_tokens)
        return outcome

    def _call(self, name: Any, arguments: Any, problem: Problem | None, scope: str
              ) -> CallOutcome:
        if not isinstance(name, str):
            return CallOutcome("BAD_CALL: the tool name must be a string", "BAD_CALL")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except (ValueError, RecursionError) as e:
                return CallOutcome(f"BAD_CALL: the arguments are not JSON ({e})"[:300],
                                   "BAD_CALL")
        if not isinstance(arguments, Mapping):
            return CallOutcome("BAD_CALL: the arguments must be a JSON object", "BAD_CALL")
        schemas = self.schemas()
        schema = schemas.get(name)
        if schema is not None and problem is None and acts_on_problem(schema):
            return CallOutcome(f"BAD_CALL: {name} runs against the task's problem, and this "
                               "trajectory has none bound (give the row a reference)", "BAD_CALL")
        files, submission_file = problem.layout() if problem else ({}, KERNELBENCH_SUBMISSION)
        binding = Binding(scope=scope or f"call-{next(self._ids)}", schemas=schemas,
                          files=files, submission_file=submission_file,
                          output_tokens=self.output_chars)
        try:
            call = ToolCall(name=name, arguments=dict(arguments), raw="")
            request = self._calls.request(call, binding)
            if isinstance(request, tuple):
                status, why = request
                return CallOutcome(self._calls.fit([f"{status}: {why}"], self.output_chars),
                                   status)
            if name == "bench" and not request.bench.time_budget_s:
                request.bench.time_budget_s = self.time_budget_s
            request.request_id = f"{binding.scope}#{next(self._ids)}"
        except (UnicodeError, ValueError, TypeError) as e:  # e.g. a lone surrogate in a source
            return CallOutcome(f"BAD_CALL: the arguments cannot be sent: {e}"[:300], "BAD_CALL")
        try:
            result = self.client.run(request)
        except grpc.RpcError as e:
            return _refusal(e)
        return CallOutcome(self._calls.model_text(result, self.output_chars),
                           pb.Status.Name(result.status), result)

    async def acall(self, name: str, arguments: Mapping[str, Any] | str,
                    problem: Problem | None = None, scope: str = "") -> CallOutcome:
        return await asyncio.to_thread(self.call, name, arguments, problem, scope)

    def score(self, problem: Problem, submission: str | None, how: str | bool = True,
              turn: int = 1) -> rewards.Reward:
        """The reward of one submission: check, then bench when check passed."""
        return self.score_many([(problem, submission)], how, [turn])[0]

    def score_many(self, items: Sequence[tuple[Problem, str | None]], how: str | bool = True,
                   turns: Sequence[int] | None = None) -> list[rewards.Reward]:
        """Rewards for many submissions, with two batched round trips (every check, then
        every bench of a passing one) rather than two per submission. A missing submission
        (None or blank: the completion held no kernel) scores as a failed check."""
        checks = {}
        for k, (p, s) in enumerate(items):
            request = self._request("check", p, s) if isinstance(s, str) and s.strip() else None
            if request is not None:
                checks[f"check-{k}"] = request
        checked = self._run_all(checks)
        benches = {f"bench-{k}": self._request("bench", items[k][0], str(items[k][1]))
                   for k in range(len(items)) if _passed(checked.get(f"check-{k}"))}
        benched = self._run_all(benches)
        out = []
        for k in range(len(items)):
            check = checked.get(f"check-{k}") or _no_kernel()
            out.append(rewards.score(check, benched.get(f"bench-{k}"), how,
                                     turns[k] if turns else 1))
        return out

    async def ascore_many(self, items: Sequence[tuple[Problem, str | None]],
                          how: str | bool = True) -> list[rewards.Reward]:
        return await asyncio.to_thread(self.score_many, items, how)

    def _request(self, tool: str, problem: Problem, submission: str) -> pb.ToolRequest | None:
        """The request, or None when the submission cannot be sent (not UTF-8 text): it
        then scores as no kernel."""
        files, submission_file = problem.layout()
        options: dict[str, Any] = {"time_budget_s": self.time_budget_s} if tool == "bench" else {
            "require_custom_kernel": self.require_custom_kernel}
        try:
            return rewards.judge_request(tool, files, submission, submission_file, **options)
        except (UnicodeError, ValueError):
            return None

    def _run_all(self, requests: dict[str, pb.ToolRequest]) -> dict[str, pb.ToolResult]:
        if not requests:
            return {}
        prefix = f"score-{next(self._ids)}-"
        for rid, request in requests.items():
            request.request_id = prefix + rid
        return {r.request_id.removeprefix(prefix): r
                for r in self.client.run_batch(requests.values())}


def _refusal(error: grpc.RpcError) -> CallOutcome:
    """A call the service refused: the model's fault (bad file name, arch, size) as BAD_CALL
    with the service's reason, anything else as the service failing."""
    code, details = error.code(), (error.details() or "")[:300]
    busy = code == grpc.StatusCode.RESOURCE_EXHAUSTED and server_retry_delay_s(error) is not None
    if not busy and code in (grpc.StatusCode.INVALID_ARGUMENT,
                             grpc.StatusCode.RESOURCE_EXHAUSTED):
        return CallOutcome(f"BAD_CALL: {details}", "BAD_CALL")
    return CallOutcome(f"TOOL_ERROR: the tool service failed ({code.name}: {details})",
                       "TOOL_ERROR")


_shared: dict[tuple[str, int, bool], Toolbox] = {}
_shared_lock = threading.Lock()


def shared_toolbox(target: str | None = None, output_chars: int = DEFAULT_OUTPUT_CHARS,
                   require_custom_kernel: bool = False) -> Toolbox:
    """One Toolbox (one channel) per service, output budget and reward strictness in this
    process: for adapters their framework constructs with no arguments or a plain config."""
    key = (target or default_target(), output_chars, require_custom_kernel)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Toolbox(key[0], output_chars=output_chars,
                                   require_custom_kernel=require_custom_kernel)
        return _shared[key]


def _passed(result: pb.ToolResult | None) -> bool:
    return result is not None and result.status == pb.OK and result.check.passed


def _no_kernel() -> pb.ToolResult:
    return pb.ToolResult(status=pb.REJECTED,
                         summary="no kernel: the completion neither passed a submission to a "
                                 "tool nor wrote a Python block defining ModelNew")
