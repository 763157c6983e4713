"""OpenRLHF: perfbox as a multi-turn agent (`--agent_func_path`).

    python -m openrlhf.cli.train_ppo_ray ... \
        --agent_func_path examples/openrlhf_agent.py --label_key problem
    # rows: the prompt (chat template applied), and `problem` as the label: JSON
    #   {"reference": source} or {"files": {...}}; $PERFBOX_TARGET names the tool service

OpenRLHF hands each step the model's text and appends the agent's feedback text verbatim to the
token stream, so the feedback carries the chat template's turn markers itself (ChatML by
default: SmolLM2, Qwen; set `PerfboxAgent.feedback_format` for another template).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import torch
from openrlhf.utils.agent import AgentInstanceBase, MultiTurnAgentExecutor

from perfbox.integrations.text_episode import TextEpisode
from perfbox.integrations.toolbox import Problem, Toolbox, shared_toolbox

MAX_TURNS_ENV = "PERFBOX_MAX_TURNS"
class PerfboxAgent(AgentInstanceBase):
    """One trajectory: the label is its problem."""

    # the tool responses as a user turn, then the assistant's next turn opened. The action's
    # tokens already end with <|im_end|> (vLLM keeps the EOS it stopped at in token_ids,
    # though not in the text), so the feedback starts after it.
    feedback_format = "\n<|im_start|>user\n{responses}<|im_end|>\n<|im_start|>assistant\n"
    toolbox: Toolbox | None = None
    max_turns = 4

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.episode: TextEpisode | None = None

    async def reset(self, states: dict, **kwargs: Any) -> dict:
        label = states.get("label")
        if not label:
            raise ValueError("PerfboxAgent: the row's label must be its problem (JSON "
                             "{'reference': ...} or the reference source); set --label_key")
        turns = int(os.environ.get(MAX_TURNS_ENV) or self.max_turns)
        self.episode = TextEpisode(self.toolbox or shared_toolbox(), Problem.of(label), turns)
        return {"observation": states["observation"]}

    async def step(self, state_dict: dict, **kwargs: Any) -> dict:
        if self.episode is None:
            raise RuntimeError("PerfboxAgent.step before reset")
        out = await asyncio.to_thread(self.episode.step, state_dict["action_text"])
        feedback = "" if out.done else self.feedback_format.format(responses=out.observation)
        return {"rewards": torch.tensor(out.reward), "scores": torch.tensor(out.reward),
                "environment_feedback": feedback, "done": out.done,
                "sampling_params": state_dict.get("sampling_params"),
                "extra_logs": {"tool_calls": torch.tensor(float(len(out.calls)))}}


class AgentExecutor(MultiTurnAgentExecutor):
    """What `--agent_func_path` loads: OpenRLHF's multi-turn executor over PerfboxAgent."""

    def __init__(self) -> None:
        super().__init__(PerfboxAgent)
