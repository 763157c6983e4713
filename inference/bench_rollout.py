"""The rollout benchmark: every mode on the same workload, side by side, at several
concurrencies, on the embedded engine and a real tool service.

Steps, per concurrency C:
  1. C trajectories replicated from the workload, KV slots for `kv_fraction` of them (RL
     rollouts oversubscribe the KV cache; 1.0 means memory for all).
  2. Each mode runs the same trajectories on a fresh engine (replay: forced decoding, so the
     same tokens are decoded and the same tools are called in every mode).
  3. Measured: wall time, generated tokens/s, prefill and re-prefill tokens, engine idle time,
     speculation hits/misses and wasted tool time; and the analytic model's parameters: G (turn
     generation time), T (tool time), o (per re-submission overhead), phi (prefill seconds per
     token), delta (decode seconds per token), alpha (hit rate).
  4. The analytic model's predicted speedup of resident+speculate over resubmit next to the
     measured one (see predicted_speedup).
A short greedy free-generation run in every mode checks that outputs are identical.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from perfbox.inference import workload as W
from perfbox.inference.rollout import Mode, Rollout, RolloutConfig, RolloutStats

ProgressFn = Callable[[str], None]


def _engine(slots: int, threads: int, model: str | None) -> Any:
    from perfbox.inference.engines.llama_cpp import LlamaCppEngine

    return LlamaCppEngine(model, num_slots=slots, ctx_per_seq=4096, threads=threads)


def run_mode(run_tool: Callable[..., Any], mode: Mode, trajectories: list[W.Trajectory],
             slots: int, threads: int, model: str | None, **config: Any) -> RolloutStats:
    engine = _engine(slots, threads, model)
    try:
        return Rollout(engine, run_tool, RolloutConfig(mode=mode, **config)).run(trajectories)
    finally:
        engine.close()


def parameters(stats: RolloutStats) -> dict[str, float | None]:
    """The analytic model's inputs as measured in one run."""
    turns = [g for r in stats.results for g in r.turn_generation_s]
    tools = [c.tool_s for r in stats.results for c in r.calls]
    claims = stats.spec_hits + stats.spec_misses
    resubmissions = sum(len(r.calls) for r in stats.results)
    decode_tokens = max(1, stats.generated_tokens)
    return {
        "G_s": statistics.fmean(turns) if turns else None,
        "T_s": statistics.fmean(tools) if tools else None,
        "g_s": 0.0,  # early launch and follow-on need no draft generation
        "o_s": stats.request_overhead_s / resubmissions if resubmissions else 0.0,
        "phi_s_per_token": stats.prefill_s / stats.prefill_tokens if stats.prefill_tokens
        else None,
        "delta_s_per_token": stats.decode_s / decode_tokens,
        "alpha": stats.spec_hits / claims if claims else None,
        "turns_per_trajectory": statistics.fmean(len(r.calls) for r in stats.results),
    }


def predicted_speedup(base: dict[str, Any], spec: dict[str, Any], concurrency: int
                      ) -> dict[str, float | None]:
    """The analytic model's speedup of resident+speculate over resubmit, from the measured
    parameters of the two runs (summary rows):

    - client side (the paper's): per trajectory of N turns, T_std = N(G+T) plus its share of
      re-prefill and N*o; T_spec = alpha*N*max(G, g+T) + (1-alpha)*N*(G+T) plus its re-prefill;
    - engine side: one engine serves every trajectory, so its time is the run's:
      wall_spec = wall_resubmit - phi * (re-prefilled tokens saved) - K*o - alpha * idle_resubmit
      (re-prefill and re-submission overhead removed, tool waits the engine idled through hidden
      at the hit rate).
    On a batch the engine side is the one that applies: re-prefilling one trajectory delays all."""
    p, s = base["parameters"], spec["parameters"]
    out: dict[str, float | None] = {"client_side": None, "engine_side": None}
    if not p["G_s"] or p["T_s"] is None:
        return out
    n = float(p["turns_per_trajectory"] or 0)
    G, T, o = float(p["G_s"]), float(p["T_s"]), float(p["o_s"] or 0.0)
    phi = float(p["phi_s_per_token"] or 0.0)
    alpha = float(s["alpha"] or 0.0)
    standard = n * (G + T) + phi * base["reprefill_tokens"] / concurrency + n * o
    speculative = alpha * n * max(G, T) + (1 - alpha) * n * (G + T) + \
        phi * spec["reprefill_tokens"] / concurrency
    out["client_side"] = standard / speculative if speculative else None
    calls = n * concurrency
    predicted_wall = base["wall_s"] - phi * (base["reprefill_tokens"] - spec["reprefill_tokens"]) \
        - calls * o - alpha * base["idle_s"]
    out["engine_side"] = base["wall_s"] / predicted_wall if predicted_wall > 0 else None
    return out


def identical_outputs(run_tool: Callable[..., Any], threads: int, model: str | None) -> bool:
    """Greedy free generation in every mode: the same tokens?"""
    trajectories = W.replicate(W.load(), 2)
    tokens = []
    for mode in Mode:
        stats = run_mode(run_tool, mode, trajectories, 2, threads, model, forced=False,
                         max_turn_tokens=48, max_turns=2)
        tokens.append([r.tokens for r in sorted(stats.results, key=lambda r: r.id)])
    return all(t == tokens[0] for t in tokens)


def summary_row(stats: RolloutStats) -> dict[str, Any]:
    return {"wall_s": stats.wall_s, "tokens_per_s": stats.tokens_per_s,
            "generated_tokens": stats.generated_tokens,
            "prefill_tokens": stats.prefill_tokens,
            "reprefill_tokens": stats.reprefill_tokens, "forked_tokens": stats.forked_tokens,
            "idle_s": stats.idle_s,
            "spec_hits": stats.spec_hits, "spec_misses": stats.spec_misses,
            "spec_launched": stats.spec_launched, "wasted_tool_s": stats.wasted_tool_s,
            "evictions": stats.evictions, "steps": stats.steps,
            "mean_trajectory_s": statistics.fmean(r.wall_s for r in stats.results),
            "parameters": parameters(stats),
            # per call: the cluster simulator draws tool times from these rather than from a
            # fitted distribution
            "tool_calls": [{"tool": c.name, "tool_s": round(c.tool_s, 4)}
                           for r in stats.results for c in r.calls]}


def workload_tokens(workload: W.Workload, model: str | None) -> dict[str, Any]:
    """Prompt, turn and answer lengths in the engine's tokens (the simulator's inputs)."""
    engine = _engine(1, 1, model)
    try:
        def count(text: str) -> int:
            return len(engine.tokenize(text))

        trajs = workload.trajectories
        turns = [count(x) for t in trajs for x in t.turns[:-1]]
        return {"prompt": statistics.fmean(count(t.prompt) for t in trajs),
                "turn": statistics.fmean(turns), "turns": turns,
                "answer": statistics.fmean(count(t.turns[-1]) for t in trajs)}
    finally:
        engine.close()


def run(run_tool: Callable[..., Any], concurrencies: list[int], kv_fraction: float,
        threads: int, model: str | None, progress: ProgressFn,
        checkpoint: Callable[[dict[str, Any]], None] = lambda result: None,
        check_identity: bool = True, group_size: int = 1,
        shared_turns: int = 0) -> dict[str, Any]:
    """Every mode at every concurrency; `checkpoint` gets the result so far after each
    concurrency (long runs are not lost to an interruption). group_size > 1 runs GRPO groups
    (samples of a prompt fork its KV; `shared_turns` leading turns identical in a group)."""
    workload = W.load()
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "machine": {"cpus": os.cpu_count(), "host": platform.node(),
                                       "python": platform.python_version(),
                                       "engine": "llama.cpp (llama-cpp-python), CPU",
                                       "threads": threads},
                           "workload": str(W.DEFAULT_WORKLOAD.name), "kv_fraction": kv_fraction,
                           "draft": "none: early launch + follow-on only (alpha measured)",
                           "group_size": group_size, "shared_turns": shared_turns,
                           "tokens": workload_tokens(workload, model), "runs": []}
    for c in concurrencies:
        trajectories = W.replicate(workload, c, group_size, shared_turns)
        slots = max(1, round(c * kv_fraction))
        row: dict[str, Any] = {"concurrency": c, "kv_slots": slots, "modes": {}}
        stats = {}
        for mode in Mode:
            progress(f"concurrency {c}, {slots} KV slots: {mode.value} ...")
            stats[mode] = run_mode(run_tool, mode, trajectories, slots, threads, model)
            row["modes"][mode.value] = summary_row(stats[mode])
            progress(f"  {mode.value}: {stats[mode].wall_s:.1f} s, "
                     f"{stats[mode].tokens_per_s:.1f} tokens/s, re-prefilled "
                     f"{stats[mode].reprefill_tokens}, idle {stats[mode].idle_s:.1f} s, "
                     f"hits {stats[mode].spec_hits}")
        base, spec = stats[Mode.RESUBMIT], stats[Mode.SPECULATE]
        row["speedup_tokens_per_s"] = spec.tokens_per_s / base.tokens_per_s
        row["measured_speedup_wall"] = base.wall_s / spec.wall_s
        row["predicted_speedup"] = predicted_speedup(row["modes"][Mode.RESUBMIT.value],
                                                     row["modes"][Mode.SPECULATE.value], c)
        engine_side = row["predicted_speedup"]["engine_side"]
        row["prediction_error"] = (row["measured_speedup_wall"] / engine_side - 1
                                   if engine_side else None)
        row["reprefill_cut"] = (1 - spec.reprefill_tokens / base.reprefill_tokens
                                if base.reprefill_tokens else None)
        out["runs"].append(row)
        checkpoint(out)
    if check_identity:
        progress("greedy free generation in every mode (identity check) ...")
        out["outputs_identical"] = identical_outputs(run_tool, threads, model)
    # the flat layout: per mode figures of the largest concurrency
    last = out["runs"][-1]["modes"]
    out.update({mode: {k: last[mode][k] for k in ("wall_s", "tokens_per_s", "prefill_tokens",
                                                  "idle_s", "spec_hits", "spec_misses")}
                for mode in last})
    return out


def plot(result: dict[str, Any], path: Path) -> bool:
    """A PNG of tokens/s and re-prefilled tokens per mode and concurrency (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for mode in [m.value for m in Mode]:
        xs = [r["concurrency"] for r in result["runs"]]
        axes[0].plot(xs, [r["modes"][mode]["tokens_per_s"] for r in result["runs"]], "o-",
                     label=mode)
        axes[1].plot(xs, [r["modes"][mode]["reprefill_tokens"] for r in result["runs"]], "o-",
                     label=mode)
    axes[0].set(xlabel="concurrent trajectories", ylabel="generated tokens/s")
    axes[1].set(xlabel="concurrent trajectories", ylabel="re-prefilled tokens")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


def save(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=lambda o: asdict(o)) + "\n")
