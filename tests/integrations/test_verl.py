"""The verl adapter inside verl's own code: tools built by verl's tool registry from the YAML
perfbox generates, called through ToolAgentLoop's dispatch (create, execute, release per
call), and the `perfbox` agent loop's trajectory from a real rollout worker checked by verl's
AgentLoopOutput. verl's trainer itself (Ray workers, vLLM/SGLang servers, FSDP) needs GPUs and
is not run here."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.conftest import required_module

verl = required_module("verl", "PERFBOX_REQUIRE_VERL")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kernelbench"
REFERENCE = (FIXTURES / "reference.py").read_text()
HONEST = (FIXTURES / "new.py").read_text()
WRONG = HONEST.replace("torch.relu(self.linear(x))", "self.linear(x)")


@pytest.fixture(scope="module")
def verl_tools(server, tmp_path_factory):
    import yaml
    from verl.tools.tool_registry import initialize_tools_from_config

    from perfbox.integrations.verl import main

    _, port = server
    path = tmp_path_factory.mktemp("verl") / "perfbox_tools.yaml"
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--server", f"127.0.0.1:{port}", "--tool", "check", "--tool",
                     "compile"]) == 0
    path.write_text(out.getvalue())
    config = yaml.safe_load(path.read_text())
    assert [t["tool_schema"]["function"]["name"] for t in config["tools"]] == ["compile",
                                                                                 "check"]
    return {t.name: t for t in initialize_tools_from_config(str(path))}


def _loop(tools, max_chars: int = 256):
    """verl's ToolAgentLoop with only what its tool dispatch reads (the rest needs a GPU
    rollout server)."""
    from verl.experimental.agent_loop.tool_agent_loop import ToolAgentLoop

    loop = object.__new__(ToolAgentLoop)
    loop.tools = tools
    loop.max_tool_response_length = max_chars
    loop.tool_response_truncate_side = "right"
    return loop


def _agent_data(row_kwargs):
    from verl.experimental.agent_loop.tool_agent_loop import AgentData

    return AgentData(messages=[], image_data=[], video_data=[], audio_data=None,
                     mm_processor_kwargs=None, metrics={}, request_id="traj-1",
                     tools_kwargs=row_kwargs)


def test_tools_run_through_verls_dispatch_and_keep_state_per_trajectory(verl_tools) -> None:
    from verl.experimental.agent_loop.tool_parser import FunctionCall

    from perfbox.integrations.verl import tools_kwargs

    loop = _loop(verl_tools)
    data = _agent_data(tools_kwargs({"reference": REFERENCE}))

    def call(name, arguments):
        return asyncio.run(loop._call_tool(FunctionCall(name=name,
                                                        arguments=json.dumps(arguments)),
                                           data.tools_kwargs, data))

    wrong, reward, metrics = call("check", {"submission": WRONG})
    assert wrong.text.startswith("WRONG_ANSWER: ") and metrics == {"status": "WRONG_ANSWER"}
    ok, _, _ = call("check", {"submission": HONEST})
    assert ok.text.startswith("OK: ")
    compiled, _, _ = call("compile", {"source": "__global__ void k() {}"})
    assert compiled.text.startswith("OK: ")
    # verl made, ran and released an instance per call: the trajectory kept the state
    tool = verl_tools["check"]
    assert tool._problems == {}
    assert data.extra_fields["perfbox"]["submission"] == HONEST
    assert asyncio.run(tool.calc_reward("gone", agent_data=data)) > 0
    # the model cannot bind another problem: the schema has no such argument
    sneaky, _, _ = call("check", {"submission": HONEST, "reference": HONEST})
    assert sneaky.text.startswith("BAD_CALL")


def test_verl_cuts_long_outputs_but_the_status_and_summary_come_first(verl_tools) -> None:
    from verl.experimental.agent_loop.tool_parser import FunctionCall

    loop = _loop(verl_tools, max_chars=40)
    data = _agent_data({})
    source = "__global__ void k() { " + "undefined_a(); " * 40 + "}"
    out, _, _ = asyncio.run(loop._call_tool(
        FunctionCall(name="compile", arguments=json.dumps({"source": source})), {}, data))
    assert out.text.startswith("COMPILE_ERROR: ") and out.text.endswith("...(truncated)")


def test_agent_loop_is_registered_and_returns_a_worker_trajectory(server, monkeypatch
                                                                  ) -> None:
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry

    from perfbox.integrations.verl import WORKER_ENV, PerfboxAgentLoop
    from perfbox.cli.tasks import embedded_worker

    assert _agent_loop_registry["perfbox"]["_target_"] == \
        "perfbox.integrations.verl.PerfboxAgentLoop"
    _, port = server
    # the loop with only the config it reads (AgentLoopBase's constructor wants verl's
    # server manager and tokenizer, which need a GPU rollout server)
    loop = object.__new__(PerfboxAgentLoop)
    loop.rollout_config = OmegaConf.create({"response_length": 64,
                                            "multi_turn": {"max_assistant_turns": 2}})
    messages = [{"role": "system", "content": "Call check with your ModelNew."},
                {"role": "user", "content": f"Make this faster:\n{REFERENCE}"}]
    extra = {"index": 7, "problem": {"reference": REFERENCE}, "tools": ["check"]}
    sampling = {"temperature": 0.7, "top_p": 0.9, "top_k": -1}
    task = loop.task(sampling, raw_prompt=messages, extra_info=extra)
    assert task.sampling.max_total_tokens == 64 and task.sampling.top_k == 0
    assert task.sampling.max_turns == 2 and task.problem.reference == REFERENCE
    monkeypatch.delenv(WORKER_ENV, raising=False)
    with pytest.raises(ValueError, match=WORKER_ENV):
        loop.worker()
    with embedded_worker(f"127.0.0.1:{port}", threads=2, model=None, kv_slots=2) as worker:
        monkeypatch.setenv(WORKER_ENV, worker)
        output = asyncio.run(loop.run(sampling, raw_prompt=messages, extra_info=extra))
    assert output.prompt_ids and output.response_ids
    assert len(output.response_mask) == len(output.response_ids) == \
        len(output.response_logprobs)
    assert output.reward_score is not None
    tensors = output.as_dict()  # what verl's worker pads and batches
    assert tensors["responses"].shape == tensors["response_mask"].shape
    assert tensors["rm_scores"][-1] == pytest.approx(output.reward_score)
