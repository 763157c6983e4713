"""The cluster simulator's mechanics: the prefix cache, residency and speculation behave as
their definitions say, and the cluster waits for its slowest node."""

from __future__ import annotations

import dataclasses
import json

import pytest

from perfbox.bench.cluster_sim import (NodeModel, WorkloadModel, models_from_benchmark,
                                        simulate_cluster, simulate_node)

NODE = NodeModel(step_overhead_s=0.01, decode_s_per_seq=0.004, prefill_s_per_token=0.002,
                 kv_pressure=1.0, request_overhead_s=0.002)
WORK = WorkloadModel(turns=4, tokens_per_turn=100, prompt_tokens=100, response_tokens=50,
                     tool_s_mean=2.0, tool_s_sigma=0.3, alpha=1.0)


def test_enough_kv_means_the_prefix_cache_always_hits() -> None:
    r = simulate_node(NODE, WORK, trajectories=8, mode="resubmit")
    assert r["reprefill_tokens"] == 0
    assert r["generated_tokens"] == 8 * (4 * 100 + WORK.final_tokens)


def test_oversubscribed_kv_resubmit_reprefills_and_residency_wins() -> None:
    tight = dataclasses.replace(NODE, kv_pressure=0.3)
    resubmit = simulate_node(tight, WORK, trajectories=32, mode="resubmit")
    resident = simulate_node(tight, WORK, trajectories=32, mode="resident")
    assert resubmit["reprefill_tokens"] > 0
    assert resident["reprefill_tokens"] < resubmit["reprefill_tokens"]
    assert resident["tokens_per_s"] > resubmit["tokens_per_s"]


def test_speculation_hides_tool_time_when_the_engine_would_idle() -> None:
    resident = simulate_node(NODE, WORK, trajectories=1, mode="resident")
    speculate = simulate_node(NODE, WORK, trajectories=1, mode="resident+speculate")
    assert speculate["idle_s"] < resident["idle_s"]
    assert speculate["makespan_s"] < resident["makespan_s"]


def test_early_launch_gives_each_tool_its_head_start() -> None:
    """One trajectory, no draft: launching 20 decode steps before the end tag shortens every
    wait by those steps; resident (no speculation) gets no head start."""
    work = dataclasses.replace(WORK, alpha=0.0, tool_s_samples=(3.0,), early_launch_tokens=20)
    plain = simulate_node(NODE, dataclasses.replace(work, early_launch_tokens=0), 1,
                          "resident+speculate")
    early = simulate_node(NODE, work, 1, "resident+speculate")
    resident = simulate_node(NODE, work, 1, "resident")
    assert resident["idle_s"] == pytest.approx(plain["idle_s"])
    step = NODE.step_overhead_s + NODE.decode_s_per_seq  # one sequence's decode step
    assert plain["idle_s"] - early["idle_s"] == pytest.approx(WORK.turns * 20 * step, rel=0.05)


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
    work = dataclasses.replace(WORK, tool_s_samples=(3.0,))
    r = simulate_node(NODE, work, trajectories=1, mode="resident")
    assert abs(r["idle_s"] - work.turns * 3.0) < 1e-9


def _run(o_s: float, tools: list[float], fit: dict[str, float] | None) -> dict:
    return {"parameters": {"o_s": o_s, "turns_per_trajectory": 2.0}, "step_model": fit,
            "tool_calls": [{"tool": "check", "tool_s": t} for t in tools]}


def test_the_models_are_fitted_to_the_calibration_runs_only() -> None:
    """Step costs, tool times and re-submission overhead come from the runs at the
    calibration pressure; the runs at other pressures (what is predicted) are not read."""
    fit = {"step_overhead_s": 0.01, "decode_s_per_seq": 0.002, "prefill_s_per_token": 0.0005}
    other = {"step_overhead_s": 9.0, "decode_s_per_seq": 9.0, "prefill_s_per_token": 9.0}
    result = {"tokens": {"prompt": 90.0, "turn": 100.0, "answer": 30.0, "turns": [80, 120]},
              "runs": [{"trajectories": 4, "kv_pressure": 1.0, "live_context_tokens": 4 * 500,
                        "reps": [{"modes": {"resubmit": _run(0.004, [1.0, 2.0], fit),
                                            "resident": _run(0.0, [3.0], fit)}}]},
                       {"trajectories": 4, "kv_pressure": 0.5, "live_context_tokens": 4 * 500,
                        "reps": [{"modes": {"resubmit": _run(5.0, [99.0], other)}}]}]}
    node, work = models_from_benchmark(json.loads(json.dumps(result)))
    assert (node.step_overhead_s, node.decode_s_per_seq, node.prefill_s_per_token) == \
        pytest.approx((0.01, 0.002, 0.0005))
    assert node.request_overhead_s == pytest.approx(0.004)
    assert work.tool_s_samples == (1.0, 2.0, 3.0) and work.turn_tokens_samples == (80, 120)
    assert (work.prompt_tokens, work.final_tokens, work.turns) == (90, 30, 2)
    # 500 a trajectory = 90 prompt + 30 answer + 2 turns x (100 + response)
    assert work.response_tokens == 90
    with pytest.raises(ValueError, match="no runs at KV pressure 0.75"):
        models_from_benchmark(result, pressure=0.75)


def test_the_budget_holds_and_less_kv_means_more_reprefill() -> None:
    """The simulator runs the worker's own KV policy: never over budget; resubmit re-prefills
    nothing with room for everything and more as the budget shrinks."""
    work = dataclasses.replace(WORK, turn_tokens_samples=(40, 70, 100, 130, 160))
    reprefill = []
    for pressure in (1.0, 0.5, 0.25):
        node = dataclasses.replace(NODE, kv_pressure=pressure)
        r = simulate_node(node, work, 8, "resubmit", seed=1)
        assert r["peak_kv_tokens"] <= r["kv_budget_tokens"]
        reprefill.append(r["reprefill_tokens"])
    assert reprefill[0] == 0 < reprefill[1] <= reprefill[2]


def test_predictions_pair_every_measured_ratio_and_the_draft_gets_its_alpha() -> None:
    """benchmarks/simulate_cluster.py: each held-out row's ratios, predicted next to the
    measured medians; only the draft variant is simulated with a start-of-turn launch."""
    from benchmarks import simulate_cluster as sc

    def spread(x: float) -> dict:
        return {"median": x, "min": x, "max": x, "values": [x]}

    draft = {"parameters": {"draft_alpha": 0.7}}
    row = {"trajectories": 4, "kv_pressure": 0.5,
           "tokens_per_s": {n: spread(10.0) for n in ("resubmit", "resident",
                                                      "resident+speculate", sc.DRAFT)},
           "ratios": {"resident / resubmit": spread(1.2),
                      f"{sc.DRAFT} / resident": spread(1.1)}}
    result = {"runs": [{"reps": [{"modes": {sc.DRAFT: draft, "resident": {}}}]}]}
    assert sc._alpha(result, sc.DRAFT) == 0.7 and sc._alpha(result, "resident") == 0.0
    out = sc.predict(NODE, WORK, row, result, "test")
    assert set(out["ratio_error"]) == set(row["ratios"])
    ratio = out["ratios"]["resident / resubmit"]
    assert ratio["measured"] == 1.2 and ratio["predicted"] > 0
    assert out["ratio_error"]["resident / resubmit"] == pytest.approx(ratio["predicted"] / 1.2 - 1)
