"""Workloads the rollout worker replays: agent trajectories shipped as data, turned into chat
text in the model's template (ChatML for SmolLM2 and Qwen/Hermes-style models)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKLOADS = Path(__file__).parent / "workloads"
DEFAULT_WORKLOAD = WORKLOADS / "kernel_agent.json"


@dataclass(frozen=True)
class ChatTemplate:
    """ChatML: <|im_start|>role\\ncontent<|im_end|>\\n."""

    start: str = "<|im_start|>"
    end: str = "<|im_end|>"

    def message(self, role: str, content: str) -> str:
        return f"{self.start}{role}\n{content}{self.end}\n"

    def assistant_prefix(self) -> str:
        return f"{self.start}assistant\n"

    def tool_response(self, content: str) -> str:
        """Ends the assistant turn that made the call, answers it, opens the next turn."""
        return (f"{self.end}\n" + self.message("tool", f"<tool_response>\n{content}\n"
                                               "</tool_response>") + self.assistant_prefix())

    @property
    def tool_response_parts(self) -> tuple[str, str]:
        """(before, after) the content in tool_response(content)."""
        before, _, after = self.tool_response("\0").partition("\0")
        return before, after


@dataclass
class Trajectory:
    """One replayable trajectory: the prompt and the assistant turns, fixed text."""

    id: str
    prompt: str  # system + user + the opening of the first assistant turn
    turns: list[str]  # each ends with a tool call, except the last
    problem: str  # key into the workload's problems (reference for check)
    group: str = ""  # the samples of one prompt (a GRPO group) share it; "" is a group of one
    task: Any = None  # a training job's task sample (perfbox.inference.rollout_types.TaskSample)


@dataclass
class Workload:
    trajectories: list[Trajectory]
    problems: dict[str, dict[str, Any]]  # name -> {"reference": source}
    start_tag: str
    end_tag: str


def load(path: Path = DEFAULT_WORKLOAD, template: ChatTemplate | None = None) -> Workload:
    data = json.loads(Path(path).read_text())
    template = template or ChatTemplate()
    trajectories = []
    for t in data["trajectories"]:
        prompt = (template.message("system", t["system"]) + template.message("user", t["task"])
                  + template.assistant_prefix())
        trajectories.append(Trajectory(t["id"], prompt, list(t["turns"]), t["id"]))
    fmt = data.get("tool_call_format", {})
    return Workload(trajectories, data.get("problems", {}),
                    fmt.get("start_tag", "<tool_call>"), fmt.get("end_tag", "</tool_call>"))


def _distinct(turn: str, index: int | str) -> str:
    """The turn with its kernel sources marked as trajectory `index`'s own (a comment line),
    so replicas call the tools with different sources, as different samples would: a shared
    tool cache must not serve one trajectory's call from another's."""
    return (turn.replace('"source": "', f'"source": "// trajectory {index}\\n')
                .replace('"submission": "', f'"submission": "# trajectory {index}\\n'))


def replicate(workload: Workload, count: int, group_size: int = 1,
              shared_turns: int = 0) -> list[Trajectory]:
    """count trajectories cycling through the workload's, ids and kernel sources made distinct.

    With group_size > 1 they come in GRPO groups: the samples of a group share one prompt
    (and `group`), and the first `shared_turns` turns of every sample in a group are the same
    text (samples that reach the same call, as sampled siblings often do first), the rest
    distinct per sample."""
    if group_size < 1:
        raise ValueError("group_size must be at least 1")
    base = workload.trajectories
    out = []
    for i in range(count):
        g = i // group_size
        src = base[g % len(base)] if group_size > 1 else base[i % len(base)]
        turns = [_distinct(t, f"g{g}" if k < shared_turns else i)
                 for k, t in enumerate(src.turns)]
        group = f"{src.id}-g{g}" if group_size > 1 else ""
        out.append(Trajectory(f"{src.id}-{i}", src.prompt, turns, src.problem, group))
    return out
