"""`perfbox serve`, `perfbox device-info` and `perfbox mcp`: the tool service itself, what a
node has, and the tools over the Model Context Protocol."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from perfbox.cli.common import (add_backend_flags, add_service_flags, connect, console,
                                print_json, service_target)
from perfbox.exit_codes import ExitCode


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def cmd_serve(args: argparse.Namespace) -> int:
    from perfbox.sandbox.config import ServerConfig
    from perfbox.sandbox.docker_backend import DockerSettings
    from perfbox.sandbox.quota import QuotaConfig
    from perfbox.sandbox.server import serve

    config = ServerConfig(
        address=args.address, workers=args.workers, backend=args.backend,
        allow_unsafe_process_backend=args.allow_unsafe_process_backend, warm=not args.cold,
        preload=tuple(m for m in args.preload.split(",") if m),
        cache_dir=None if args.no_cache else (Path(args.cache_dir) if args.cache_dir else
                                              ServerConfig().cache_dir),
        cache_max_bytes=ServerConfig.cache_max_bytes if args.cache_max_bytes is None else
        args.cache_max_bytes,
        max_queue=args.max_queue, grace_s=args.grace_s, default_limits=_serve_limits(args),
        nice=args.nice, metrics_address=args.metrics_address, use_cgroups=not args.no_cgroups,
        metrics_token_file=_path(args.metrics_token_file),
        docker=DockerSettings(url=args.docker_url, image=args.docker_image,
                              python=args.docker_python, bind_host=args.docker_bind_host,
                              cpus=args.docker_cpus),
        tokens_file=_path(args.tokens_file), tls_cert=_path(args.tls_cert),
        tls_key=_path(args.tls_key), tls_client_ca=_path(args.tls_client_ca),
        quota=QuotaConfig(rate_per_s=args.quota_rate, burst=args.quota_burst,
                          max_inflight=args.quota_inflight),
    )
    serve(config)
    return ExitCode.OK


def _serve_limits(args: argparse.Namespace) -> Any:
    from perfbox.sandbox.limits import DEFAULT_LIMITS, JobLimits

    d = DEFAULT_LIMITS
    return JobLimits(
        wall_time_ms=int(args.wall_time_s * 1000) if args.wall_time_s else d.wall_time_ms,
        cpu_time_ms=int(args.cpu_time_s * 1000) if args.cpu_time_s else d.cpu_time_ms,
        memory_bytes=int(args.memory_mb * 2**20) if args.memory_mb else d.memory_bytes,
        max_processes=args.max_processes or d.max_processes,
        max_file_bytes=d.max_file_bytes,
        max_output_bytes=int(args.max_output_mb * 2**20) if args.max_output_mb
        else d.max_output_bytes,
    )


def cmd_mcp(args: argparse.Namespace) -> int:
    """An MCP server over the tools: stdio (stdout carries only the protocol) or HTTP."""
    try:
        from perfbox import mcp_server
    except ImportError as e:
        raise ValueError(f"perfbox mcp needs the MCP SDK: pip install 'perfbox[mcp]' ({e})"
                         ) from None
    from perfbox.integrations.toolbox import Problem, Toolbox

    problem = None
    if args.problem:
        path = Path(args.problem)
        if not path.is_file():
            raise ValueError(f"--problem {path}: no such file (a KernelBench reference module)")
        problem = Problem.of(path.read_text())
    with service_target(args, ("torch",), workers=2) as target, \
            connect(target, args) as client:
        toolbox = Toolbox(target, client=client)
        server = mcp_server.build_server(toolbox, problem)
        if args.transport == "http":
            mcp_server.serve_http(server, args.host, args.port, args.path)
        else:
            import anyio

            anyio.run(mcp_server.serve_stdio, server)
    return ExitCode.OK


def cmd_device_info(args: argparse.Namespace) -> int:
    if args.server:
        with connect(args.server, args) as client:
            response = client.device_info()
    else:  # no sandbox needed to ask NVML about this machine
        from perfbox.sandbox.device import device_info

        response = device_info()
    if args.json:
        print_json(response)
        return ExitCode.OK
    console.print(f"[bold]{response.node}[/]: {response.message}")
    if response.gpus:
        table = Table(title="GPUs", title_justify="left")
        for column in ("#", "name", "cc", "SMs", "memory GiB", "SM MHz", "mem MHz", "temp C"):
            table.add_column(column)
        for g in response.gpus:
            table.add_row(str(g.index), g.name, g.compute_capability, str(g.sm_count),
                          f"{g.memory_total_bytes / 2**30:.1f}", str(g.sm_clock_mhz),
                          str(g.memory_clock_mhz), str(g.temperature_c))
        console.print(table)
    table = Table(title="toolchain", title_justify="left")
    for column in ("tool", "version", "path"):
        table.add_column(column)
    for t in response.toolchain:
        table.add_row(t.name, t.version or "[dim]absent[/]", t.path)
    console.print(table)
    return ExitCode.OK


def add_commands(sub: Any) -> None:
    from perfbox.sandbox.docker_backend import DockerSettings

    serve = sub.add_parser("serve", help="run the gRPC tool service",
                           description="Run the gRPC tool service until SIGTERM/SIGINT.")
    serve.add_argument("--log-level", default=argparse.SUPPRESS,
                       choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                       help="same as perfbox --log-level")
    serve.add_argument("--address", default="127.0.0.1:50051",
                       help="HOST:PORT to listen on; port 0 picks one (default 127.0.0.1:50051)")
    serve.add_argument("--workers", type=int, default=2, help="concurrent jobs (default 2)")
    serve.add_argument("--nice", type=int, default=0,
                       help="CPU niceness of workers and jobs, e.g. 10 beside a CPU inference "
                            "engine that should keep priority (default 0)")
    add_backend_flags(serve, "backend")
    serve.add_argument("--cold", action="store_true",
                       help="start a fresh worker per job instead of a warm pool")
    serve.add_argument("--no-cgroups", action="store_true",
                       help="do not use cgroups even where they work: memory is then limited by "
                            "the worker's watchdog (counts the sandbox's processes, tmpfs and "
                            "memfds; a cgroup is the hard bound)")
    serve.add_argument("--preload", default="torch,triton",
                       help="modules warm workers import up front (default torch,triton)")
    serve.add_argument("--cache-dir", help="result cache directory "
                       "(default ~/.cache/perfbox/results)")
    serve.add_argument("--no-cache", action="store_true", help="disable the result cache")
    serve.add_argument("--cache-max-bytes", type=int, metavar="BYTES",
                       help="bound of the result cache; least-recently-used entries are "
                            "evicted past it (default 1 GiB)")
    serve.add_argument("--max-queue", type=int, default=4096,
                       help="queued jobs before RESOURCE_EXHAUSTED (default 4096)")
    serve.add_argument("--grace-s", type=float, default=30.0,
                       help="on SIGTERM, how long running jobs may finish (default 30)")
    serve.add_argument("--wall-time-s", type=float, help="default job wall-time limit (60)")
    serve.add_argument("--cpu-time-s", type=float, help="default job CPU-time limit (120)")
    serve.add_argument("--memory-mb", type=float, help="default job memory limit (4096)")
    serve.add_argument("--max-processes", type=int, help="default job process limit (128)")
    serve.add_argument("--max-output-mb", type=float, help="default job output limit (8)")
    serve.add_argument("--tokens-file", metavar="FILE",
                       help="bearer tokens, one 'CLIENT_ID TOKEN' per line: calls without a "
                            "valid token get UNAUTHENTICATED (health checks stay open)")
    serve.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate")
    serve.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    serve.add_argument("--tls-client-ca", metavar="PEM",
                       help="mutual TLS: clients need a certificate signed by this CA")
    serve.add_argument("--quota-rate", type=float, default=0.0,
                       help="calls per second per client (0: unlimited); over it, "
                            "RESOURCE_EXHAUSTED with the wait in 'retry-delay-ms'")
    serve.add_argument("--quota-burst", type=int, default=0,
                       help="calls a client may start at once above the rate (default: one "
                            "second's worth)")
    serve.add_argument("--quota-inflight", type=int, default=0,
                       help="calls in flight per client (0: unlimited)")
    serve.add_argument("--docker-url", default="",
                       help="--backend docker: the Docker API (default $DOCKER_HOST or the "
                            "local socket; podman: unix:///run/podman/podman.sock)")
    serve.add_argument("--docker-image", default=DockerSettings.image,
                       help=f"--backend docker: the job image (default {DockerSettings.image})")
    serve.add_argument("--docker-python", default=DockerSettings.python,
                       help="--backend docker: the Python inside the image")
    serve.add_argument("--docker-bind-host", action="store_true",
                       help="--backend docker: run this host's Python and CUDA toolkit, bound "
                            "read-only, in a bare image (development, CI)")
    serve.add_argument("--docker-cpus", type=float, default=1.0,
                       help="--backend docker: CPU limit per job container (default 1)")
    serve.add_argument("--metrics-address", metavar="HOST:PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics (no HOST: "
                            "127.0.0.1)")
    serve.add_argument("--metrics-token-file", metavar="FILE",
                       help="a file holding a token that /metrics requires as "
                            "'Authorization: Bearer <token>' (otherwise 401)")
    serve.add_argument("--log-format", choices=("text", "json"), default="text",
                       help="json: one JSON object per line with the client id and, for "
                            "answers, request_id, job_id, tool, status and total_ms")
    serve.set_defaults(func=cmd_serve)

    mcp = sub.add_parser("mcp", help="serve the tools over the Model Context Protocol",
                         description="An MCP server over the tools (the official mcp SDK): "
                                     "stdio by default (what an MCP client starts), or "
                                     "streamable HTTP. check/bench/profile/sanitize take the "
                                     "problem as a 'reference' argument unless --problem "
                                     "binds one.")
    mcp.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                     help="default: stdio")
    mcp.add_argument("--host", default="127.0.0.1", help="HTTP: address to listen on")
    mcp.add_argument("--port", type=int, default=8765, help="HTTP: port (default 8765)")
    mcp.add_argument("--path", default="/mcp", help="HTTP: endpoint path (default /mcp)")
    mcp.add_argument("--problem", metavar="FILE",
                     help="a KernelBench reference module every check/bench acts on")
    add_service_flags(mcp)
    mcp.set_defaults(func=cmd_mcp)

    info = sub.add_parser("device-info", help="GPUs, driver and toolchain of a node")
    info.add_argument("--server", metavar="HOST:PORT", help="ask a service (default: this machine)")
    info.add_argument("--json", action="store_true", help="print the response as JSON")
    info.set_defaults(func=cmd_device_info)
