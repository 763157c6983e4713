"""Per-call latency and throughput of tool calls, five ways side by side in one run.

Workloads:
  cuda-compile    the bundled vector_add.cu through nvcc/ptxas (sm_90)
  triton-compile  a small Triton kernel whose module imports torch (a torch-importing tool run)

Variants:
  (a) inproc      perfbox.tools.run() in this process (imports already done)
  (b) subprocess  a fresh `python` per call that imports what the tool needs, then runs it
                  (what most harnesses do)
  (c) grpc-cold   through gRPC + bubblewrap, a fresh worker started for every call
  (d) grpc-warm   through gRPC + bubblewrap, the warm worker pool (result cache bypassed)
  (e) cache-hit   through gRPC, the same call answered from the result cache

Each variant runs at 1, 8 and 32 concurrent clients; every client makes several calls in a row,
so the figures are sustained rates, not first calls. Each call compiles a kernel with a unique
name, so no variant can reuse an earlier compile (except (e), which is the point of (e)).

    python benchmarks/bench_tool_latency.py [--quick] [--out benchmarks/results/tool_latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perfbox.api.v1 import tools_pb2 as pb  # noqa: E402
from perfbox.client import ToolClient, make_request  # noqa: E402
from perfbox.samples import VECTOR_ADD_CU  # noqa: E402

TRITON_SOURCE = '''
import torch  # the module needs torch, as KernelBench-style submissions do
import triton
import triton.language as tl


@triton.jit
def KERNEL(x_ptr, y_ptr, n, BLOCK: tl.constexpr = 256):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask) * 2.0, mask=mask)
'''

ONE_CALL = '''
import sys, pathlib
tool, language, workdir, name = sys.argv[1:5]
if language == "triton":
    import torch, triton  # what a fresh harness process pays before any work
from perfbox import tools
from perfbox.tools.types import ToolRequest
out = tools.run(ToolRequest(tool, language, [name], pathlib.Path(workdir), {}))
assert out.status.name == "OK", out.summary
'''


@dataclass
class Figures:
    """Latency distribution and throughput of one (workload, variant, concurrency) cell."""

    workload: str
    variant: str
    concurrency: int
    calls: int
    wall_s: float
    throughput_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    first_call_ms: float  # the very first call of the cell, to compare with the sustained p50
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)


_counter = iter(range(10**9))
_counter_lock = threading.Lock()
# Kernel names are unique across runs too: Triton's on-disk cache must never serve a compile.
RUN_ID = os.urandom(4).hex()


def unique_source(workload: str) -> tuple[str, str, str]:
    """(file name, language, source) of a call whose kernel name was never used before."""
    with _counter_lock:
        n = next(_counter)
    if workload == "cuda-compile":
        return "k.cu", "cuda", VECTOR_ADD_CU.read_text().replace("vector_add",
                                                                 f"vector_add_{RUN_ID}_{n}")
    return "k.py", "triton", TRITON_SOURCE.replace("KERNEL", f"double_{RUN_ID}_{n}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure(workload: str, variant: str, concurrency: int, calls_per_client: int,
            call: Callable[[], None]) -> Figures:
    latencies: list[float] = []
    order: list[float] = []
    errors = 0
    lock = threading.Lock()

    def client() -> None:
        nonlocal errors
        for _ in range(calls_per_client):
            start = time.perf_counter()
            try:
                call()
            except Exception as e:  # recorded, never hidden
                print(f"  error in {variant}: {e}", file=sys.stderr)
                with lock:
                    errors += 1
                continue
            elapsed = (time.perf_counter() - start) * 1000
            with lock:
                latencies.append(elapsed)
                order.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - started
    ok = latencies or [float("nan")]
    figures = Figures(
        workload=workload, variant=variant, concurrency=concurrency, calls=len(latencies),
        wall_s=round(wall, 3), throughput_per_s=round(len(latencies) / wall, 3),
        p50_ms=round(percentile(ok, 0.5), 1), p90_ms=round(percentile(ok, 0.9), 1),
        p99_ms=round(percentile(ok, 0.99), 1), mean_ms=round(statistics.fmean(ok), 1),
        min_ms=round(min(ok), 1), max_ms=round(max(ok), 1),
        first_call_ms=round(order[0], 1) if order else float("nan"), errors=errors,
        latencies_ms=[round(x, 1) for x in latencies],
    )
    print(f"  {workload:15s} {variant:11s} c={concurrency:<3d} n={figures.calls:<4d} "
          f"p50={figures.p50_ms:8.1f} ms p99={figures.p99_ms:8.1f} ms "
          f"{figures.throughput_per_s:6.2f} calls/s errors={errors}", flush=True)
    return figures


# -- the five ways to make a call -------------------------------------------------------------


def inproc_call(workload: str) -> Callable[[], None]:
    from perfbox import tools
    from perfbox.tools.types import ToolRequest

    def call() -> None:
        name, language, source = unique_source(workload)
        workdir = Path(tempfile.mkdtemp(prefix="bench-inproc-"))
        try:
            (workdir / name).write_text(source)
            out = tools.run(ToolRequest("compile", language, [name], workdir, {}))
            assert out.status.name == "OK", out.summary
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    return call


def subprocess_call(workload: str) -> Callable[[], None]:
    def call() -> None:
        name, language, source = unique_source(workload)
        workdir = Path(tempfile.mkdtemp(prefix="bench-subproc-"))
        try:
            (workdir / name).write_text(source)
            subprocess.run([sys.executable, "-c", ONE_CALL, "compile", language, str(workdir),
                            name], check=True, capture_output=True,
                           env={**os.environ, "TRITON_CACHE_DIR": str(workdir / ".triton")})
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    return call


def grpc_call(client: ToolClient, workload: str, fresh: bool) -> Callable[[], None]:
    fixed_name, fixed_language, fixed_source = unique_source(workload)

    def call() -> None:
        if fresh:
            name, language, source = unique_source(workload)
        else:
            name, language, source = fixed_name, fixed_language, fixed_source
        request = make_request("compile", {name: source}, language=language, no_cache=fresh)
        result = client.run(request)
        if result.status != pb.OK:
            raise RuntimeError(f"{pb.Status.Name(result.status)}: {result.summary}")
        if not fresh and not result.cache_hit:
            raise RuntimeError("expected a cache hit")

    return call


def with_server(warm: bool, workers: int, cache_dir: Path | None
                ) -> tuple[object, ToolClient]:
    from perfbox.sandbox.config import ServerConfig
    from perfbox.sandbox.server import create_server

    server, port = create_server(ServerConfig(address="127.0.0.1:0", workers=workers, warm=warm,
                                              cache_dir=cache_dir, max_queue=100_000))
    return server, ToolClient(f"127.0.0.1:{port}", timeout_s=3600)


def machine() -> dict[str, object]:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from perfbox.tools.toolkit import identity

    return {"cpus": os.cpu_count(), "cpu_model": cpu, "python": platform.python_version(),
            "kernel": platform.release(), "toolkit": identity(), "host": platform.node()}


def ratios(figures: list[Figures]) -> list[dict[str, object]]:
    """p50 of each variant against (a) in-process and (b) fresh subprocess, per cell."""
    out = []
    by = {(f.workload, f.variant, f.concurrency): f for f in figures}
    for f in figures:
        inproc = by.get((f.workload, "inproc", f.concurrency))
        sub = by.get((f.workload, "subprocess", f.concurrency))
        out.append({
            "workload": f.workload, "variant": f.variant, "concurrency": f.concurrency,
            "p50_vs_inproc": round(f.p50_ms / inproc.p50_ms, 2) if inproc else None,
            "subprocess_p50_over_this": round(sub.p50_ms / f.p50_ms, 1) if sub else None,
            "throughput_vs_subprocess": round(f.throughput_per_s / sub.throughput_per_s, 1)
            if sub else None,
        })
    return out


def markdown(result: dict[str, object]) -> str:
    lines = [f"# Tool-call latency — {result['date']}", "",
             f"Command: `{result['command']}`", "",
             f"Machine: {json.dumps(result['machine'])}", "",
             "| workload | variant | clients | calls | p50 ms | p99 ms | first ms | calls/s "
             "| p50 / in-process | subprocess p50 / this |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    ratio = {(r["workload"], r["variant"], r["concurrency"]): r for r in result["ratios"]}
    for f in result["figures"]:
        r = ratio[(f["workload"], f["variant"], f["concurrency"])]
        lines.append(f"| {f['workload']} | {f['variant']} | {f['concurrency']} | {f['calls']} | "
                     f"{f['p50_ms']} | {f['p99_ms']} | {f['first_call_ms']} | "
                     f"{f['throughput_per_s']} | {r['p50_vs_inproc']} | "
                     f"{r['subprocess_p50_over_this']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, concurrency 1 and 8")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="service worker slots (default: one per CPU)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" /
                                             "tool_latency.json"))
    args = parser.parse_args()
    levels = [1, 8] if args.quick else [1, 8, 32]
    calls_per_client = {1: 3 if args.quick else 8, 8: 2 if args.quick else 4, 32: 2}
    expensive_calls = {1: 2 if args.quick else 4, 8: 1 if args.quick else 2, 32: 1}
    workloads = ["cuda-compile", "triton-compile"]
    figures: list[Figures] = []

    # Step 1: warm this process as a warm worker is warmed (imports + a first compile), with a
    # Triton cache directory of its own, as every sandboxed job has.
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-triton-cache-")
    print("warming up in-process...", flush=True)
    inproc_call("triton-compile")()
    inproc_call("cuda-compile")()

    # Step 2: in-process and fresh-subprocess baselines.
    for workload in workloads:
        for c in levels:
            figures.append(measure(workload, "inproc", c, calls_per_client[c],
                                   inproc_call(workload)))
            figures.append(measure(workload, "subprocess", c, expensive_calls[c],
                                   subprocess_call(workload)))

    # Step 3: the service, cold (a worker per call) then warm, then cache hits.
    cache_dir = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    for variant, warm in (("grpc-cold", False), ("grpc-warm", True)):
        server, client = with_server(warm, args.workers, cache_dir)
        try:
            for workload in workloads:
                grpc_call(client, workload, fresh=True)()  # one untimed call per server
                for c in levels:
                    per_client = expensive_calls[c] if not warm else calls_per_client[c]
                    figures.append(measure(workload, variant, c, per_client,
                                           grpc_call(client, workload, fresh=True)))
                if warm:
                    hit = grpc_call(client, workload, fresh=False)
                    try:
                        hit()  # the first call fills the cache
                    except RuntimeError:
                        pass
                    for c in levels:
                        figures.append(measure(workload, "cache-hit", c, calls_per_client[c] * 4,
                                               hit))
        finally:
            client.close()
            server.stop(grace_s=5)  # type: ignore[attr-defined]
    shutil.rmtree(cache_dir, ignore_errors=True)

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["python", "benchmarks/bench_tool_latency.py", *sys.argv[1:]]),
        "machine": machine(),
        "service_workers": args.workers,
        "figures": [asdict(f) for f in figures],
        "ratios": ratios(figures),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
