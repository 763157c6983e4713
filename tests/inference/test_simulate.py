"""The cluster simulator's mechanics: the prefix cache, residency and speculation behave as
their definitions say, and the cluster waits for its slowest node."""

from __future__ import annotations

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
