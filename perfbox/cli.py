"""The `perfbox` command: serve the tool service, submit kernels, inspect a node.

argparse rather than typer: the command tree is small and argparse keeps the dependency list
short; rich draws the progress and the result tables.
"""

from __future__ import annotations

import argparse
import json
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import grpc
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.exit_codes import ExitCode

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)
_STATUS_STYLE = {pb.OK: "bold green", pb.CANCELLED: "yellow"}
TOOL_NAMES = ("compile", "disasm", "check", "bench", "profile", "sanitize")
_KERNELBENCH_TOOLS = ("check", "bench")


# -- embedded service ------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_server(backend: str, preload: tuple[str, ...], workers: int = 1,
                    allow_unsafe: bool = False, nice: int = 0) -> Iterator[str]:
    """Starts a tool service on a free loopback port for one command; yields its address."""
    from perfbox.sandbox.config import ServerConfig
    from perfbox.sandbox.server import create_server

    config = ServerConfig(address="127.0.0.1:0", workers=workers, backend=backend,
                          allow_unsafe_process_backend=allow_unsafe, preload=preload, grace_s=5,
                          nice=nice)
    server, port = create_server(config)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace_s=5)


@contextlib.contextmanager
def service_target(args: argparse.Namespace, preload: tuple[str, ...], workers: int = 1,
                   nice: int = 0) -> Iterator[str]:
    if args.server:
        yield args.server
        return
    with err_console.status("starting an embedded perfbox service..."):
        stack = contextlib.ExitStack()
        target = stack.enter_context(embedded_server(args.backend, preload, workers,
                                                     allow_unsafe=args.allow_unsafe_process_backend,
                                                     nice=nice))
    with stack:
        yield target


def client_options(args: argparse.Namespace, remote: bool | None = None) -> dict[str, Any]:
    """ToolClient keyword arguments from --token/--tls-*, for a remote service (by default:
    when --server is given; the embedded service is plaintext on loopback, without tokens)."""
    from perfbox.client import tls_credentials

    if not (getattr(args, "server", None) if remote is None else remote):
        return {}
    token = getattr(args, "token", None) or os.environ.get("PERFBOX_TOKEN") or None
    ca, cert, key = (getattr(args, f"tls_{k}", None) for k in ("ca", "cert", "key"))
    for path in (ca, cert, key):
        if path and not Path(path).is_file():
            raise ValueError(f"{path}: no such file (a TLS PEM file)")
    credentials = tls_credentials(ca, cert, key) if (ca or cert or key) else None
    return {"token": token, "credentials": credentials}


def _client(target: str, args: argparse.Namespace | None = None) -> Any:
    from perfbox.client import ToolClient

    client = ToolClient(target, timeout_s=24 * 3600,
                        **(client_options(args) if args is not None else {}))
    try:
        client.wait_ready(timeout_s=10)
    except grpc.FutureTimeoutError:
        client.close()
        raise ConnectionError(f"cannot reach a perfbox service at {target}") from None
    return client


# -- rendering -------------------------------------------------------------------------------


def print_json(message: Any) -> None:
    console.print_json(json_format.MessageToJson(message, preserving_proto_field_name=True,
                                                 indent=None))


def _kernel_table(kernels: Any) -> Table:
    table = Table(title="kernels", title_justify="left")
    for column in ("kernel", "arch", "regs", "spill st/ld B", "stack B", "smem B", "warps"):
        table.add_column(column, justify="left" if column == "kernel" else "right")
    for k in kernels:
        table.add_row((k.demangled or k.name).split("(")[0], k.arch, str(k.registers),
                      f"{k.spill_store_bytes}/{k.spill_load_bytes}", str(k.stack_frame_bytes),
                      str(k.shared_bytes), str(k.num_warps or ""))
    return table


def _short(kernel: Any) -> str:
    name = kernel.demangled or kernel.name
    return name.split("(")[0] + f" [{kernel.arch}]"


def _mix_table(kernels: Any) -> Table:
    """Classes as rows, kernels as columns: stays readable in 80 columns."""
    table = Table(title="instruction mix", title_justify="left")
    table.add_column("class")
    for k in kernels:
        table.add_column(_short(k), justify="right")
    for cls in ("total", "global_memory", "shared_memory", "local_memory", "constant_memory",
                "tensor_core", "fp32", "fp16", "fp64", "integer", "conversion", "control", "sync",
                "move", "other"):
        values = [getattr(k.mix, cls) for k in kernels]
        if cls == "total" or any(values):
            table.add_row(cls.replace("_", " "), *[str(v) for v in values])
    return table


def _diagnostics_table(diagnostics: Any) -> Table:
    table = Table(title="diagnostics", title_justify="left")
    for column in ("where", "severity", "message"):
        table.add_column(column)
    for d in diagnostics:
        where = d.file + (f":{d.line}" if d.line else "") + (f":{d.column}" if d.column else "")
        table.add_row(where, d.severity, d.message)
    return table


def _profile_table(kernels: Any) -> Table:
    table = Table(title="profile (Nsight Compute)", title_justify="left")
    for column in ("kernel", "us", "bound", "SM %", "mem %", "DRAM %", "L2 hit %",
                   "occupancy %", "regs", "top stall"):
        table.add_column(column, justify="left" if column in ("kernel", "bound", "top stall")
                         else "right")
    for k in kernels:
        stall = max(k.warp_stalls.items(), key=lambda kv: kv[1], default=("", 0.0))[0]
        table.add_row(k.name[:48], f"{k.duration_us:.1f}", k.bound,
                      f"{k.sm_throughput_pct:.0f}", f"{k.memory_throughput_pct:.0f}",
                      f"{k.dram_throughput_pct:.0f}", f"{k.l2_hit_rate_pct:.0f}",
                      f"{k.achieved_occupancy_pct:.0f}/{k.theoretical_occupancy_pct:.0f}",
                      str(k.registers_per_thread), stall.replace("_", " "))
    return table


def print_result(result: pb.ToolResult) -> None:
    style = _STATUS_STYLE.get(result.status, "bold red")
    cached = " (cache hit)" if result.cache_hit else ""
    console.print(f"[{style}]{pb.Status.Name(result.status)}[/] {result.tool}{cached} — "
                  f"{result.timings.total_ms} ms total, {result.timings.run_ms} ms in sandbox, "
                  f"{result.timings.queue_ms} ms queued")
    if result.error and result.status != pb.OK:
        console.print(f"[red]{result.error}[/]")
    compile_report = result.compile if result.HasField("compile") else (
        result.disasm.compile if result.HasField("disasm") else None)
    if compile_report is not None and compile_report.kernels:
        console.print(_kernel_table(compile_report.kernels))
    if compile_report is not None and compile_report.diagnostics:
        console.print(_diagnostics_table(compile_report.diagnostics))
    if result.HasField("check") and result.check.outputs:
        table = Table(title=f"check on {result.check.device}", title_justify="left")
        for column in ("set", "out", "shape", "dtype", "max abs err", "max rel err", "bad %",
                       "ok"):
            table.add_column(column)
        for o in result.check.outputs[-10:]:
            table.add_row(str(o.input_set), str(o.output_index), "x".join(map(str, o.shape)),
                          o.dtype, f"{o.max_abs_error:.3g}", f"{o.max_rel_error:.3g}",
                          f"{100 * o.mismatch_fraction:.1f}", "yes" if o.passed else o.problem)
        console.print(table)
    for report in (result.check, result.bench):
        for flag in report.flags:
            console.print(f"[yellow]flag[/] {flag.category} (line {flag.line}): {flag.evidence}",
                          markup=True, highlight=False)
    for warning in result.check.warnings:
        console.print(f"[yellow]warning[/] {warning}", markup=True, highlight=False)
    if result.HasField("bench") and result.bench.submission.num_samples:
        table = Table(title=f"bench on {result.bench.device} ({result.bench.clock} clock)",
                      title_justify="left")
        for column in ("side", "median us", "mean us", "min us", "IQR us", "rel err",
                       "samples", "calls/sample"):
            table.add_column(column, justify="left" if column == "side" else "right")
        for side in ("submission", "reference"):
            t = getattr(result.bench, side)
            table.add_row(side, f"{t.median_us:.2f}", f"{t.mean_us:.2f}", f"{t.min_us:.2f}",
                          f"{t.iqr_us:.2f}", f"{100 * t.rel_error:.2f}%", str(t.num_samples),
                          str(t.calls_per_sample))
        console.print(table)
        bench = result.bench
        if bench.speedup_ci_high:
            console.print(f"speedup {bench.speedup:.3f} (95% interval {bench.speedup_ci_low:.3f}-"
                          f"{bench.speedup_ci_high:.3f}, {bench.num_rounds} paired rounds, "
                          f"{bench.verified_outputs} timed outputs verified)", highlight=False)
        if bench.measurement_flags:
            console.print(f"[yellow]measurement flags[/] {', '.join(bench.measurement_flags)}",
                          markup=True, highlight=False)
    if result.HasField("profile") and result.profile.kernels:
        console.print(_profile_table(result.profile.kernels))
    if result.HasField("sanitize"):
        for run in result.sanitize.runs:
            for e in run.errors[:10]:
                where = f"{e.file}:{e.line}" if e.file else ""
                console.print(f"[red]{run.tool}[/] {e.kind} {e.kernel} {where} "
                              f"thread {e.thread} block {e.block}", markup=True)
    if result.HasField("disasm") and result.disasm.kernels:
        console.print(_mix_table(result.disasm.kernels))
        for k in result.disasm.kernels:
            if k.sass:
                console.rule(f"SASS {k.demangled or k.name} [{k.arch}]")
                console.print(k.sass, markup=False)
            if k.ptx:
                console.rule(f"PTX {k.demangled or k.name} [{k.arch}]")
                console.print(k.ptx, markup=False)
    console.print(result.summary, markup=False)
    if result.status != pb.OK and result.stderr.strip():
        console.rule("stderr")
        console.print(result.stderr, markup=False)


def run_with_progress(client: Any, request: pb.ToolRequest) -> pb.ToolResult:
    """RunStream with a live status line: queued -> running -> done."""
    result: pb.ToolResult | None = None
    with err_console.status(f"{request.tool}: submitting...") as status:
        for event in client.run_stream(request):
            kind = event.WhichOneof("event")
            if kind == "queued":
                status.update(f"{request.tool}: queued ({event.queued.position} ahead)")
            elif kind == "started":
                status.update(f"{request.tool}: running on {event.started.worker}")
            elif kind == "result":
                result = event.result
    if result is None:
        raise ConnectionError("the service closed the stream without a result")
    return result


# -- commands --------------------------------------------------------------------------------


def _limits_from(args: argparse.Namespace) -> pb.Limits:
    return pb.Limits(
        wall_time_ms=int((args.wall_time_s or 0) * 1000),
        memory_bytes=int((args.memory_mb or 0) * 1024 * 1024),
    )


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} takes NAME=VALUE, got {value!r}")
        out[name] = rest
    return out


def _launch_spec(path: str) -> dict[str, Any]:
    """A launch spec file (JSON or YAML) for a bare CUDA kernel."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{path}: no such launch spec file")
    try:
        spec = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not JSON or YAML: {e}") from e
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a launch spec is a mapping (kernel, grid, block, args, "
                         "outputs)")
    return spec


def build_submit_request(args: argparse.Namespace) -> pb.ToolRequest:
    from perfbox.client import make_request

    files: dict[str, str] = {}
    paths = list(args.files) + ([args.reference] if args.reference else [])
    if args.tool in ("check", "bench") and not args.reference:
        raise ValueError(f"--tool {args.tool} needs --reference REF.py (Model, get_inputs, "
                         "get_init_inputs)")
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"{path}: no such file")
        if p.name in files:
            raise ValueError(f"two files are named {p.name}; rename one")
        files[p.name] = p.read_text()
    language = args.language or ("kernelbench" if args.tool in _KERNELBENCH_TOOLS
                                 or args.reference else None)
    check: dict[str, Any] = {}
    launch = _launch_spec(args.launch) if args.launch else None
    if launch is not None and args.tool not in _KERNELBENCH_TOOLS:
        raise ValueError("--launch goes with --tool check or bench")
    if args.tool == "bench":
        check = {"reference_file": Path(args.reference).name,
                 "submission_file": Path(args.files[0]).name, "device": args.device or "",
                 "time_budget_s": args.time_budget_s or 0.0}
    if args.tool in ("profile", "sanitize"):
        check = {"reference_file": Path(args.reference).name if args.reference else "",
                 "submission_file": Path(args.files[0]).name if args.reference else "",
                 "args": args.program_arg or []}
        if args.tool == "profile":
            check.update(sections=args.section or [], kernel_filter=args.kernel_filter or "",
                         max_kernels=args.max_kernels or 0, nsys=args.nsys)
        else:
            check.update(checks=args.check or [], max_errors=args.max_errors or 0)
    if args.tool == "check":
        check = {"reference_file": Path(args.reference).name,
                 "submission_file": Path(args.files[0]).name,
                 "num_input_sets": args.input_sets or 0,
                 "tolerances": {k: float(v) for k, v in
                                _pairs(args.tolerance, "--tolerance").items()},
                 "device": args.device or ""}
    if args.tool in _KERNELBENCH_TOOLS:
        check.update(hack_policy=args.hack_policy or "",
                     require_custom_kernel=args.require_custom_kernel)
        if args.problem_inputs_only:
            check["input_distributions"] = ["problem"]
        if args.tool == "bench":
            check.update(threads=args.threads or 0,
                         max_plausible_speedup=args.max_plausible_speedup or 0.0)
    if launch is not None:
        check["launch"] = launch
    return make_request(
        args.tool, files, language=language, request_id=args.request_id or "", **check,
        archs=args.arch or [], limits=_limits_from(args), no_cache=args.no_cache,
        kernel=args.kernel or "", signature=_pairs(args.signature, "--signature"),
        constants=_pairs(args.constant, "--constant"), num_warps=args.num_warps or 0,
        num_stages=args.num_stages or 0, defines=args.define or [], line_info=args.line_info,
        include_artifacts=args.artifacts, include_sass=args.sass, include_ptx=args.ptx,
    )


def _preload_for(request: pb.ToolRequest) -> tuple[str, ...]:
    return {pb.LANGUAGE_TRITON: ("triton",), pb.LANGUAGE_KERNELBENCH: ("torch",)}.get(
        request.language, ())


def cmd_submit(args: argparse.Namespace) -> int:
    request = build_submit_request(args)
    with service_target(args, _preload_for(request)) as target:
        with _client(target, args) as client:
            result = client.run(request) if args.json else run_with_progress(client, request)
    if args.json:
        print_json(result)
    else:
        print_result(result)
    return ExitCode.OK if result.status == pb.OK else ExitCode.KERNEL_FAILURE


def cmd_tools(args: argparse.Namespace) -> int:
    with service_target(args, ()) as target, _client(target, args) as client:
        response = client.list_tools()
    if args.json:  # the OpenAI function schemas, as chat templates and RL frameworks take them
        print(json.dumps([json.loads(t.function_schema) for t in response.tools], indent=2))
        return ExitCode.OK
    table = Table(title="perfbox tools", title_justify="left")
    for column in ("tool", "languages", "GPU", "cached", "available", "description"):
        table.add_column(column)
    for t in response.tools:
        langs = ", ".join(pb.Language.Name(x).removeprefix("LANGUAGE_").lower() for x in t.languages)
        available = "yes" if t.available else f"no: {t.unavailable_reason}"
        table.add_row(t.name, langs, "needs" if t.needs_gpu else "-",
                      "yes" if t.cacheable else "no", available, t.description)
    console.print(table)
    return ExitCode.OK


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
            _client(target, args) as client:
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
        with _client(args.server, args) as client:
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


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: a tool service, the bundled kernels through it, and the rollout
    worker replaying a kernel-agent trajectory against it."""
    from perfbox.client import make_request, read_files
    from perfbox.samples import SOFTMAX_PY, VECTOR_ADD_CU

    requests = [
        make_request("compile", read_files([VECTOR_ADD_CU]), request_id="demo-cuda-compile",
                     archs=args.arch or ["sm_90"]),
        make_request("disasm", read_files([VECTOR_ADD_CU]), request_id="demo-cuda-disasm",
                     archs=args.arch or ["sm_90"]),
        make_request("compile", read_files([SOFTMAX_PY]), request_id="demo-triton-compile",
                     archs=args.arch or ["sm_90"]),
        make_request("disasm", read_files([SOFTMAX_PY]), request_id="demo-triton-disasm",
                     archs=args.arch or ["sm_90"]),
    ]
    worst = ExitCode.OK
    # nice 10: the tool jobs yield the CPU to the rollout worker's engine on a CPU-only node
    with service_target(args, ("triton",), nice=10) as target, _client(target, args) as client:
        console.print(f"perfbox service at {target} ({'remote' if args.server else 'embedded'})")
        for request in requests:
            console.rule(request.request_id)
            result = client.run(request) if args.json else run_with_progress(client, request)
            print_json(result) if args.json else print_result(result)
            if result.status != pb.OK:
                worst = ExitCode.KERNEL_FAILURE
        if not args.no_rollout:
            _demo_rollout(target, args)
    return worst


def _demo_rollout(target: str, args: argparse.Namespace) -> None:
    """The rollout worker beside the service: one kernel-agent trajectory in each mode."""
    from perfbox.rollout_cli import _engine_check, run_rollout

    try:
        _engine_check()
    except ValueError as e:
        err_console.print(f"[yellow]rollout worker skipped:[/] {e}")
        return
    console.rule("rollout worker: a kernel-agent trajectory, each mode")
    run_rollout(target, ["resubmit", "resident", "resident+speculate"], 1, None, True,
                os.cpu_count() or 1, None, None)


# -- argument parsing ------------------------------------------------------------------------


def _add_backend_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--backend", default="bwrap", choices=("bwrap", "docker", "process"),
                   help=f"isolation {what} (default: bwrap)")
    p.add_argument("--allow-unsafe-process-backend", action="store_true",
                   help="permit --backend process (no isolation; development only)")


def _add_service_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", metavar="HOST:PORT",
                   help="a running perfbox service; without it an embedded one is started")
    add_client_auth_flags(p)
    _add_backend_flags(p, "of the embedded service")
    p.add_argument("--json", action="store_true",
                   help="print the response message as JSON (field names as in the .proto)")


def add_client_auth_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", help="bearer token for the service (default: $PERFBOX_TOKEN)")
    p.add_argument("--tls-ca", metavar="PEM", help="TLS to the service, verified with this CA")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", metavar="PEM", help="client certificate's key (mutual TLS)")


def build_parser() -> argparse.ArgumentParser:
    from perfbox.sandbox.docker_backend import DockerSettings

    parser = argparse.ArgumentParser(
        prog="perfbox",
        description="Compile, disassemble, check and benchmark GPU kernels (profile and "
                    "sanitize are next) in isolated sandboxes, from a shell or through the gRPC "
                    "service.",
        epilog="Exit codes: 0 OK, 1 the kernel failed the tool, 2 usage error or rejected "
               "request, 3 service unreachable, 4 internal error.",
    )
    parser.add_argument("--log-level", default="WARNING",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="default: WARNING")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    _add_backend_flags(serve, "backend")
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

    submit = sub.add_parser("submit", help="run a tool on kernel files",
                            description="Run a tool on kernel source files and print the result.")
    submit.add_argument("files", nargs="+", metavar="FILE", help="source files (.cu, .cuh, .py)")
    submit.add_argument("--tool", required=True, choices=TOOL_NAMES)
    submit.add_argument("--language", choices=("cuda", "triton", "kernelbench"),
                        help="default: from the file suffixes")
    submit.add_argument("--arch", action="append", metavar="SM",
                        help="target arch, repeatable (default sm_90)")
    submit.add_argument("--kernel", help="Triton: the @triton.jit function to compile")
    submit.add_argument("--constant", action="append", metavar="NAME=VALUE",
                        help="Triton: constexpr value, repeatable")
    submit.add_argument("--signature", action="append", metavar="NAME=TYPE",
                        help="Triton: argument type such as *fp16 or i64, repeatable")
    submit.add_argument("--num-warps", type=int, help="Triton: warps per program (default 4)")
    submit.add_argument("--num-stages", type=int, help="Triton: pipeline stages (default 3)")
    submit.add_argument("--define", action="append", metavar="NAME[=VALUE]",
                        help="CUDA: preprocessor definition, repeatable")
    submit.add_argument("--line-info", action="store_true", help="CUDA: compile with -lineinfo")
    submit.add_argument("--artifacts", action="store_true",
                        help="include PTX/TTIR/TTGIR texts in the report")
    submit.add_argument("--sass", action="store_true", help="disasm: include SASS text")
    submit.add_argument("--ptx", action="store_true", help="disasm: include PTX text")
    submit.add_argument("--reference", metavar="REF.py",
                        help="check: the reference (Model, get_inputs, get_init_inputs); "
                             "FILE is then the submission with ModelNew")
    submit.add_argument("--launch", metavar="SPEC.json",
                        help="check/bench: FILE is a bare CUDA kernel launched as this spec "
                             "says (kernel, grid, block, args, outputs; GPU only)")
    submit.add_argument("--input-sets", type=int, help="check: random input sets (default 5)")
    submit.add_argument("--tolerance", action="append", metavar="DTYPE=TOL",
                        help="check: tolerance per dtype, e.g. float16=2e-2 (repeatable)")
    submit.add_argument("--device", choices=("cpu", "cuda"),
                        help="check: where to run (default: a GPU when present)")
    submit.add_argument("--time-budget-s", type=float,
                        help="bench: seconds of sampling at most (default 5)")
    submit.add_argument("--threads", type=int,
                        help="bench (CPU): CPUs and threads for each side (default 1)")
    submit.add_argument("--max-plausible-speedup", type=float,
                        help="bench: a speedup above this is IMPLAUSIBLE (default 1000)")
    submit.add_argument("--hack-policy", choices=("flag", "reject"),
                        help="check/bench: what a static flag does (default: flag)")
    submit.add_argument("--require-custom-kernel", action="store_true",
                        help="check/bench: flag a ModelNew that only calls PyTorch")
    submit.add_argument("--problem-inputs-only", action="store_true",
                        help="check/bench: no sign-varied, scaled inputs beside get_inputs'")
    submit.add_argument("--section", action="append", metavar="NAME",
                        help="profile: ncu section, repeatable (default: SpeedOfLight, memory, "
                             "occupancy, launch, warp state, compute, roofline)")
    submit.add_argument("--kernel-filter", metavar="REGEX", help="profile: kernels to profile")
    submit.add_argument("--max-kernels", type=int, help="profile: launches profiled (default 20)")
    submit.add_argument("--nsys", action="store_true",
                        help="profile: add an Nsight Systems summary where nsys works")
    submit.add_argument("--check", action="append", choices=("memcheck", "racecheck",
                                                            "initcheck", "synccheck"),
                        help="sanitize: compute-sanitizer tool, repeatable (default memcheck)")
    submit.add_argument("--max-errors", type=int, help="sanitize: errors kept per check (20)")
    submit.add_argument("--program-arg", action="append", metavar="ARG",
                        help="profile/sanitize of a CUDA program: argument, repeatable")
    submit.add_argument("--wall-time-s", type=float, help="job wall-time limit")
    submit.add_argument("--memory-mb", type=float, help="job memory limit")
    submit.add_argument("--no-cache", action="store_true", help="do not answer from the cache")
    submit.add_argument("--request-id", help="id echoed in the result")
    _add_service_flags(submit)
    submit.set_defaults(func=cmd_submit)

    tools = sub.add_parser("tools", help="list the tools and whether they run here",
                           description="List the tools; with --json, print their OpenAI "
                                       "function-calling schemas (a JSON list).")
    _add_service_flags(tools)
    tools.set_defaults(func=cmd_tools)

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
    _add_service_flags(mcp)
    mcp.set_defaults(func=cmd_mcp)

    info = sub.add_parser("device-info", help="GPUs, driver and toolchain of a node")
    info.add_argument("--server", metavar="HOST:PORT", help="ask a service (default: this machine)")
    info.add_argument("--json", action="store_true", help="print the response as JSON")
    info.set_defaults(func=cmd_device_info)

    demo = sub.add_parser("demo", help="start the service and run the bundled sample kernels",
                          description="Start a tool service and compile + disassemble the "
                                      "bundled CUDA and Triton sample kernels through it.")
    demo.add_argument("--arch", action="append", metavar="SM", help="target arch (sm_90)")
    demo.add_argument("--no-rollout", action="store_true",
                      help="skip the rollout worker part (tool service only)")
    _add_service_flags(demo)
    demo.set_defaults(func=cmd_demo)

    from perfbox.rollout_cli import add_commands

    add_commands(sub, _add_service_flags)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from perfbox.sandbox import logs

    logs.setup(args.log_level, getattr(args, "log_format", "text"))
    try:
        return int(args.func(args))
    except ValueError as e:
        err_console.print(f"[red]error:[/] {e}", soft_wrap=True)
        return ExitCode.USAGE
    except ConnectionError as e:
        err_console.print(f"[red]error:[/] {e}", soft_wrap=True)
        return ExitCode.CONNECTION
    except grpc.RpcError as e:
        code = e.code()
        err_console.print(f"[red]error ({code.name}):[/] {e.details()}", soft_wrap=True)
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
                    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED):
            return ExitCode.USAGE
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return ExitCode.CONNECTION
        return ExitCode.INTERNAL
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as e:  # configuration errors (bwrap missing...) read better than a trace
        from perfbox.sandbox.bwrap import BwrapUnavailable
        from perfbox.sandbox.config import ConfigError

        if isinstance(e, (BwrapUnavailable, ConfigError)):
            err_console.print(f"[red]error:[/] {e}", soft_wrap=True)
            return ExitCode.USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
