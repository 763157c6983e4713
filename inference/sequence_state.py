"""A trajectory's state in the step-driven rollout loop (perfbox.inference.rollout), and the
batch of one caller it belongs to: plain data the driver mutates, apart from the driver so
that its fields and their units read in one place."""

from __future__ import annotations

import concurrent.futures as cf
import enum
from dataclasses import dataclass, field
from typing import Any

from perfbox.inference.rollout_types import (CallRecord, Mode, OnEvent, RolloutStats, TaskSample,
                                             ToolOutput, TrajectoryResult)
from perfbox.inference.tool_call_parser import ToolCall, ToolCallParser
from perfbox.inference.workload import Trajectory


class State(enum.IntEnum):
    """A sequence's lifecycle; ordered: DONE is last."""

    NEEDS_SLOT = 0  # has tokens to prefill but no KV slot
    PREFILL = 1  # in a slot, prefilling pending tokens
    DECODE = 2  # generating (or replaying) the assistant turn
    WAITING = 3  # its tool call runs
    DONE = 4


@dataclass
class Seq:
    """One trajectory in the driver: its KV, its turn, what it produced so far."""

    traj: Trajectory
    state: State = State.NEEDS_SLOT
    slot: int | None = None
    context: list[int] = field(default_factory=list)  # tokens that belong in KV, in order
    computed: int = 0  # prefix of context already in the slot's KV
    ever_computed: int = 0  # longest prefix ever held in KV (for re-prefill accounting)
    text: str = ""  # the conversation text (what a resubmitting client re-sends)
    turn: int = 0
    forced: list[int] = field(default_factory=list)
    forced_pos: int = 0
    next_token: int | None = None
    turn_tokens: int = 0
    parser: ToolCallParser = field(default_factory=ToolCallParser)
    decoder: Any = None  # incremental UTF-8 decoder for the streamed pieces
    pending_call: ToolCall | None = None
    future: cf.Future[ToolOutput] | None = None
    call_closed_at: float = 0.0
    speculative_hit: bool = False
    turn_started_at: float = 0.0
    started_at: float = 0.0
    result: TrajectoryResult | None = None
    tokens_out: list[int] = field(default_factory=list)
    prefill_tokens: int = 0
    reprefill_tokens: int = 0
    forked_tokens: int = 0
    prompt_len: int = 0
    seed: int = 0
    turn_generation_s: list[float] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    batch: "Batch | None" = None
    next_logprob: float = 0.0  # of next_token, from the pass that drew it
    resume: bool = False  # preempted mid-turn: after its re-prefill, next_token still stands
    admitted: int = 0  # admission order (preemption takes the latest admitted first)
    turn_text: str = ""  # what the model wrote this turn (stop strings)
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    @property
    def task(self) -> TaskSample | None:
        return self.traj.task

    @property
    def public_id(self) -> str:
        return self.traj.task.public_id if self.traj.task is not None else self.traj.id


@dataclass(eq=False)
class Batch:
    """One caller's trajectories in the driver."""

    seqs: list[Seq]
    on_event: OnEvent
    started_at: float
    mode: Mode
    done: cf.Future[RolloutStats] = field(default_factory=cf.Future)
    # the driver's counters when the batch joined (its figures are the differences: another
    # caller's work is not this one's)
    base: dict[str, float] = field(default_factory=dict)
    launched: int = 0  # speculative launches of its trajectories
    wasted_tool_s: float = 0.0  # tool seconds of its launches nobody claimed


class BatchHandle:
    """A submitted batch: wait for it (result) or stop it (Rollout.cancel_batch)."""

    def __init__(self, batch: Batch) -> None:
        self._batch = batch

    def result(self, timeout: float | None = None) -> RolloutStats:
        return self._batch.done.result(timeout)

    @property
    def future(self) -> cf.Future[RolloutStats]:
        return self._batch.done
