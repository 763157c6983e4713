"""`perfbox worker`: the rollout worker's gRPC service (RolloutService, ToolCache) beside a
node's tool service, on the engine `--engine` names."""

from __future__ import annotations

import argparse
from typing import Any

from perfbox.cli.common import add_client_auth_flags, client_options, err_console
from perfbox.cli.rollout import (check_engine_flags, engine_choice_flags, engine_flags,
                                 engine_threads)


def cmd_worker(args: argparse.Namespace) -> int:
    """Serves RolloutService and the ToolCache until SIGTERM/SIGINT."""
    import signal
    import threading

    from perfbox.client import ToolClient
    from perfbox.inference import workload
    from perfbox.inference.rollout_backends import make_task_driver
    from perfbox.inference.task_service import TaskRunner
    from perfbox.inference.workload_tools import ToolBridge
    from perfbox.inference.rollout_server import create_worker
    from perfbox.sandbox.metrics import serve_metrics

    engine_args = check_engine_flags(args)
    client = ToolClient(args.tool_server, timeout_s=600, **client_options(args, remote=True))
    bridge = ToolBridge(client, workload.load().problems)
    backend = _backend(args, engine_args, bridge.run)
    tasks = TaskRunner(None, client, max_live=args.max_live, make_driver=make_task_driver(
        args.engine, args.model, backend, args.kv_slots, engine_threads(args), engine_args))
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


def _backend(args: argparse.Namespace, engine_args: dict[str, Any], run_tool: Any) -> Any:
    """The worker's engine: a step engine per rollout, or a session engine (vLLM) loaded once
    (this takes a while for a large model: the port opens when it is ready; deploy/ gives it a
    startupProbe)."""
    import contextlib

    from perfbox.inference import engines
    from perfbox.inference.rollout_backends import make_backend

    loading = (err_console.status(f"starting {args.engine} with {args.model}")
               if engines.get(args.engine).kind == "session" else contextlib.nullcontext())
    with loading:
        return make_backend(args.engine, args.model, run_tool, engine_threads(args),
                            engine_args)


def add_commands(sub: Any) -> None:
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
    engine_choice_flags(worker)
    engine_flags(worker)
    worker.set_defaults(func=cmd_worker)
