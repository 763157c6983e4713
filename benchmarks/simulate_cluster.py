"""Cluster-scale predictions from the measured per-node rollout figures.

Steps:
  1. Fit the node model (step overhead, per-sequence decode cost, prefill cost per token, KV
     slots, re-submission overhead) and the workload model (turns, tokens per turn, tool
     time, measured alpha) to a `perfbox bench rollout` result.
  2. Simulate every mode for a grid of nodes x concurrent trajectories
     (perfbox.inference.simulate; its docstring lists the assumptions, copied into the output).
  3. Write the predictions with the fitted models next to them.

    python benchmarks/simulate_cluster.py [--rollout benchmarks/results/rollout_calls.json]
        [--out benchmarks/results/cluster_sim.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perfbox.inference import simulate  # noqa: E402

GRID = [(1, 32), (8, 256), (64, 2048), (256, 8192)]  # (nodes, concurrent trajectories)
SEEDS = 8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # rollout_calls.json: a 1-and-8 run that recorded per-call tool times and turn lengths
    parser.add_argument("--rollout",
                        default=str(REPO / "benchmarks/results/rollout_calls.json"))
    parser.add_argument("--holdout", nargs="*",
                        default=[str(REPO / "benchmarks/results/rollout_32.json")],
                        help="measured runs the fit did not use, to validate against")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/cluster_sim.json"))
    args = parser.parse_args()
    measured = json.loads(Path(args.rollout).read_text())
    node, work = simulate.models_from_benchmark(measured)
    out = {"source": args.rollout, "assumptions": simulate.__doc__,
           **simulate.describe(node, work), "validation": [], "grid": []}
    # the simulator against the measured runs it was fitted to (same concurrency and slots)
    # the fitted run itself, then runs the fit never saw (other concurrency and KV size)
    for source in [args.rollout, *args.holdout]:
        runs = json.loads(Path(source).read_text())["runs"]
        out["validation"] += validate(node, work, runs, Path(source).name)
    for nodes, trajectories in GRID:
        row = simulate.simulate_cluster(node, work, nodes, trajectories)
        out["grid"].append(row)
        print(f"{nodes:4d} nodes, {trajectories:5d} trajectories: " + ", ".join(
            f"{m} {v['tokens_per_s']:.0f} tok/s ({row['speedup_vs_resubmit'][m]:.2f}x)"
            for m, v in row["modes"].items()))
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


def validate(node: simulate.NodeModel, work: simulate.WorkloadModel, runs: list[dict],
             source: str) -> list[dict]:
    """The simulator against measured runs at their concurrency and KV slots: the mean over
    SEEDS random draws of tool times and turn lengths, with its range."""
    checks = []
    for row in runs:
        local = dataclasses.replace(node, slots=row["kv_slots"])
        sims = [simulate.simulate_cluster(local, work, 1, row["concurrency"], seed=seed)
                for seed in range(SEEDS)]
        gains = [s["speedup_vs_resubmit"]["resident+speculate"] for s in sims]
        check = {"source": source, "concurrency": row["concurrency"],
                 "kv_slots": row["kv_slots"], "measured_speedup": row["measured_speedup_wall"],
                 "simulated_speedup": statistics.fmean(gains),
                 "simulated_range": [min(gains), max(gains)],
                 "measured_reprefill_resubmit": row["modes"]["resubmit"]["reprefill_tokens"],
                 "simulated_reprefill_resubmit": statistics.fmean(
                     s["modes"]["resubmit"]["reprefill_tokens"] for s in sims)}
        check["error"] = check["simulated_speedup"] / check["measured_speedup"] - 1
        checks.append(check)
        print(f"validation ({source}), 1 node, {row['concurrency']} trajectories, "
              f"{row['kv_slots']} slots: measured {check['measured_speedup']:.2f}x, simulated "
              f"{check['simulated_speedup']:.2f}x ({min(gains):.2f}-{max(gains):.2f}, error "
              f"{check['error']:+.1%}); resubmit re-prefilled: measured "
              f"{check['measured_reprefill_resubmit']}, simulated "
              f"{check['simulated_reprefill_resubmit']:.0f}")
    return checks


if __name__ == "__main__":
    sys.exit(main())
