"""Load: many concurrent clients, many small tool calls, against a real `perfbox serve`.

64 clients (8 processes x 8 threads, each thread its own channel) make 10,000 small calls in
all: compiles of 32 small CUDA kernels, so after the first of each the result cache answers
(the service's own path: gRPC, validation, cache, response) — plus, with --uncached N, N calls
that really compile. Every call carries a unique request_id; the run fails if any result is
lost, duplicated or not OK. Records p50/p99 latency and throughput in JSON.

    python benchmarks/bench_load.py                       # 64 clients x 10,000 calls
    python benchmarks/bench_load.py --clients 8 --calls 1000 --out /tmp/load.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

KERNEL = "__global__ void k{n}(float* x) {{ x[threadIdx.x] += {n}.0f; }}\n"
DISTINCT = 32


def _request(call: int, uncached: bool) -> Any:
    from perfbox.client import make_request

    n = call % DISTINCT
    source = KERNEL.format(n=n) + (f"// call {call}\n" if uncached else "")
    return make_request("compile", {f"k{n}.cu": source}, archs=["sm_90"],
                        request_id=f"call-{call}")


def _client_process(target: str, calls: list[tuple[int, bool]], threads: int,
                    out: Any) -> None:
    """One process: `threads` clients, each with its own channel, sharing the calls."""
    from perfbox.client import ToolClient

    results: list[tuple[str, int, float]] = []
    lock = threading.Lock()

    def client(mine: list[tuple[int, bool]]) -> None:
        with ToolClient(target, timeout_s=600) as c:
            for call, uncached in mine:
                started = time.perf_counter()
                result = c.run(_request(call, uncached))
                elapsed = time.perf_counter() - started
                with lock:
                    results.append((result.request_id, int(result.status), elapsed))

    workers = [threading.Thread(target=client, args=(calls[i::threads],))
               for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(results)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(clients: int, calls: int, uncached: int, workers: int) -> dict[str, Any]:
    port = _free_port()
    cache = tempfile.mkdtemp(prefix="perfbox-load-cache-")
    server = subprocess.Popen([sys.executable, "-m", "perfbox.cli", "serve", "--address",
                               f"127.0.0.1:{port}", "--workers", str(workers), "--preload", "",
                               "--cache-dir", cache, "--max-queue", str(calls + 1)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    target = f"127.0.0.1:{port}"
    try:
        from perfbox.client import ToolClient

        with ToolClient(target, timeout_s=600) as c:
            c.wait_ready(timeout_s=60)
            for n in range(DISTINCT):  # warm the cache: the load measures the service path
                c.run(_request(n, False))
        plan = [(i, i < uncached) for i in range(calls)]
        processes = max(1, min(8, clients))
        threads = max(1, clients // processes)
        queue: Any = mp.Queue()
        started = time.perf_counter()
        procs = [mp.Process(target=_client_process,
                            args=(target, plan[p::processes], threads, queue))
                 for p in range(processes)]
        for p in procs:
            p.start()
        results = [r for _ in procs for r in queue.get()]
        for p in procs:
            p.join()
        wall = time.perf_counter() - started
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    ids = Counter(r[0] for r in results)
    latencies = sorted(r[2] for r in results)
    statuses = Counter(r[1] for r in results)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "clients": processes * threads, "calls": calls, "uncached_calls": uncached,
        "server_workers": workers, "wall_s": wall, "calls_per_s": len(results) / wall,
        "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": latencies[-1] * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "results": len(results), "lost": calls - len(ids),
        "duplicated": sum(v - 1 for v in ids.values() if v > 1),
        "not_ok": sum(v for k, v in statuses.items() if k != 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--uncached", type=int, default=0,
                        help="calls that really compile (unique source), among --calls")
    parser.add_argument("--workers", type=int, default=2, help="the server's worker slots")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "load.json"))
    args = parser.parse_args()
    result = run(args.clients, args.calls, args.uncached, args.workers)
    result.update({
        "command": "python benchmarks/bench_load.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {"cpus": os.cpu_count(), "host": platform.node(),
                    "python": platform.python_version()},
    })
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["lost"] == 0 and result["duplicated"] == 0 and result["not_ok"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
