"""`perfbox bench rollout`: every rollout mode side by side under one KV token budget, at
several pressures and repetitions, with progress on the terminal and in a log file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from perfbox.cli.common import (add_service_flags, client_options, console, err_console,
                                service_target)
from perfbox.cli.rollout import (check_group_flags, engine_check, engine_flags, engine_threads,
                                 group_flags)


def workload_path(name: str) -> Path:
    """--workload: a bundled workload's short name or a JSON file."""
    from perfbox.inference import workload

    bundled = {"kernel-agent": workload.DEFAULT_WORKLOAD,
               "tools": workload.WORKLOADS / "kernel_agent_tools.json"}
    path = bundled.get(name, Path(name))
    if not path.is_file():
        raise ValueError(f"--workload {name}: no such file; bundled: {', '.join(bundled)}")
    return path


def cmd_bench_rollout(args: argparse.Namespace) -> int:
    from perfbox.bench import rollout as bench_rollout
    from perfbox.client import ToolClient
    from perfbox.inference import workload

    engine_check()
    check_group_flags(args)
    trajectories = args.trajectories or ([2, 4] if args.quick else [8, 32])
    pressures = args.pressure or ([1.0, 0.5] if args.quick else [1.0, 0.75, 0.5, 0.25])
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    if reps < 1 or any(c < 1 for c in trajectories):
        raise ValueError("--reps and --trajectories must be at least 1")
    if any(not 0 < p <= 1.0 for p in pressures):
        raise ValueError("--pressure is KV budget / live context: give a value in (0, 1]")
    path = workload_path(args.workload)
    out = Path(args.out)
    log_path = Path(args.log) if args.log else out.with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log, \
            service_target(args, ("torch",), workers=2, nice=args.tool_nice) as target, \
            ToolClient(target, timeout_s=600, **client_options(args)) as client:
        from perfbox.inference.workload_tools import ToolBridge

        def progress(line: str) -> None:  # the terminal and the log file alike
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
            log.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            log.flush()

        bridge = ToolBridge(client, workload.load(path).problems)
        result = bench_rollout.run(bridge.run, trajectories, pressures, reps, engine_threads(args),
                                   args.model, progress,
                                   checkpoint=lambda partial: bench_rollout.save(partial, out),
                                   workload_path=path, draft_alpha=args.draft_alpha,
                                   check_identity=not args.no_identity_check,
                                   group_size=args.group_size, shared_turns=args.shared_turns)
    result["command"] = "perfbox bench rollout " + " ".join(
        [f"--workload {args.workload}"] + [f"--trajectories {c}" for c in trajectories]
        + [f"--pressure {p}" for p in pressures]
        + [f"--reps {reps}", f"--threads {engine_threads(args)}", f"--tool-nice {args.tool_nice}",
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


def add_commands(sub: Any) -> None:
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
    group_flags(br)
    engine_flags(br)
    add_service_flags(br)
    br.set_defaults(func=cmd_bench_rollout)
