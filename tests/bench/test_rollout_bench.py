"""What the rollout benchmark records for the cluster simulator: the workload's lengths in the
engine's own tokens (the simulator draws turn lengths from them)."""

from __future__ import annotations

import pytest

from tests.conftest import required_module

from perfbox.inference import workload as W

required_module("llama_cpp", "PERFBOX_REQUIRE_LLAMA")
from perfbox.bench.rollout import early_launch_tokens, workload_tokens  # noqa: E402
from perfbox.inference.engines.llama_cpp import LlamaCppEngine  # noqa: E402


def test_workload_tokens_are_the_engines_counts_of_every_turn() -> None:
    workload = W.load()
    tokens = workload_tokens(workload, None)
    engine = LlamaCppEngine(num_slots=1, threads=1)
    try:
        expected = [len(engine.tokenize(x)) for t in workload.trajectories for x in t.turns[:-1]]
        prompts = [len(engine.tokenize(t.prompt)) for t in workload.trajectories]
    finally:
        engine.close()
    assert tokens["turns"] == expected and len(set(expected)) > 1  # turns differ in length
    assert tokens["prompt"] == pytest.approx(sum(prompts) / len(prompts))
    assert tokens["turn"] == pytest.approx(sum(expected) / len(expected))


def test_early_launch_is_counted_in_decode_steps_after_the_call_closes() -> None:
    """The head start early launch gives a tool: the tokens after the call's JSON closed,
    i.e. the end tag's, and none for a turn without a call."""
    engine = LlamaCppEngine(num_slots=1, threads=1)
    try:
        call = '<tool_call>{"name": "check", "arguments": {"problem": "relu"}}</tool_call>'
        tail = len(engine.tokenize("</tool_call>"))
        assert 0 < early_launch_tokens(engine, "Let me check.\n" + call) <= tail + 1
        assert early_launch_tokens(engine, "No call in this turn.") == 0
    finally:
        engine.close()
