"""Which kernel a trajectory is rewarded for: the last one the model submitted.

The reward runs check and bench on one candidate per trajectory. It is the last `submission`
the model passed to a tool (what it last asked to be judged), else the last Python block
defining ModelNew that the model itself wrote; never text the worker inserted (a tool's output
can echo code, and a submission's prints reach it).
"""

from __future__ import annotations

from dataclasses import dataclass

from perfbox.inference.rollout_types import TrajectoryResult
from perfbox.reward import last_model_block


@dataclass(frozen=True)
class Candidate:
    """The kernel a trajectory ends with: what its reward is computed from."""

    source: str
    turn: int  # 1-based turn it was written in (the reward's discount)


def final_candidate(result: TrajectoryResult) -> Candidate | None:
    """The last submission the model passed to a problem-bound tool, or else the last Python
    block defining ModelNew in what it wrote."""
    for k in range(len(result.calls) - 1, -1, -1):
        submission = result.calls[k].arguments.get("submission")
        if isinstance(submission, str) and submission.strip():
            return Candidate(submission, k + 1)
    block = last_model_block(_sampled_text(result))
    return Candidate(block, len(result.calls) + 1) if block is not None else None


def _sampled_text(result: TrajectoryResult) -> str:
    """The response without what the worker inserted (a tool output cannot be the kernel)."""
    text = result.text
    for call in result.calls:
        if call.inserted:
            text = text.replace(call.inserted, "\n")
    return text
