"""What a rollout is asked to do and what it reports, shared by both rollout loops
(perfbox.inference.rollout on engines perfbox batches, perfbox.inference.session_rollout on
engines that batch themselves) and by everything that drives or reads them."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from perfbox.inference.tool_call_parser import ToolCall, ToolCallFormat

if TYPE_CHECKING:
    from perfbox.inference.task_tools import Binding


@dataclass
class ToolOutput:
    """What a call returned."""

    text: str  # what the model reads
    status: str  # the tool's status name, or "BAD_CALL"
    tool_s: float  # wall time of the call


class RolloutCancelled(RuntimeError):
    """cancel() was called before every trajectory finished."""


@dataclass
class TaskSample:
    """What makes a trajectory one sample of a training job's task."""

    public_id: str  # "<task id>/<sample>": what the caller sees
    prompt_ids: list[int]  # the rendered prompt's tokens
    binding: "Binding"  # the tools it may call and the problem they act on
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    max_new_tokens: int = 512  # per assistant turn
    max_total_tokens: int = 0  # response tokens in all (0: the context's room)
    max_turns: int = 8
    stop: tuple[str, ...] = ()
    put_owners: tuple[str, ...] = ()  # ToolCache Put response ids its calls may claim
    call_format: ToolCallFormat | None = None  # the tool-call parser (None: the rollout's)


RunTaskTool = Callable[[ToolCall, "Binding"], ToolOutput]
FitPut = Callable[[str, int], str]  # a Put output cut to a token budget


class Mode(str, enum.Enum):
    RESUBMIT = "resubmit"
    RESIDENT = "resident"
    SPECULATE = "resident+speculate"


@dataclass
class RolloutConfig:
    mode: Mode = Mode.RESIDENT
    forced: bool = True  # replay the recorded turns; False: greedy free generation
    max_turn_tokens: int = 256  # free generation: tokens per turn at most
    max_turns: int = 8  # free generation: turns per trajectory at most
    prefill_chunk: int = 256  # tokens of one sequence's prefill per step
    tool_workers: int = 8  # tool calls in flight at once
    draft_alpha: float | None = None  # speculate: emulated draft hit rate (None: no draft)
    seed: int = 0
    temperature: float = 0.0  # free generation: 0 greedy; above, each sample draws its own
    share_prompt: bool = True  # samples of a group fork the first one's prompt KV
    kv_budget_tokens: int = 0  # KV tokens the engine may hold in all (0: every stream full)
    admit_headroom_tokens: int = 32  # free KV a newcomer must leave for the running to grow
    record_steps: bool = False  # keep every step's (decode seqs, prefill tokens, seconds)

    def __post_init__(self) -> None:
        if self.kv_budget_tokens < 0 or self.admit_headroom_tokens < 0:
            raise ValueError("kv_budget_tokens and admit_headroom_tokens are token counts: "
                             "0 or more")


@dataclass
class CallRecord:
    """One tool call of a trajectory."""

    name: str
    status: str
    tool_s: float  # the tool's own wall time
    waited_s: float  # from the call's end tag to its output being available
    speculative_hit: bool
    arguments: dict[str, Any] = field(default_factory=dict)
    inserted: str = ""  # exactly the text put back into the context after the call


@dataclass
class TrajectoryResult:
    id: str
    wall_s: float
    generated_tokens: int
    prefill_tokens: int  # all tokens prefilled, prompts included
    reprefill_tokens: int  # tokens prefilled again that had been in KV before
    forked_tokens: int  # prompt tokens copied from a group sibling's KV instead of prefilled
    group: str  # its GRPO group ("" when none)
    turn_generation_s: list[float]  # per turn: first token to end of call (G)
    calls: list[CallRecord]
    tokens: list[int]  # the assistant tokens, all turns
    text: str  # the assistant turns and tool outputs as the model saw them
    finish_reason: str = "stop"  # stop, length, max_turns, context
    context_tokens: int = 0  # the context at the end (prompt, turns, tool outputs)
    prompt_ids: list[int] = field(default_factory=list)
    response_ids: list[int] = field(default_factory=list)  # after the prompt, in order
    response_mask: list[int] = field(default_factory=list)  # 1 sampled, 0 inserted
    logprobs: list[float] = field(default_factory=list)  # sampled tokens' log p (0 inserted)
    task: TaskSample | None = None


@dataclass
class RolloutStats:
    mode: str
    concurrency: int
    num_slots: int
    wall_s: float
    generated_tokens: int
    tokens_per_s: float
    prefill_tokens: int
    reprefill_tokens: int
    forked_tokens: int
    idle_s: float  # the engine had nothing to run: every live sequence waited for a tool
    steps: int
    decode_s: float  # engine time of steps, attributed to decode tokens by token share
    prefill_s: float
    request_overhead_s: float  # resubmit: re-tokenising and re-admitting whole conversations
    evictions: int
    spec_launched: int
    spec_hits: int
    spec_misses: int
    wasted_tool_s: float
    draft_alpha: float | None
    kv_budget_tokens: int = 0  # the KV budget the run had
    preemptions: int = 0  # running sequences whose KV was taken (recomputed later)
    cache_evictions: int = 0  # resubmit: prefix-cache entries dropped for room
    peak_kv_tokens: int = 0  # the most KV tokens held at once (engine-wide)
    # with record_steps: per forward pass (decoding sequences, prefill tokens, seconds), the
    # data a step-cost model is fitted to
    step_log: list[tuple[int, int, float]] = field(default_factory=list)
    results: list[TrajectoryResult] = field(default_factory=list)


OnEvent = Callable[[str, dict[str, Any]], None]  # (kind, data): a trajectory's live events
