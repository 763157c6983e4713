"""A multi-turn episode over the model's raw text, for frameworks whose environments receive
what the model wrote and answer with text (OpenRLHF's agents, SkyRL's text envs).

Each action's Hermes `<tool_call>{"name": ..., "arguments": ...}</tool_call>` blocks are run on
the tool service against the episode's problem; the episode ends when an action makes no call
(the model has answered) or after `max_turns` actions. The reward, given once at the end, is
perfbox's reward of the last kernel: the last submission the model passed to a tool, else the
last Python block defining ModelNew it wrote. Tool output never counts as the model's kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perfbox import reward as rewards
from perfbox.inference.tool_call_parser import call_bodies, parse_call
from perfbox.integrations.toolbox import CallOutcome, Problem, Toolbox

MAX_CALLS_PER_ACTION = 4  # more calls in one action come back as BAD_CALL, unrun


@dataclass
class StepOutcome:
    """What one action led to."""

    observation: str  # the tool responses, Hermes-wrapped; "" when the episode ended
    done: bool
    reward: float  # 0 until the episode ends; then the kernel's reward
    calls: list[CallOutcome] = field(default_factory=list)
    breakdown: dict[str, Any] = field(default_factory=dict)  # perfbox.reward.Reward, at the end


class TextEpisode:
    """One trajectory's environment state. Not thread-safe: one per trajectory."""

    def __init__(self, toolbox: Toolbox, problem: Problem | None, max_turns: int = 4,
                 how: str | bool = True) -> None:
        if max_turns < 1:
            raise ValueError("max_turns must be 1 or more")
        self.toolbox, self.problem, self.max_turns, self.how = toolbox, problem, max_turns, how
        self.turns = 0
        self.submission: str | None = None
        self.submitted_turn = 0
        self.written: str | None = None  # last ModelNew block the model wrote
        self.statuses: list[str] = []

    def step(self, action: str) -> StepOutcome:
        self.turns += 1
        self.written = rewards.last_model_block(action) or self.written
        bodies = call_bodies(action)
        if not bodies or self.turns >= self.max_turns:
            return self._end()
        outcomes = [self._run(body) if k < MAX_CALLS_PER_ACTION else CallOutcome(
            f"BAD_CALL: at most {MAX_CALLS_PER_ACTION} calls per turn", "BAD_CALL")
            for k, body in enumerate(bodies)]
        return StepOutcome(observation="\n".join(f"<tool_response>\n{o.text}\n</tool_response>"
                                                 for o in outcomes),
                           done=False, reward=0.0, calls=outcomes)

    def _run(self, body: str) -> CallOutcome:
        call = parse_call(body)
        if call is None:
            outcome = CallOutcome('BAD_CALL: a tool call is a JSON object {"name": ..., '
                                  '"arguments": {...}} between <tool_call> tags', "BAD_CALL")
        else:
            outcome = self.toolbox.call(call.name, call.arguments, self.problem)
            submission = outcome.judged(call.arguments)
            if submission is not None:
                self.submission, self.submitted_turn = submission, self.turns
        self.statuses.append(outcome.status)
        return outcome

    def kernel(self) -> tuple[str | None, int]:
        """The kernel the episode is rewarded for, and the turn it came in."""
        if self.submission is not None:
            return self.submission, self.submitted_turn
        return self.written, self.turns

    def _end(self) -> StepOutcome:
        source, turn = self.kernel()
        if self.problem is None:
            return StepOutcome("", True, 0.0, breakdown={"refused": ["no problem bound"]})
        scored = self.toolbox.score_many([(self.problem, source)], self.how, [max(1, turn)])[0]
        return StepOutcome("", True, scored.total, breakdown=scored.to_json())
