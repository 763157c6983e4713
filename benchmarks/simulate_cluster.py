"""Predictions of rollout runs that were not measured, and at cluster scale, from calibration
runs that were.

Steps:
  1. Fit the node model (step cost from the calibration runs' forward passes, re-submission
     overhead) and the workload model (turns, turn lengths, tool times) to the runs of a
     `perfbox bench rollout` result at the calibration KV pressure (default 1.0, the control).
  2. Predict every other run — the same file's other pressures, and the hold-out files (other
     trajectory counts) — by simulating each variant with the node's KV policy
     (perfbox.bench.cluster_sim, whose docstring lists the assumptions, copied into the
     output), SEEDS draws each; compare with the measured medians.
  3. Simulate every mode for a grid of nodes x concurrent trajectories at --grid-pressure.
  4. What if decoding were faster (a GPU node: the same tools, the engine's step costs divided
     by a factor)? Speculation's own gain (resident+speculate with an emulated draft over
     resident) per factor: a model's answer, labelled as one, never a measurement.

    python benchmarks/simulate_cluster.py [--rollout benchmarks/results/rollout_pressure.json]
        [--holdout benchmarks/results/rollout_32_pressure.json] [--out FILE]
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

from perfbox.bench import cluster_sim as simulate  # noqa: E402

GRID = [(1, 32), (8, 256), (64, 2048)]  # (nodes, concurrent trajectories)
SEEDS = 8
DRAFT = "resident+speculate+draft"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollout",
                        default=str(REPO / "benchmarks/results/rollout_pressure.json"))
    parser.add_argument("--calibrate-pressure", type=float, default=1.0,
                        help="the KV pressure whose runs the models are fitted to")
    parser.add_argument("--holdout", nargs="*",
                        default=[str(REPO / "benchmarks/results/rollout_32_pressure.json")],
                        help="measured results the fit did not use, to predict")
    parser.add_argument("--grid-pressure", type=float, default=0.5)
    parser.add_argument("--whatif-alpha", type=float, default=0.7,
                        help="the emulated draft's hit rate in the faster-decode what-if")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/cluster_sim.json"))
    args = parser.parse_args()
    measured = with_early_launch(json.loads(Path(args.rollout).read_text()))
    node, work = simulate.models_from_benchmark(measured, args.calibrate_pressure)
    out = {"source": args.rollout, "calibrated_on_pressure": args.calibrate_pressure,
           "assumptions": simulate.__doc__, **simulate.describe(node, work),
           "predictions": [], "grid": []}
    for source in [args.rollout, *args.holdout]:
        if not Path(source).is_file():
            print(f"no {source}: not predicted")
            continue
        result = json.loads(Path(source).read_text())
        rows = [r for r in result["runs"] if "ratios" in r and not (
            source == args.rollout and r["kv_pressure"] == args.calibrate_pressure)]
        out["predictions"] += [predict(node, work, row, result, Path(source).name)
                               for row in rows]
    errors = [abs(e) for p in out["predictions"] for e in p["ratio_error"].values()]
    out["max_abs_ratio_error"] = max(errors) if errors else None
    grid_node = dataclasses.replace(node, kv_pressure=args.grid_pressure)
    for nodes, trajectories in GRID:
        row = simulate.simulate_cluster(grid_node, work, nodes, trajectories)
        out["grid"].append(row)
        print(f"{nodes:4d} nodes, {trajectories:5d} trajectories, KV pressure "
              f"{args.grid_pressure:.0%}: " + ", ".join(
                  f"{m} {v['tokens_per_s']:.0f} tok/s ({row['speedup_vs_resubmit'][m]:.2f}x)"
                  for m, v in row["modes"].items()))
    out["what_if_faster_decode"] = what_if(node, work, args.grid_pressure, args.whatif_alpha)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


def with_early_launch(result: dict) -> dict:
    """Results recorded before the workload's early-launch head start was: count it now on
    the same workload file (a property of the call format, not of any run)."""
    tokens = result["tokens"]
    if "early_launch" not in tokens:
        from perfbox.bench import rollout as bench_rollout
        from perfbox.inference import workload as W

        path = W.WORKLOADS / result["workload"]
        tokens["early_launch"] = bench_rollout.workload_tokens(W.load(path), None)["early_launch"]
    return result


def what_if(node: simulate.NodeModel, work: simulate.WorkloadModel, pressure: float,
            alpha: float, trajectories: int = 8,
            factors: tuple[float, ...] = (1.0, 4.0, 16.0)) -> list[dict]:
    """Speculation's own gain (draft at `alpha` over resident) and residency's gain over
    resubmit, if every engine step were `factor` times cheaper and the tools as measured."""
    rows = []
    for factor in factors:
        fast = dataclasses.replace(
            node, kv_pressure=pressure, step_overhead_s=node.step_overhead_s / factor,
            decode_s_per_seq=node.decode_s_per_seq / factor,
            prefill_s_per_token=node.prefill_s_per_token / factor)
        tps = {}
        for name, mode, a in (("resubmit", "resubmit", 0.0), ("resident", "resident", 0.0),
                              (DRAFT, "resident+speculate", alpha)):
            w = dataclasses.replace(work, alpha=a)
            tps[name] = statistics.fmean(
                simulate.simulate_node(fast, w, trajectories, mode, seed)["tokens_per_s"]
                for seed in range(SEEDS))
        rows.append({"decode_faster_by": factor, "trajectories": trajectories,
                     "kv_pressure": pressure, "draft_alpha": alpha,
                     "tokens_per_s": tps,
                     f"{DRAFT} / resident": tps[DRAFT] / tps["resident"],
                     "resident / resubmit": tps["resident"] / tps["resubmit"]})
        print(f"what if decode were {factor:g}x faster ({trajectories} trajectories, KV "
              f"pressure {pressure:.0%}): draft speculation / resident "
              f"{rows[-1][f'{DRAFT} / resident']:.2f}x, resident / resubmit "
              f"{rows[-1]['resident / resubmit']:.2f}x (simulated)")
    return rows


def _alpha(result: dict, name: str) -> float:
    """The start-of-turn launch chance of a variant: the emulated draft's alpha, else 0."""
    if name != DRAFT:
        return 0.0
    runs = [rep["modes"][name] for row in result["runs"] for rep in row["reps"]
            if name in rep["modes"]]
    return float(runs[0]["parameters"]["draft_alpha"] or 0.0) if runs else 0.0


def predict(node: simulate.NodeModel, work: simulate.WorkloadModel, row: dict, result: dict,
            source: str) -> dict:
    """One measured (trajectories, pressure) row, simulated: tokens/s per variant and the
    ratios the benchmark reports, each next to the measured median."""
    local = dataclasses.replace(node, kv_pressure=row["kv_pressure"])
    simulated: dict[str, float] = {}
    for name in row["tokens_per_s"]:
        mode = "resident+speculate" if name == DRAFT else name
        w = dataclasses.replace(work, alpha=_alpha(result, name))
        sims = [simulate.simulate_node(local, w, row["trajectories"], mode, seed)
                for seed in range(SEEDS)]
        simulated[name] = statistics.fmean(s["tokens_per_s"] for s in sims)
    measured = {n: v["median"] for n, v in row["tokens_per_s"].items()}
    ratios = {}
    for key, spread in row["ratios"].items():
        a, b = key.split(" / ")
        ratios[key] = {"measured": spread["median"], "measured_range": [spread["min"],
                                                                        spread["max"]],
                       "predicted": simulated[a] / simulated[b]}
    out = {"source": source, "trajectories": row["trajectories"],
           "kv_pressure": row["kv_pressure"],
           "tokens_per_s": {n: {"measured": measured[n], "predicted": simulated[n]}
                            for n in measured},
           "ratios": ratios,
           "tokens_per_s_error": {n: simulated[n] / measured[n] - 1 for n in measured},
           "ratio_error": {k: v["predicted"] / v["measured"] - 1 for k, v in ratios.items()}}
    print(f"{source}: {row['trajectories']} trajectories, KV pressure {row['kv_pressure']:.0%}: "
          + ", ".join(f"{k} measured {v['measured']:.2f}x predicted {v['predicted']:.2f}x"
                      for k, v in ratios.items()))
    return out


if __name__ == "__main__":
    sys.exit(main())
