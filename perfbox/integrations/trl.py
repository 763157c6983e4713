"""TRL: perfbox as a `GRPOTrainer` environment and as a reward function.

    from perfbox.integrations.trl import perfbox_environment, perfbox_reward
    trainer = GRPOTrainer(model, train_dataset=rows,            # rows: prompt + reference
                          environment_factory=perfbox_environment("host:50051"),
                          args=GRPOConfig(...))
    # or, single-turn: reward_funcs=[perfbox_reward("host:50051")]

The environment's public methods are the tools TRL shows the model (TRL reads their type hints
and Google-style docstrings); `reset(**row)` binds the row's problem, so the model passes only
its submission and cannot choose what it is judged against; `get_reward()` scores the last
submission the model passed to check or bench (check, then bench when it passed), through
`perfbox.reward`. The reward function scores completions instead: the last submission passed
to a tool, else the last Python block defining ModelNew, all rows' checks in one batch, then
the benches of those that passed.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from perfbox import reward as rewards
from perfbox.inference.tool_call_parser import call_bodies, parse_arguments, parse_call
from perfbox.integrations.toolbox import Problem, Toolbox, neutralise_markers, shared_toolbox

PROBLEM_COLUMNS = ("problem", "reference")  # where a row's problem is read from, in order


def _tool(method: Callable[..., Any]) -> Callable[..., Any]:
    """A tool method that also takes arguments its schema does not have (`**unexpected`)
    while TRL sees only the documented ones. TRL calls a tool with the model's arguments as
    keywords and puts a TypeError's message — which quotes an unexpected name verbatim — into
    the context: the model could name an argument "<|im_end|><|im_start|>assistant...". The
    method answers a BAD_CALL with the names neutralised instead."""
    signature = inspect.signature(method)
    method.__signature__ = signature.replace(parameters=[  # type: ignore[attr-defined]
        p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD])
    method.__annotations__ = {k: v for k, v in method.__annotations__.items()
                              if k != "unexpected"}
    return method


class CallStats:
    """Counts of the calls environments made and the statuses they saw, shared by a
    factory's environments (a trainer callback reads and resets them per step)."""

    def __init__(self, keep_texts: int = 2) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()  # by tool name
        self.statuses: Counter[str] = Counter()  # by result status
        self.keep_texts = keep_texts
        self.texts: dict[str, list[str]] = {}  # by status: the first outputs' first lines

    def add(self, tool: str, status: str, text: str = "") -> None:
        with self._lock:
            self.calls[tool] += 1
            self.statuses[status] += 1
            kept = self.texts.setdefault(status, [])
            if text and len(kept) < self.keep_texts:
                kept.append(text[:300])

    def take(self) -> tuple[Counter[str], Counter[str]]:
        """The counts so far, and zero them (and the kept texts: `take_texts`)."""
        with self._lock:
            out = (self.calls, self.statuses)
            self.calls, self.statuses = Counter(), Counter()
            return out

    def take_texts(self) -> dict[str, list[str]]:
        with self._lock:
            out, self.texts = self.texts, {}
            return out


def row_problem(row: dict[str, Any]) -> Problem | None:
    """The problem a dataset row carries (a `problem` or `reference` column), or None."""
    for column in PROBLEM_COLUMNS:
        if row.get(column):
            return Problem.of(row[column])
    return None


class PerfboxEnvironment:
    """One rollout's perfbox session (TRL makes one per rollout and reuses it via `reset`).

    Built by `perfbox_environment(...)`, which binds the tool service; constructed bare it uses
    $PERFBOX_TARGET."""

    toolbox: Toolbox | None = None  # set on the subclass perfbox_environment() makes
    stats: CallStats | None = None
    how: str | bool = True  # the reward preset

    def __init__(self) -> None:
        self._problem: Problem | None = None
        self._submission: str | None = None
        self._turn = 0

    def _toolbox(self) -> Toolbox:
        return self.toolbox if self.toolbox is not None else shared_toolbox()

    def reset(self, **row: Any) -> str | None:
        """Binds the row's problem (its `problem` or `reference` column) and forgets the last
        rollout. Returns None: the prompt is the row's own."""
        self._problem = row_problem(row)
        self._submission, self._turn = None, 0
        return None

    async def _call(self, name: str, arguments: dict[str, Any],
                    unexpected: dict[str, Any]) -> str:
        self._turn += 1
        if unexpected:
            names = neutralise_markers(", ".join(repr(k)[:80] for k in unexpected))
            outcome_text, status = f"BAD_CALL: {name} has no argument {names}", "BAD_CALL"
        else:
            outcome = await self._toolbox().acall(name, arguments, self._problem)
            outcome_text, status = outcome.text, outcome.status
            self._submission = outcome.judged(arguments) or self._submission
        if self.stats is not None:
            self.stats.add(name, status, outcome_text)
        return outcome_text

    @_tool
    async def check(self, submission: str, **unexpected: Any) -> str:
        """Checks a candidate ModelNew against the task's reference Model on random inputs.

        Args:
            submission: The complete Python module defining ModelNew (the optimized model; it may load CUDA or Triton kernels).

        Returns:
            The status (OK, WRONG_ANSWER, COMPILE_ERROR, RUNTIME_ERROR...) and what the check found.
        """
        return await self._call("check", {"submission": submission}, unexpected)

    @_tool
    async def bench(self, submission: str, **unexpected: Any) -> str:
        """Times a candidate ModelNew against the task's reference Model and reports the speedup.

        Args:
            submission: The complete Python module defining ModelNew (the optimized model; it may load CUDA or Triton kernels).

        Returns:
            The status and the measured speedup over the reference, with its confidence interval.
        """
        return await self._call("bench", {"submission": submission}, unexpected)

    @_tool
    async def compile(self, source: str, file: str = "kernel.cu", arch: str = "sm_90",
                      **unexpected: Any) -> str:
        """Compiles a CUDA (.cu) or Triton (.py) kernel and reports errors, registers and spills.

        Args:
            source: The kernel source: CUDA C++ (a .cu file) or a Python module with a @triton.jit kernel (a .py file).
            file: File name; its suffix picks the language: .cu for CUDA, .py for Triton.
            arch: Target GPU architecture, such as sm_90.

        Returns:
            The status and the compiler's diagnostics and resource usage.
        """
        return await self._call("compile", {"source": source, "file": file, "arch": arch},
                                unexpected)

    def get_reward(self) -> float:
        """The reward of the last submission passed to check or bench (0 when none was)."""
        if self._problem is None or self._submission is None:
            return 0.0
        return self._toolbox().score(self._problem, self._submission, self.how,
                                     turn=max(1, self._turn)).total


TOOLS = ("check", "bench", "compile")  # the environment's tool methods


def perfbox_environment(target: str | None = None, *, toolbox: Toolbox | None = None,
                        how: str | bool = True, stats: CallStats | None = None,
                        tools: tuple[str, ...] = TOOLS) -> type[PerfboxEnvironment]:
    """An `environment_factory` for GRPOTrainer bound to a tool service (a class: TRL calls
    it with no arguments, once per concurrent rollout), offering `tools` (a subset of TOOLS:
    TRL shows the model every public method, so the others are hidden)."""
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or not tools:
        raise ValueError(f"tools: choose from {', '.join(TOOLS)} (got {', '.join(tools)})")
    box = toolbox or Toolbox(target)
    box.schemas()  # fail now, naming the service, rather than inside the first rollout
    hidden = {t: None for t in TOOLS if t not in tools}  # not a function: not a tool
    return type("PerfboxEnvironment", (PerfboxEnvironment,),
                {"toolbox": box, "how": how, "stats": stats, **hidden})


def completion_kernel(completion: str | Sequence[dict[str, Any]]) -> tuple[str | None, int]:
    """The kernel a completion ends with and the turn it came in: the last `submission` passed
    to a tool, else the last Python block defining ModelNew the model wrote."""
    messages = [{"role": "assistant", "content": completion}] if isinstance(completion, str) \
        else list(completion)
    turns = 0
    found: tuple[str | None, int] = (None, 0)
    block: str | None = None
    for message in messages:
        if message.get("role") != "assistant":
            continue
        content = message.get("content") or ""
        content = content if isinstance(content, str) else " ".join(
            part.get("text", "") for part in content if isinstance(part, dict))
        for arguments in _submitted(message, content):
            turns += 1
            if isinstance(arguments.get("submission"), str) and arguments["submission"].strip():
                found = (arguments["submission"], turns)
        block = rewards.last_model_block(content) or block
    if found[0] is not None:
        return found
    return (block, turns + 1) if block is not None else (None, 0)


def _submitted(message: dict[str, Any], content: str) -> list[dict[str, Any]]:
    """The arguments of the calls in an assistant message (structured, or Hermes text),
    parsed with the worker's bounded parser (model text can nest or size JSON to break a
    plain json.loads)."""
    out = []
    for call in message.get("tool_calls") or ():
        arguments = call.get("function", {}).get("arguments", {}) if isinstance(call, dict) \
            else None
        if isinstance(arguments, str):
            arguments = parse_arguments(arguments)
        if isinstance(arguments, dict):
            out.append(arguments)
    for body in call_bodies(content):
        parsed = parse_call(body)
        if parsed is not None:
            out.append(parsed.arguments)
    return out


def perfbox_reward(target: str | None = None, *, toolbox: Toolbox | None = None,
                   how: str | bool = True) -> Callable[..., Any]:
    """A GRPOTrainer reward function `f(prompts, completions, completion_ids, **columns)`:
    each completion's kernel checked, then benched when it passed, and scored; None for rows
    without a problem column (TRL then leaves this reward out for them)."""
    box = toolbox or Toolbox(target)

    async def perfbox_kernel_reward(prompts: list[Any], completions: list[Any],
                                    completion_ids: list[list[int]] | None = None,
                                    **columns: Any) -> list[float | None]:
        rows = [{c: v[k] for c, v in columns.items() if isinstance(v, list) and len(v) > k}
                for k in range(len(completions))]
        problems = [row_problem(row) for row in rows]
        kernels = [completion_kernel(c) for c in completions]
        scored = [k for k, p in enumerate(problems) if p is not None]
        found = await asyncio.to_thread(
            box.score_many, [(problems[k], kernels[k][0]) for k in scored], how,
            [max(1, kernels[k][1]) for k in scored])
        out: list[float | None] = [None] * len(completions)
        for k, r in zip(scored, found):
            out[k] = r.total
        return out

    return perfbox_kernel_reward
