"""The SkyRL adapter as skyrl_gym makes it (registered by name), stepping real tool calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import required_module

skyrl_gym = required_module("skyrl_gym", "PERFBOX_REQUIRE_SKYRL")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kernelbench"
REFERENCE = (FIXTURES / "reference.py").read_text()
HONEST = (FIXTURES / "new.py").read_text()


def _make(port: int, **extras):
    from skyrl_gym.envs import registration

    if "perfbox" not in registration.registry:
        skyrl_gym.register("perfbox", entry_point="perfbox.integrations.skyrl:PerfboxTextEnv")
    return skyrl_gym.make("perfbox", env_config={"target": f"127.0.0.1:{port}"},
                          extras=extras)


def test_env_steps_tool_calls_then_rewards_the_submission(server) -> None:
    from skyrl_gym.envs.base_text_env import BaseTextEnv

    _, port = server
    env = _make(port, problem={"reference": REFERENCE}, max_turns=3)
    assert isinstance(env, BaseTextEnv)
    prompt = [{"role": "user", "content": "write ModelNew"}]
    assert env.init(prompt)[0] == prompt
    call = json.dumps({"name": "check", "arguments": {"submission": HONEST}})
    out = env.step(f"<tool_call>\n{call}\n</tool_call>")
    assert not out["done"] and out["reward"] == 0
    assert out["observations"][0]["role"] == "user"
    assert out["observations"][0]["content"].startswith("<tool_response>\nOK: ")
    assert out["metadata"]["statuses"] == ["OK"]
    last = env.step("That is my answer.")
    assert last["done"] and last["reward"] > 0 and last["observations"] == []
    assert env.get_metrics()["tool_ok"] == 1


def test_env_refuses_a_row_without_a_problem(server) -> None:
    _, port = server
    with pytest.raises(ValueError, match="problem"):
        _make(port)
