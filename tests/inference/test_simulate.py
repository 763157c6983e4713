"""The cluster simulator's mechanics: the prefix cache, residency and speculation behave as
their definitions say, and the cluster waits for its slowest node."""

from __future__ import annotations

import pytest

from perfbox.inference.simulate import NodeModel, WorkloadModel, simulate_cluster, simulate_node

NODE = NodeModel(step_overhead_s=0.01, decode_s_per_seq=0.004, prefill_s_per_token=0.002,
                 slots=8, request_overhead_s=0.002)
WORK = WorkloadModel(turns=4, tokens_per_turn=100, prompt_tokens=100, response_tokens=50,
                     tool_s_mean=2.0, tool_s_sigma=0.3, alpha=1.0)


def test_enough_kv_means_the_prefix_cache_always_hits() -> None:
    r = simulate_node(NODE, WORK, trajectories=8, mode="resubmit")
    assert r["reprefill_tokens"] == 0
    assert r["generated_tokens"] == 8 * (4 * 100 + WORK.final_tokens)


def test_oversubscribed_kv_resubmit_reprefills_and_residency_wins() -> None:
    resubmit = simulate_node(NODE, WORK, trajectories=32, mode="resubmit")
    resident = simulate_node(NODE, WORK, trajectories=32, mode="resident")
    assert resubmit["reprefill_tokens"] > 0
    assert resident["reprefill_tokens"] < resubmit["reprefill_tokens"]
    assert resident["tokens_per_s"] > resubmit["tokens_per_s"]


def test_speculation_hides_tool_time_when_the_engine_would_idle() -> None:
    resident = simulate_node(NODE, WORK, trajectories=1, mode="resident")
    speculate = simulate_node(NODE, WORK, trajectories=1, mode="resident+speculate")
    assert speculate["idle_s"] < resident["idle_s"]
    assert speculate["makespan_s"] < resident["makespan_s"]


def test_cluster_splits_work_and_reports_every_mode() -> None:
    out = simulate_cluster(NODE, WORK, nodes=4, trajectories=64)
    assert set(out["modes"]) == {"resubmit", "resident", "resident+speculate"}
    one = simulate_cluster(NODE, WORK, nodes=1, trajectories=16)
    # four nodes with 16 each: about four times one node's throughput
    ratio = out["modes"]["resident"]["tokens_per_s"] / one["modes"]["resident"]["tokens_per_s"]
    assert 3.0 < ratio <= 4.4


def test_measured_tool_times_are_drawn_from_when_given() -> None:
    """One trajectory, resident: the engine idles exactly while its tools run, so the idle time
    is the sum of the drawn tool times: every draw is the one measured value."""
    import dataclasses

    work = dataclasses.replace(WORK, tool_s_samples=(3.0,))
    r = simulate_node(NODE, work, trajectories=1, mode="resident")
    assert abs(r["idle_s"] - work.turns * 3.0) < 1e-9


def test_the_models_are_fitted_to_what_the_benchmark_recorded() -> None:
    """Token counts and per-call tool times come from the benchmark's result, not constants."""
    import json
    from pathlib import Path

    from perfbox.inference.simulate import models_from_benchmark

    result = json.loads((Path(__file__).resolve().parents[2] / "benchmarks" / "results"
                         / "rollout.json").read_text())
    result["tokens"] = {"prompt": 90.0, "turn": 200.0, "answer": 30.0}
    last = result["runs"][-1]
    last["modes"]["resubmit"]["tool_calls"] = [{"tool": "compile", "tool_s": 0.7},
                                               {"tool": "disasm", "tool_s": 0.002}]
    _, work = models_from_benchmark(result)
    assert (work.prompt_tokens, work.final_tokens) == (90, 30)
    assert work.tool_s_samples == (0.7, 0.002)
    resident, conc = last["modes"]["resident"], last["concurrency"]
    first_prefill = (resident["prefill_tokens"] - resident["reprefill_tokens"]) / conc
    assert work.prompt_tokens + work.turns * work.response_tokens == \
        pytest.approx(first_prefill, abs=work.turns)


def test_turns_of_different_lengths_keep_resubmit_out_of_lockstep() -> None:
    """With one fixed turn length the whole batch frees its slots in the same step and the
    queued requests take them all; turns drawn from a spread of lengths (same mean) let more
    re-submissions find their own slot, as in the measured runs."""
    import dataclasses

    node = dataclasses.replace(NODE, slots=4)
    work = dataclasses.replace(WORK, tool_s_mean=0.3)
    varied = dataclasses.replace(work, turn_tokens_samples=(40, 70, 100, 130, 160))
    lockstep = [simulate_node(node, work, 8, "resubmit", seed)["reprefill_tokens"]
                for seed in range(4)]
    spread = [simulate_node(node, varied, 8, "resubmit", seed)["reprefill_tokens"]
              for seed in range(4)]
    assert sum(spread) < 0.8 * sum(lockstep)
