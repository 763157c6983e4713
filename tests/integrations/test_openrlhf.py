"""The OpenRLHF agent loaded the way `--agent_func_path` loads it, and driven by OpenRLHF's own
MultiTurnAgentExecutor with a real tokenizer. OpenRLHF's trainer (Ray, vLLM, DeepSpeed,
flash-attn) does not install without a GPU: its agent module is installed alone (pip
--no-deps) and the engine below replays scripted model turns, because the point is what the
agent does with a given action and a 135M model does not write a given tool call on demand."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from pathlib import Path
from types import SimpleNamespace

from tests.conftest import required_module

agent_module = required_module("openrlhf.utils.agent", "PERFBOX_REQUIRE_OPENRLHF")
REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "kernelbench"
REFERENCE = (FIXTURES / "reference.py").read_text()
HONEST = (FIXTURES / "new.py").read_text()


def _load_executor():
    """As openrlhf.trainer.ray.vllm_engine._load_agent_executor does."""
    spec = importlib.util.spec_from_file_location("agent_module",
                                                  REPO / "examples" / "openrlhf_agent.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert issubclass(module.AgentExecutor, agent_module.AgentExecutorBase)
    return module.AgentExecutor()


class ScriptedEngine:
    """vLLM's generate() shape, replaying the model turns given: like vLLM, the EOS the turn
    stopped at is in token_ids and not in the text."""

    def __init__(self, tokenizer, turns: list[str]) -> None:
        self.tokenizer, self.turns, self.prompts = tokenizer, list(turns), []

    async def generate(self, prompt_ids, sampling_params, multi_modal_data=None):
        self.prompts.append(self.tokenizer.decode(prompt_ids))
        text = self.turns.pop(0)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [
            self.tokenizer.eos_token_id]
        output = SimpleNamespace(token_ids=ids, text=text, finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[output])


def test_agent_runs_calls_through_openrlhfs_executor_and_rewards_at_the_end(server) -> None:
    from transformers import AutoTokenizer

    from perfbox.inference.engines.llama_cpp import default_model_path

    _, port = server
    os.environ["PERFBOX_TARGET"] = f"127.0.0.1:{port}"
    gguf = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    call = json.dumps({"name": "check", "arguments": {"submission": HONEST}})
    engine = ScriptedEngine(tokenizer, [f"<tool_call>\n{call}\n</tool_call>", "Done."])
    executor = _load_executor()
    prompt = "<|im_start|>user\nwrite ModelNew<|im_end|>\n<|im_start|>assistant\n"
    out = asyncio.run(executor.execute(prompt, json.dumps({"reference": REFERENCE}),
                                       SimpleNamespace(max_tokens=64, logprobs=None), 4096,
                                       tokenizer, engine))
    # the second turn saw the tool's real answer, in a ChatML user turn
    assert "<|im_start|>user\n<tool_response>\nOK: " in engine.prompts[1]
    assert engine.prompts[1].rstrip().endswith("<|im_start|>assistant")
    assert "</tool_call><|im_end|>\n<|im_start|>user\n" in engine.prompts[1]  # one end marker
    assert len(out["action_ranges"]) == 2 and out["reward"] > 0
