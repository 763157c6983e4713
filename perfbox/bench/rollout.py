"""The rollout benchmark: every mode on the same workload, side by side, under one KV budget in
tokens at several pressures, repeated with the mode order rotated, on the embedded engine and a
real tool service.

Steps, per number of trajectories C:
  1. Size the work: each distinct trajectory's tool calls run once (this also warms the tool
     service), and every replica's final context is counted in the engine's tokens; the sum is
     the *live context* (what every trajectory would hold at its end).
  2. Per KV pressure p (budget = p x live context; 1.0 means room for everything): each
     variant runs the same trajectories on a fresh engine with that budget (replay: forced
     decoding, so the same tokens are decoded and the same tools called in every mode);
     `resubmit` gets the token-level prefix cache with LRU eviction over the same budget.
  3. Steps 2 is repeated `reps` times, the variants' order rotated each time (no mode always
     runs first on a cold machine); ratios are paired within a repetition and reported as their
     median and range over the repetitions.
  4. Measured per run: wall time, generated tokens/s, prefill, re-prefill, preemptions, engine
     idle time, speculation hits/misses and wasted tool time, and the decomposition of the
     resubmit/speculate wall-time difference into its parts (decomposition()).
Every results file carries `conditions`: commit, package versions, model hash, CPUs, engine
threads, and the load average before and after.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from perfbox.inference import workload as W
from perfbox.inference.rollout import Rollout
from perfbox.inference.rollout_types import Mode, RolloutConfig, RolloutStats
from perfbox.inference.tool_call_parser import ToolCallParser

ProgressFn = Callable[[str], None]
CTX_MARGIN_TOKENS = 512  # a stream's context beyond the longest sized trajectory


@dataclass(frozen=True)
class Variant:
    """One column of the comparison: a mode, and for a draft run the emulated hit rate."""

    name: str
    mode: Mode
    draft_alpha: float | None = None  # emulated draft model's hit rate (None: no draft)


BASE_VARIANTS = (Variant("resubmit", Mode.RESUBMIT), Variant("resident", Mode.RESIDENT),
                 Variant("resident+speculate", Mode.SPECULATE))
DRAFT = "resident+speculate+draft"


def variants(draft_alpha: float | None) -> list[Variant]:
    extra = [Variant(DRAFT, Mode.SPECULATE, draft_alpha)] if draft_alpha is not None else []
    return [*BASE_VARIANTS, *extra]


def _engine(streams: int, threads: int, model: str | None, ctx_per_seq: int = 4096) -> Any:
    from perfbox.inference.engines.llama_cpp import LlamaCppEngine

    return LlamaCppEngine(model, num_slots=streams, ctx_per_seq=ctx_per_seq, threads=threads)


def run_mode(run_tool: Callable[..., Any], mode: Mode, trajectories: list[W.Trajectory],
             slots: int, threads: int, model: str | None, ctx_per_seq: int = 4096,
             **config: Any) -> RolloutStats:
    """One mode on a fresh engine with `slots` streams (config: RolloutConfig fields, e.g.
    kv_budget_tokens)."""
    engine = _engine(slots, threads, model, ctx_per_seq)
    try:
        return Rollout(engine, run_tool, RolloutConfig(mode=mode, **config)).run(trajectories)
    finally:
        engine.close()


def live_contexts(trajectories: list[W.Trajectory], run_tool: Callable[..., Any],
                  tokenize: Callable[[str], list[int]],
                  template: W.ChatTemplate = W.ChatTemplate()) -> list[int]:
    """Every trajectory's final context in tokens: its prompt, turns and tool outputs, the
    outputs from running each distinct source trajectory's calls once (replicas differ from
    their source only by a comment line in the submitted code, so their outputs are the same
    length to within a token or two)."""
    outputs: dict[str, list[str]] = {}
    for traj in trajectories:
        source = traj.id.rsplit("-", 1)[0]
        if source not in outputs:
            outputs[source] = [run_tool(call).text for turn in traj.turns[:-1]
                               for call in ToolCallParser().feed(turn).closed[:1]]
    sizes = []
    for traj in trajectories:
        outs = outputs[traj.id.rsplit("-", 1)[0]]
        n = len(tokenize(traj.prompt)) + sum(len(tokenize(t)) for t in traj.turns)
        sizes.append(n + sum(len(tokenize(template.tool_response(o))) for o in outs))
    return sizes


def spread(values: list[float]) -> dict[str, Any]:
    """Median and range over repetitions (values kept: a reader can see each)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def parameters(stats: RolloutStats) -> dict[str, float | None]:
    """The figures one run measured: G (turn generation time), T (tool time), o (per
    re-submission overhead), phi (prefill seconds per token), delta (decode seconds per token),
    the claim hit rate, and the emulated draft's alpha (the chance that a call is launched at
    the *start* of its turn: what the cluster simulator's alpha means; early launches a few
    tokens before the end tag and follow-ons are hits too, but hide almost nothing)."""
    turns = [g for r in stats.results for g in r.turn_generation_s]
    tools = [c.tool_s for r in stats.results for c in r.calls]
    claims = stats.spec_hits + stats.spec_misses
    resubmissions = sum(len(r.calls) for r in stats.results)
    decode_tokens = max(1, stats.generated_tokens)
    return {
        "G_s": statistics.fmean(turns) if turns else None,
        "T_s": statistics.fmean(tools) if tools else None,
        "o_s": stats.request_overhead_s / resubmissions if resubmissions else 0.0,
        "phi_s_per_token": stats.prefill_s / stats.prefill_tokens if stats.prefill_tokens
        else None,
        "delta_s_per_token": stats.decode_s / decode_tokens,
        "hit_rate": stats.spec_hits / claims if claims else None,
        "draft_alpha": stats.draft_alpha,
        "turns_per_trajectory": statistics.fmean(len(r.calls) for r in stats.results),
    }


def step_model(log: list[tuple[int, int, float]]) -> dict[str, float] | None:
    """The engine's step cost fitted to one run's forward passes by least squares:
    seconds = overhead + per decoding sequence x decode seqs + per token x prefill tokens (the
    cluster simulator's cost model; fitted on calibration runs, used to predict others)."""
    import numpy as np

    if len(log) < 10:
        return None
    x = np.array([[1.0, d, p] for d, p, _ in log])
    y = np.array([t for _, _, t in log])
    (a, b, c), *_ = np.linalg.lstsq(x, y, rcond=None)
    return {"step_overhead_s": float(max(a, 0.0)), "decode_s_per_seq": float(max(b, 1e-6)),
            "prefill_s_per_token": float(max(c, 0.0)), "steps": len(log)}


def decomposition(base: dict[str, Any], other: dict[str, Any]) -> dict[str, float]:
    """Where the wall-time difference between two runs of the same work went, from the two
    runs' own measurements (an account of the difference, not a prediction of it): re-prefill
    saved (phi x tokens), re-submission overhead saved, engine idle time saved, and what these
    leave unexplained."""
    p = base["parameters"]
    phi = float(p["phi_s_per_token"] or 0.0)
    calls = len(base.get("tool_calls", []))  # each a re-submission in resubmit
    parts = {"reprefill_s": phi * (base["reprefill_tokens"] - other["reprefill_tokens"]),
             "overhead_s": calls * float(p["o_s"] or 0.0),
             "idle_s": base["idle_s"] - other["idle_s"]}
    parts["unexplained_s"] = base["wall_s"] - other["wall_s"] - sum(parts.values())
    parts["wall_difference_s"] = base["wall_s"] - other["wall_s"]
    return parts


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
    contexts = sum(r.context_tokens for r in stats.results)
    return {"wall_s": stats.wall_s, "tokens_per_s": stats.tokens_per_s,
            "generated_tokens": stats.generated_tokens,
            "prefill_tokens": stats.prefill_tokens,
            "reprefill_tokens": stats.reprefill_tokens, "forked_tokens": stats.forked_tokens,
            "idle_s": stats.idle_s,
            "spec_hits": stats.spec_hits, "spec_misses": stats.spec_misses,
            "spec_launched": stats.spec_launched, "wasted_tool_s": stats.wasted_tool_s,
            "evictions": stats.evictions, "cache_evictions": stats.cache_evictions,
            "preemptions": stats.preemptions, "steps": stats.steps,
            "kv_budget_tokens": stats.kv_budget_tokens, "peak_kv_tokens": stats.peak_kv_tokens,
            "context_tokens": contexts,  # the trajectories' final contexts, summed
            "kv_pressure_actual": stats.kv_budget_tokens / contexts if contexts else None,
            "mean_trajectory_s": statistics.fmean(r.wall_s for r in stats.results),
            "parameters": parameters(stats), "step_model": step_model(stats.step_log),
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
        early = [early_launch_tokens(engine, x) for t in trajs for x in t.turns[:-1]]
        return {"prompt": statistics.fmean(count(t.prompt) for t in trajs),
                "turn": statistics.fmean(turns), "turns": turns,
                "answer": statistics.fmean(count(t.turns[-1]) for t in trajs),
                "early_launch": statistics.fmean(early) if early else 0.0}
    finally:
        engine.close()


def early_launch_tokens(engine: Any, turn: str) -> int:
    """How many of a turn's tokens are decoded after its call could be launched (its JSON
    object closed, before the end tag): the head start early launch gives a tool, in decode
    steps, measured the way the rollout sees it (the engine's pieces through the parser)."""
    tokens = engine.tokenize(turn)
    parser = ToolCallParser()
    for i, token in enumerate(tokens):
        if parser.feed(engine.detokenize([token])).arguments_complete:
            return len(tokens) - i - 1
    return 0


def conditions(threads: int, model: str | None) -> dict[str, Any]:
    """The run conditions (perfbox.run_conditions) plus the engine's: model file and hash,
    threads."""
    from perfbox.inference.engines.llama_cpp import default_model_path
    from perfbox.run_conditions import conditions as common, file_sha256

    path = Path(model) if model else default_model_path()
    return {**common(("perfbox", "llama_cpp_python", "torch")),
            "engine": "llama.cpp (llama-cpp-python), CPU", "engine_threads": threads,
            "model": path.name, "model_sha256": file_sha256(path)}


def _ratios(rep: dict[str, Any]) -> dict[str, float]:
    """Per repetition: tokens/s of each mode over the baseline it is meant to beat."""
    tps = {name: row["tokens_per_s"] for name, row in rep["modes"].items()}
    pairs = [("resident", "resubmit"), ("resident+speculate", "resubmit"),
             ("resident+speculate", "resident"), (DRAFT, "resubmit"), (DRAFT, "resident")]
    return {f"{a} / {b}": tps[a] / tps[b] for a, b in pairs if a in tps and b in tps}


def _summarise(row: dict[str, Any]) -> None:
    """Spread over repetitions per mode and per ratio; the median repetition's rows as the
    row's `modes` (real runs, not averages: what the cluster simulator is fitted to)."""
    names = list(row["reps"][0]["modes"])
    row["tokens_per_s"] = {n: spread([r["modes"][n]["tokens_per_s"] for r in row["reps"]])
                           for n in names}
    ratios = [_ratios(r) for r in row["reps"]]
    row["ratios"] = {k: spread([r[k] for r in ratios]) for k in ratios[0]}
    row["modes"] = {}
    for n in names:
        runs = sorted(row["reps"], key=lambda r: r["modes"][n]["tokens_per_s"])
        row["modes"][n] = runs[len(runs) // 2]["modes"][n]
    base, spec = row["modes"]["resubmit"], row["modes"]["resident+speculate"]
    row["decomposition"] = decomposition(base, spec)


def run(run_tool: Callable[..., Any], trajectories: list[int], pressures: list[float],
        reps: int, threads: int, model: str | None, progress: ProgressFn,
        checkpoint: Callable[[dict[str, Any]], None] = lambda result: None,
        workload_path: Path = W.DEFAULT_WORKLOAD, draft_alpha: float | None = None,
        check_identity: bool = True, group_size: int = 1,
        shared_turns: int = 0) -> dict[str, Any]:
    """Every variant at every (trajectories, pressure), `reps` times with the order rotated;
    `checkpoint` gets the result so far after each run (long runs are not lost to an
    interruption). group_size > 1 runs GRPO groups (samples of a prompt fork its KV;
    `shared_turns` leading turns identical in a group)."""
    if reps < 1 or any(not 0 < p <= 1.0 for p in pressures):
        raise ValueError("reps must be at least 1 and every pressure in (0, 1]")
    workload = W.load(workload_path)
    chosen = variants(draft_alpha)
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "conditions": conditions(threads, model),
                           "workload": workload_path.name, "reps": reps,
                           "variants": [v.name for v in chosen],
                           "draft": (f"emulated: a draft launches each turn's call at its start "
                                     f"with hit rate alpha={draft_alpha} (variant {DRAFT})"
                                     if draft_alpha is not None else "none"),
                           "group_size": group_size, "shared_turns": shared_turns,
                           "tokens": workload_tokens(workload, model), "runs": []}
    for c in trajectories:
        trajs = W.replicate(workload, c, group_size, shared_turns)
        sizer = _engine(1, 1, model)
        try:
            progress(f"{c} trajectories: sizing their contexts (each distinct trajectory's "
                     "tool calls run once) ...")
            sizes = live_contexts(trajs, run_tool, sizer.tokenize)
        finally:
            sizer.close()
        live = sum(sizes)
        ctx = -(-(max(sizes) + CTX_MARGIN_TOKENS) // 256) * 256
        for pressure in pressures:
            budget = max(round(pressure * live), max(sizes) + 64)
            row: dict[str, Any] = {"trajectories": c, "kv_pressure": pressure,
                                   "kv_budget_tokens": budget, "live_context_tokens": live,
                                   "reps": []}
            out["runs"].append(row)
            for rep in range(reps):
                order = chosen[rep % len(chosen):] + chosen[:rep % len(chosen)]
                done: dict[str, Any] = {"order": [v.name for v in order], "modes": {},
                                        "load_avg_before": list(os.getloadavg())}
                row["reps"].append(done)
                for v in order:
                    progress(f"{c} trajectories, KV pressure {pressure:.0%} ({budget} tokens), "
                             f"rep {rep + 1}/{reps}: {v.name} ...")
                    stats = run_mode(run_tool, v.mode, trajs, c, threads, model, ctx,
                                     kv_budget_tokens=budget, draft_alpha=v.draft_alpha,
                                     record_steps=True)
                    done["modes"][v.name] = summary_row(stats)
                    progress(f"  {v.name}: {stats.wall_s:.1f} s, {stats.tokens_per_s:.1f} "
                             f"tokens/s, re-prefilled {stats.reprefill_tokens}, preempted "
                             f"{stats.preemptions}, idle {stats.idle_s:.1f} s, hits "
                             f"{stats.spec_hits}")
                    checkpoint(out)
                done["load_avg_after"] = list(os.getloadavg())
            _summarise(row)
            progress("  " + ", ".join(f"{k} {v['median']:.2f}x [{v['min']:.2f}, {v['max']:.2f}]"
                                      for k, v in row["ratios"].items()))
            checkpoint(out)
    if check_identity:
        progress("greedy free generation in every mode (identity check) ...")
        out["outputs_identical"] = identical_outputs(run_tool, threads, model)
    out["conditions"]["load_avg_after"] = list(os.getloadavg())
    return out


def plot(result: dict[str, Any], path: Path) -> bool:
    """A PNG of each mode's tokens/s against KV pressure, per number of trajectories (median
    and range over repetitions; needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    counts = sorted({r["trajectories"] for r in result["runs"]})
    fig, axes = plt.subplots(1, len(counts), figsize=(5 * len(counts), 4), squeeze=False)
    for ax, c in zip(axes[0], counts):
        rows = sorted((r for r in result["runs"] if r["trajectories"] == c and
                       "tokens_per_s" in r), key=lambda r: r["kv_pressure"])
        for name in result["variants"]:
            xs = [r["kv_pressure"] for r in rows]
            mid = [r["tokens_per_s"][name]["median"] for r in rows]
            err = [[m - r["tokens_per_s"][name]["min"] for m, r in zip(mid, rows)],
                   [r["tokens_per_s"][name]["max"] - m for m, r in zip(mid, rows)]]
            ax.errorbar(xs, mid, yerr=err, marker="o", capsize=3, label=name)
        ax.set(xlabel="KV budget / live context", ylabel="generated tokens/s",
               title=f"{c} trajectories")
        ax.invert_xaxis()
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


def save(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=lambda o: asdict(o)) + "\n")
