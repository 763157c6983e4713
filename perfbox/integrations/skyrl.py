"""SkyRL gym: perfbox as a `BaseTextEnv`.

    import skyrl_gym
    skyrl_gym.register("perfbox", entry_point="perfbox.integrations.skyrl:PerfboxTextEnv")
    # rows: env_class="perfbox", extras={"problem": {"reference": ...}, "max_turns": 4}
    # the tool service: env_config.target, or $PERFBOX_TARGET

Each `step(action)` runs the Hermes tool calls the model wrote and returns their responses as
a user observation (ChatML models read tool responses in a user turn); the episode ends when an
action makes no call, or after `max_turns`, with perfbox's reward of the last kernel.
"""

from __future__ import annotations

from typing import Any

from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput

from perfbox.integrations.text_episode import TextEpisode
from perfbox.integrations.toolbox import Problem, shared_toolbox

class PerfboxTextEnv(BaseTextEnv):
    """One trajectory. extras: `problem` (or `reference`), optional `max_turns`, `reward`;
    env_config: optional `target`, `require_custom_kernel`."""

    def __init__(self, env_config: Any = None, extras: dict[str, Any] | None = None) -> None:
        super().__init__()
        extras = dict(extras or {})
        data = extras.get("problem") or extras.get("reference") or (
            extras.get("reward_spec") or {}).get("ground_truth")
        if not data:
            raise ValueError("PerfboxTextEnv: extras must carry the 'problem' ({'reference': "
                             "source} or {'files': {...}}) the episode's tools act on")
        config = env_config or {}  # a dict or an OmegaConf DictConfig: both have .get
        self.max_turns = int(extras.get("max_turns") or config.get("max_turns") or 4)
        toolbox = shared_toolbox(config.get("target"),
                                 require_custom_kernel=bool(config.get("require_custom_kernel")))
        self.episode = TextEpisode(toolbox, Problem.of(data),
                                   self.max_turns, extras.get("reward") or True)

    def step(self, action: str) -> BaseTextEnvStepOutput:
        self.turns += 1
        out = self.episode.step(action)
        observations = [{"role": "user", "content": out.observation}] if out.observation else []
        return BaseTextEnvStepOutput(
            observations=observations, reward=out.reward, done=out.done,
            metadata={"statuses": [c.status for c in out.calls], "reward": out.breakdown},
            postprocessed_action=None)

    def get_metrics(self) -> dict[str, Any]:
        statuses = self.episode.statuses
        return {"tool_calls": len(statuses),
                "tool_ok": sum(s == "OK" for s in statuses),
                "turns": self.episode.turns}
