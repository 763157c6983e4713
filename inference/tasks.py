"""A training job's tasks: what the rollout worker is asked to generate, checked before any of
it runs.

A task is a conversation (or prompt token ids), the problem its tools act on, the tools the
model may call, sampling settings and a group size. It arrives as a `perfbox.v1.Task` (RunTasks)
or as a JSON line (`perfbox rollout --tasks`); both become a `TaskSpec`, and `problems()` says
what is wrong with one in words that name the task and the field, so a training job can fix
its data rather than guess.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

from perfbox.api.v1 import rollout_pb2 as rpb

ROLES = ("system", "user", "assistant", "tool")
REFERENCE_FILE = "reference.py"
KERNELBENCH_SUBMISSION = "new.py"
GPU_MODE_SUBMISSION = "submission.py"
GPU_MODE_NEEDS = ("reference.py", "task.yml")
MAX_GROUP_SIZE = 64
MAX_TURNS = 64
MAX_NEW_TOKENS = 8192
MAX_STOPS = 16
MAX_TOOL_OUTPUT_TOKENS = 4096
MAX_REFERENCE_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_MAX_TURNS = 8
DEFAULT_TOOL_OUTPUT_TOKENS = 384


@dataclass(frozen=True)
class SamplingSpec:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: all tokens
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # per assistant turn
    max_total_tokens: int = 0  # response tokens in all; 0: what the context allows
    max_turns: int = DEFAULT_MAX_TURNS
    stop: tuple[str, ...] = ()  # the trajectory ends when the model writes one
    seed: int | None = None  # None: derived from the task id


@dataclass(frozen=True)
class TaskSpec:
    id: str
    messages: tuple[tuple[str, str], ...] = ()  # (role, content)
    prompt_ids: tuple[int, ...] = ()  # instead of messages: the prompt already tokenised
    reference: str = ""  # the KernelBench reference source the tools act on
    problem_name: str = ""
    problem_files: tuple[tuple[str, str], ...] = ()  # or a GPU MODE task's files (name, text)
    tools: tuple[str, ...] = ()
    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    group_size: int = 1
    reward: str = ""  # "": no reward; else a perfbox.reward preset name
    tool_output_tokens: int = DEFAULT_TOOL_OUTPUT_TOKENS  # per call, put back in the context

    def seed(self) -> int:
        if self.sampling.seed is not None:
            return self.sampling.seed
        return zlib.crc32(self.id.encode())

    def chat(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def problem(self) -> tuple[dict[str, str], str]:
        return problem_layout(self.reference, dict(self.problem_files))

    @property
    def has_problem(self) -> bool:
        return bool(self.reference.strip() or self.problem_files)


def problem_layout(reference: str, files: dict[str, str]) -> tuple[dict[str, str], str]:
    """(the problem's files, the name the submission takes beside them): a KernelBench
    reference and new.py, or a GPU MODE task's files and submission.py."""
    if files:
        return dict(files), GPU_MODE_SUBMISSION
    return {REFERENCE_FILE: reference}, KERNELBENCH_SUBMISSION


def from_proto(task: rpb.Task) -> TaskSpec:
    s = task.sampling
    sampling = SamplingSpec(
        temperature=float(s.temperature), top_p=float(s.top_p) if s.HasField("top_p") else 1.0,
        top_k=int(s.top_k), max_new_tokens=int(s.max_new_tokens or DEFAULT_MAX_NEW_TOKENS),
        max_total_tokens=int(s.max_total_tokens), max_turns=int(s.max_turns or
                                                                DEFAULT_MAX_TURNS),
        stop=tuple(s.stop), seed=int(s.seed) if s.HasField("seed") else None)
    return TaskSpec(
        id=task.id, messages=tuple((m.role, m.content) for m in task.messages),
        prompt_ids=tuple(task.prompt_ids), reference=task.problem.reference,
        problem_name=task.problem.name,
        problem_files=tuple(sorted(task.problem.files.items())), tools=tuple(task.tools),
        sampling=sampling,
        group_size=max(1, task.group_size), reward=task.reward,
        tool_output_tokens=task.tool_output_tokens or DEFAULT_TOOL_OUTPUT_TOKENS)


class TaskFormatError(ValueError):
    """A task line is not the JSON shape `perfbox rollout --tasks` reads."""


def _expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__
                                                                          for k in kind)
        raise TaskFormatError(f"{where} must be {names}, got {type(value).__name__}")
    return value


def proto_from_json(data: Any, line: int = 0) -> rpb.Task:
    """A task line (`{"id", "messages", "problem": {"reference"}, "tools", "sampling",
    "group_size", "reward"}`; extra fields ignored) as a perfbox.v1.Task."""
    at = f"line {line}: " if line else ""
    _expect(data, dict, f"{at}a task")
    task = rpb.Task(id=str(_expect(data.get("id", ""), (str, int), f"{at}id")))
    for k, m in enumerate(_expect(data.get("messages", []), list, f"{at}messages")):
        _expect(m, dict, f"{at}messages[{k}]")
        task.messages.add(role=_expect(m.get("role", ""), str, f"{at}messages[{k}].role"),
                          content=_expect(m.get("content", ""), str,
                                          f"{at}messages[{k}].content"))
    task.prompt_ids.extend(_expect(t, int, f"{at}prompt_ids[]")
                           for t in _expect(data.get("prompt_ids", []), list, f"{at}prompt_ids"))
    problem = _expect(data.get("problem") or {}, dict, f"{at}problem")
    task.problem.reference = _expect(problem.get("reference", ""), str, f"{at}problem.reference")
    task.problem.name = str(problem.get("name", ""))
    files = _expect(problem.get("files") or {}, dict, f"{at}problem.files")
    for name, text in files.items():
        task.problem.files[name] = _expect(text, str, f"{at}problem.files[{name!r}]")
    task.tools.extend(_expect(t, str, f"{at}tools[]")
                      for t in _expect(data.get("tools", []), list, f"{at}tools"))
    _sampling_from_json(_expect(data.get("sampling") or {}, dict, f"{at}sampling"),
                        task.sampling, at)
    task.group_size = _expect(data.get("group_size", 1), int, f"{at}group_size")
    reward = data.get("reward", False)
    task.reward = "default" if reward is True else ("" if reward in (False, None) else
                                                    _expect(reward, str, f"{at}reward"))
    task.tool_output_tokens = _expect(data.get("tool_output_tokens", 0), int,
                                      f"{at}tool_output_tokens")
    return task


def _sampling_from_json(s: dict[str, Any], out: rpb.Sampling, at: str) -> None:
    number = (int, float)
    out.temperature = _expect(s.get("temperature", 0.0), number, f"{at}sampling.temperature")
    if "top_p" in s:
        out.top_p = _expect(s["top_p"], number, f"{at}sampling.top_p")
    for name in ("top_k", "max_new_tokens", "max_total_tokens", "max_turns"):
        value = _expect(s.get(name, 0), int, f"{at}sampling.{name}")
        if value < 0:
            raise TaskFormatError(f"{at}sampling.{name} must be 0 or more")
        setattr(out, name, value)
    out.stop.extend(_expect(x, str, f"{at}sampling.stop[]")
                    for x in _expect(s.get("stop", []), list, f"{at}sampling.stop"))
    if s.get("seed") is not None:
        seed = _expect(s["seed"], int, f"{at}sampling.seed")
        if seed < 0:
            raise TaskFormatError(f"{at}sampling.seed must be 0 or more")
        out.seed = seed


def acts_on_problem(schema: dict[str, Any]) -> bool:
    """A tool whose model-facing arguments take a `submission` (check, bench, profile,
    sanitize) runs it against the trajectory's bound problem."""
    properties = schema.get("function", {}).get("parameters", {}).get("properties", {})
    return "submission" in properties


def problems(task: TaskSpec, known_tools: dict[str, dict[str, Any]],
             reward_presets: tuple[str, ...]) -> list[str]:
    """What is wrong with a task (empty: it can run), each naming the field. known_tools:
    the tool service's function schemas by name (ListTools)."""
    out: list[str] = []
    s = task.sampling
    if not task.id:
        out.append("id: every task needs a non-empty id")
    if not task.messages and not task.prompt_ids:
        out.append("messages: give the conversation (or prompt_ids)")
    if task.messages and task.prompt_ids:
        out.append("prompt_ids: give messages or prompt_ids, not both")
    for k, (role, content) in enumerate(task.messages):
        if role not in ROLES:
            out.append(f"messages[{k}].role: {role!r} is not one of {', '.join(ROLES)}")
        if len(content.encode()) > MAX_MESSAGE_BYTES:
            out.append(f"messages[{k}].content: more than {MAX_MESSAGE_BYTES} bytes")
    if task.messages and task.messages[-1][0] == "assistant":
        out.append("messages: the last message is the assistant's; end with the user's")
    unknown = [t for t in task.tools if t not in known_tools]
    if unknown:
        out.append(f"tools: unknown {', '.join(map(repr, unknown))}; the tool service has "
                   f"{', '.join(known_tools)}")
    if len(set(task.tools)) != len(task.tools):
        out.append("tools: a tool is listed twice")
    bound = [t for t in task.tools if t in known_tools and acts_on_problem(known_tools[t])]
    if bound and not task.has_problem:
        out.append(f"problem.reference: {', '.join(bound)} act on the problem; give its "
                   "KernelBench reference source (or problem.files: a GPU MODE task)")
    out += _problem_problems(task)
    if task.reward:
        if task.reward != "default" and task.reward not in reward_presets:
            out.append(f"reward: unknown preset {task.reward!r}; presets: default, "
                       f"{', '.join(reward_presets)}")
        if not task.has_problem:
            out.append("reward: the reward runs check and bench against the problem; give "
                       "problem.reference (or problem.files)")
    out += _sampling_problems(s)
    if not 1 <= task.group_size <= MAX_GROUP_SIZE:
        out.append(f"group_size: 1 to {MAX_GROUP_SIZE}")
    if task.tool_output_tokens > MAX_TOOL_OUTPUT_TOKENS:
        out.append(f"tool_output_tokens: at most {MAX_TOOL_OUTPUT_TOKENS}")
    return out


def _problem_problems(task: TaskSpec) -> list[str]:
    out = []
    size = len(task.reference.encode()) + sum(len(t.encode()) for _, t in task.problem_files)
    if size > MAX_REFERENCE_BYTES:
        out.append(f"problem: more than {MAX_REFERENCE_BYTES} bytes")
    if task.reference.strip() and task.problem_files:
        out.append("problem.files: give problem.reference (KernelBench) or problem.files "
                   "(GPU MODE), not both")
    names = [n for n, _ in task.problem_files]
    for name in names:
        if not name or "/" in name or name.startswith(".") or name == GPU_MODE_SUBMISSION:
            out.append(f"problem.files: {name!r} is not a plain file name (nor "
                       f"{GPU_MODE_SUBMISSION}, which is the model's)")
    missing = [n for n in GPU_MODE_NEEDS if names and n not in names]
    if missing:
        out.append(f"problem.files: a GPU MODE task needs {', '.join(missing)}")
    return out


def _sampling_problems(s: SamplingSpec) -> list[str]:
    out = []
    if not (math.isfinite(s.temperature) and 0.0 <= s.temperature <= 10.0):
        out.append("sampling.temperature: 0 (greedy) to 10")
    if not (math.isfinite(s.top_p) and 0.0 < s.top_p <= 1.0):
        out.append("sampling.top_p: above 0, at most 1")
    if s.top_k < 0:
        out.append("sampling.top_k: 0 (all tokens) or more")
    if not 1 <= s.max_new_tokens <= MAX_NEW_TOKENS:
        out.append(f"sampling.max_new_tokens: 1 to {MAX_NEW_TOKENS}")
    if not 1 <= s.max_turns <= MAX_TURNS:
        out.append(f"sampling.max_turns: 1 to {MAX_TURNS}")
    if len(s.stop) > MAX_STOPS:
        out.append(f"sampling.stop: at most {MAX_STOPS} strings")
    if any(not x for x in s.stop):
        out.append("sampling.stop: an empty stop string would stop at once")
    return out


def batch_problems(tasks: list[TaskSpec]) -> list[str]:
    seen: set[str] = set()
    out = []
    for t in tasks:
        if t.id in seen:
            out.append(f"task {t.id!r}: id: used twice in one request")
        seen.add(t.id)
    return out
