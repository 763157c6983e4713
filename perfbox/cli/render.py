"""A ToolResult on the terminal: a status line, the tool's report as tables (one renderer per
report kind, in `RENDERERS`), the model-facing summary, and stderr when the tool failed.

A tool without a renderer still prints its status and summary; adding one is a function here
and a line in `RENDERERS`.
"""

from __future__ import annotations

from typing import Any, Callable

from rich.table import Table

from perfbox.api.v1 import tools_pb2 as pb
from perfbox.cli.common import console, err_console
from perfbox.tool_messages import REPORT_ONEOF

_STATUS_STYLE = {pb.OK: "bold green", pb.CANCELLED: "yellow"}


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


def _flags(report: pb.CheckReport | pb.BenchReport) -> None:
    for flag in report.flags:
        console.print(f"[yellow]flag[/] {flag.category} (line {flag.line}): {flag.evidence}",
                      markup=True, highlight=False)


def render_compile(report: pb.CompileReport) -> None:
    if report.kernels:
        console.print(_kernel_table(report.kernels))
    if report.diagnostics:
        console.print(_diagnostics_table(report.diagnostics))


def render_disasm(report: pb.DisasmReport) -> None:
    render_compile(report.compile)
    if not report.kernels:
        return
    console.print(_mix_table(report.kernels))
    for k in report.kernels:
        if k.sass:
            console.rule(f"SASS {k.demangled or k.name} [{k.arch}]")
            console.print(k.sass, markup=False)
        if k.ptx:
            console.rule(f"PTX {k.demangled or k.name} [{k.arch}]")
            console.print(k.ptx, markup=False)


def render_check(report: pb.CheckReport) -> None:
    if report.outputs:
        table = Table(title=f"check on {report.device}", title_justify="left")
        for column in ("set", "out", "shape", "dtype", "max abs err", "max rel err", "bad %",
                       "ok"):
            table.add_column(column)
        for o in report.outputs[-10:]:
            table.add_row(str(o.input_set), str(o.output_index), "x".join(map(str, o.shape)),
                          o.dtype, f"{o.max_abs_error:.3g}", f"{o.max_rel_error:.3g}",
                          f"{100 * o.mismatch_fraction:.1f}", "yes" if o.passed else o.problem)
        console.print(table)
    _flags(report)
    for warning in report.warnings:
        console.print(f"[yellow]warning[/] {warning}", markup=True, highlight=False)


def render_bench(bench: pb.BenchReport) -> None:
    _flags(bench)
    if not bench.submission.num_samples:
        return
    table = Table(title=f"bench on {bench.device} ({bench.clock} clock)", title_justify="left")
    for column in ("side", "median us", "mean us", "min us", "IQR us", "rel err", "samples",
                   "calls/sample"):
        table.add_column(column, justify="left" if column == "side" else "right")
    for side in ("submission", "reference"):
        t = getattr(bench, side)
        table.add_row(side, f"{t.median_us:.2f}", f"{t.mean_us:.2f}", f"{t.min_us:.2f}",
                      f"{t.iqr_us:.2f}", f"{100 * t.rel_error:.2f}%", str(t.num_samples),
                      str(t.calls_per_sample))
    console.print(table)
    if bench.speedup_ci_high:
        console.print(f"speedup {bench.speedup:.3f} (95% interval {bench.speedup_ci_low:.3f}-"
                      f"{bench.speedup_ci_high:.3f}, {bench.num_rounds} paired rounds, "
                      f"{bench.verified_outputs} timed outputs verified)", highlight=False)
    if bench.measurement_flags:
        console.print(f"[yellow]measurement flags[/] {', '.join(bench.measurement_flags)}",
                      markup=True, highlight=False)


def render_profile(report: pb.ProfileReport) -> None:
    if report.kernels:
        console.print(_profile_table(report.kernels))


def render_sanitize(report: pb.SanitizeReport) -> None:
    for run in report.runs:
        for e in run.errors[:10]:
            where = f"{e.file}:{e.line}" if e.file else ""
            console.print(f"[red]{run.tool}[/] {e.kind} {e.kernel} {where} "
                          f"thread {e.thread} block {e.block}", markup=True)


# ToolResult.report's field name -> how to draw that report
RENDERERS: dict[str, Callable[[Any], None]] = {
    "compile": render_compile, "disasm": render_disasm, "check": render_check,
    "bench": render_bench, "profile": render_profile, "sanitize": render_sanitize,
}


def print_result(result: pb.ToolResult) -> None:
    style = _STATUS_STYLE.get(result.status, "bold red")
    cached = " (cache hit)" if result.cache_hit else ""
    console.print(f"[{style}]{pb.Status.Name(result.status)}[/] {result.tool}{cached} — "
                  f"{result.timings.total_ms} ms total, {result.timings.run_ms} ms in sandbox, "
                  f"{result.timings.queue_ms} ms queued")
    if result.error and result.status != pb.OK:
        console.print(f"[red]{result.error}[/]")
    kind = result.WhichOneof(REPORT_ONEOF)
    if kind in RENDERERS:
        RENDERERS[kind](getattr(result, kind))
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


__all__ = ["RENDERERS", "print_result", "run_with_progress"]
